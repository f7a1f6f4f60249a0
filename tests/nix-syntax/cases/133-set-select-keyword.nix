{ a = 1; }.then
