{ a; b }: a
