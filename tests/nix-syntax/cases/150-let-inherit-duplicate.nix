let a = 1; in
let
  inherit a;
  a = 2;
in a
