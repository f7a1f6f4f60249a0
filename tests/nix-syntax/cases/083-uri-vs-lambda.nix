[ (x:x) (x: x) ]
