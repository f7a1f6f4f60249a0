[
  x: x
]
