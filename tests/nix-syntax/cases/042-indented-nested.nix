let a = "x"; in ''
  outer ${''
    inner ${a} ${"s${a}"}
  ''} end
''
