mailto:a@b.c
