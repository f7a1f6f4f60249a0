{ a ? 1 }@s: s.a or a
