"${toString (1 + 2)} and ${builtins.toJSON [ 1 ]}"
