/*
 * a long
 * block comment
 */
{
  a = 1;
  b = ;
}
