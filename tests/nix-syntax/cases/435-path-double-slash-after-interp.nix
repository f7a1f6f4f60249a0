x: ./a/${x}/b//c
