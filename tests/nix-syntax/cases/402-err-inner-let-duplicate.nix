let a = 1; in
let
  a = 2;
  a = 3;
in a
