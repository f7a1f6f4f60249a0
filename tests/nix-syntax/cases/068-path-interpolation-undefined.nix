./a/${nope}
