let
  k = "a";
  ${k} = 1;
in 2
