[ http://a.b/c https://d.e/f ]
