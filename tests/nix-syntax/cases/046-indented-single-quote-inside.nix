''
  it's fine, 'quoted'
''
