let 1a = 1; in 2
