{ a } @ b: a
