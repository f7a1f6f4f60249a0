rec { a = b; b = 1; c = { d = a; }; }
