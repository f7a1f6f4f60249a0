(rec { a = 1; }).a + a
