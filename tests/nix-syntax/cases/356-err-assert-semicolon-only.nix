assert; 1
