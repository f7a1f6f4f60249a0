"a" + "b" + toString 1
