# a comment
1 # another
