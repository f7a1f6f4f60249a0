let e = { a = 1; }; k = "a"; in { inherit (e) ${k}; }
