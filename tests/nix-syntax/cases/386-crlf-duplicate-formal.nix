{ a
, b
, a
}: a
