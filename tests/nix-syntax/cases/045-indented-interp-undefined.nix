''
  ok
  ${undefinedThing}
''
