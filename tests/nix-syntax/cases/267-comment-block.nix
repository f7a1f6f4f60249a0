/* block
   comment */
1
