{
  a = 1;
  b = [ 1 2 ];
  c = "x";
  d = 4;
  /* the rest
  e = 5;
}
