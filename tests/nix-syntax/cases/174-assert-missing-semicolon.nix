assert true
1
