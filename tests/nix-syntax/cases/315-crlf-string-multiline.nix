"a
b"
