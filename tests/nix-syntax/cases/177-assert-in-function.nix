{ x }:
assert x != null;
x
