let f = x: x; in with { or = 1; }; f or
