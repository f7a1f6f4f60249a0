x:
  y:
    z
