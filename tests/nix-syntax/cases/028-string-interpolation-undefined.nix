{
  a = 1;
  b = "x ${nope} y";
}
