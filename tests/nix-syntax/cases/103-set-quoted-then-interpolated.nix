let b = "x"; in { "a".${b} = 1; }
