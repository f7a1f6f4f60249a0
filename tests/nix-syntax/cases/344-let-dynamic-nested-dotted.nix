let
  k = "x";
  a.${k} = 1;
in a
