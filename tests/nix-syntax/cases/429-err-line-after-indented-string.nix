{
  a = ''
    one
    two
    three
  '';
  b = 2
}
