/** doc comment **/ 1
