with { } x
