if true then else 2
