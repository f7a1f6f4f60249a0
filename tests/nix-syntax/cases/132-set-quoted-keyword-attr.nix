{ "if" = 1; "then" = 2; }.if or 0
