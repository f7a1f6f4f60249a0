[ 1 "a" ./p { } [ ] null true 2.5 ]
