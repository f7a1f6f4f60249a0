assert cond; 1
