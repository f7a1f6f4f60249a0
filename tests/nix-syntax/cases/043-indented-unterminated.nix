{
  a = ''
    text
  ;
}
