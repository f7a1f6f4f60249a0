assert 1 == 1; assert true -> true; "ok"
