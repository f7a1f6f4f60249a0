args@{ a ? args.b, b ? 1 }: a
