(builtins.head [ { a = 1; } ]).a
