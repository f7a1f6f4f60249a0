let x = { }; in
x.
