<a/b>
