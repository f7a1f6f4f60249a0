{
  a = rec { b = 1; };
  a.c = 2;
}
