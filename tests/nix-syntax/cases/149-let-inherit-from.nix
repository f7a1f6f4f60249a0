let x = { a = 1; }; in let inherit (x) a; in a
