let
  x = "b";
  y = "c";
in
  ./a/${x}/d/${y}.nix
