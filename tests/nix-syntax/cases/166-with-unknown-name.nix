with { }; foo
