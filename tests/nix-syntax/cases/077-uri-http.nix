http://x
