let
  a.b = 1;
  a.b = 2;
in a
