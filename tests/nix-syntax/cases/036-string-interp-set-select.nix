let s = { a = "v"; }; in "${s.a}-${s.b or "d"}"
