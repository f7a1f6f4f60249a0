{ a = let b = 1; in b; }
