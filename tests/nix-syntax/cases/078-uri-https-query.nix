https://example.org/a/b?c=d&e=f%20g
