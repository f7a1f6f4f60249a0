./a.b-c_d+e
