let x = "v"; in ''
  line ${x}
  other
''
