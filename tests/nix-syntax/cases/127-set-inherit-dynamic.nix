let k = "a"; a = 1; in {
  inherit ${k};
}
