[
  /etc/
]
