let k = "a"; in { "${k}b" = 1; }
