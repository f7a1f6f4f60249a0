let v = 3; in
if v == 1 then "one"
else if v == 2 then "two"
else "many"
