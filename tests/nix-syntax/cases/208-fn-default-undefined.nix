{ a ? nope }: a
