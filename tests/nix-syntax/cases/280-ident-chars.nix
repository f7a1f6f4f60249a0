let a-b' = 1; a_'' = 2; _x = 3; in a-b' + a_'' + _x
