with; 1
