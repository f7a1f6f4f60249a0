!true || !(false)
