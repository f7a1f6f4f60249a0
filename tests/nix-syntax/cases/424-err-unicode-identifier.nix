let café = 1; in café
