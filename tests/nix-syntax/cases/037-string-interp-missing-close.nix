let
  x = 1;
in
  "abc ${x"
