x: x:
