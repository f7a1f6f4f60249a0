{ a ? { b = 1; }.b or 2 }: a
