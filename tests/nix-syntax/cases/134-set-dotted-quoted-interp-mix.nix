let b = "y"; in { a."b".${b}.c = 1; }
