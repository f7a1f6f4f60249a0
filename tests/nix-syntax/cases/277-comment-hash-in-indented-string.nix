''
  # kept
''
