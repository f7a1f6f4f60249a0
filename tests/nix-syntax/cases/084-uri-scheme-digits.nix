a1+b-c.d:rest
