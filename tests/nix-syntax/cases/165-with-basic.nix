with builtins; head [ 1 ]
