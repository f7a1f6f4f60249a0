# line
# line
2
