{
  a = else;
}
