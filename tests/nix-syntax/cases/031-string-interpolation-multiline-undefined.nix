"
  abc
  ${missing}
"
