x: { a ? y }: a
