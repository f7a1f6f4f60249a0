ftp://h/~u/*.txt!$,'=
