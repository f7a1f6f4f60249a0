with nothing; 1
