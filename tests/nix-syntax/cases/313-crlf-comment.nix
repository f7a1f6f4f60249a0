# comment
/* block
   comment */
1
