{
  a = "abc;
  b = 2;
}
