rec { a = 1; } // rec {
  inherit a;
}
