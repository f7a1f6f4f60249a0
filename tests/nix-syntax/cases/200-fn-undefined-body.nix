{ a }:
  b
