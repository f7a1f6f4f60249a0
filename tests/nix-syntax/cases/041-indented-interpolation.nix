let name = "w"; in ''
  hello ${name}
  ${toString 3}
''
