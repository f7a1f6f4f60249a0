let
  x = "b";
in
  "a${"c${x}d${"${x}"}"}e"
