{
  a = 1;
  /* started here
  b = 2;
}
