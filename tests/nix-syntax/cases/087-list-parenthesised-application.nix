[ (builtins.head [ 1 ]) ]
