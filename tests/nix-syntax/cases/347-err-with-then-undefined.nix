let
  x = with { }; y;
in
  z
