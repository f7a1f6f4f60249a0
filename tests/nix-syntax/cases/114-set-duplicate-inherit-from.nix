let
  x = { a = 1; };
  y = { a = 2; };
in {
  inherit (x) a;
  inherit (y) a;
}
