git+ssh://git@host:22/p.git?ref=main#comment-after
