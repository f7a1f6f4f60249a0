b@{ a, b }: a
