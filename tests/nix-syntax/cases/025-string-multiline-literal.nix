"first
  second
third"
