/* SPDX-License-Identifier: MIT */
/* The Nix lexer, private to nix_tree.c: turns a buffer into a flat array of tokens that
 * covers every byte, following the start conditions of Nix 2.8's flex lexer (strings,
 * indented strings, interpolated paths). Errors travel as an NIX_LTOK_ERROR token at the
 * point where Nix's lexer would throw, so the parser reports them in source order. The
 * caller provides the array, which becomes the tree's token store: nodes refer to their
 * tokens by index. */
#ifndef NIX_LEX_H
#define NIX_LEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nix_tree.h"

/* Token kinds beyond enum nix_tok, used only between the lexer and the parser. */
enum {
	NIX_LTOK_EOF = NIX_TOK_COUNT, /* zero length, at the end */
	NIX_LTOK_BAD,                 /* one byte Nix has no token for ("invalid token") */
	NIX_LTOK_ERROR,               /* zero length; the lexer stopped, see nix_lex.msg */
};

/* flags */
#define NIX_LF_INPATH 0x1 /* a PATH piece or ${ lexed inside an interpolated path */

/* Tokens are contiguous: a token's bytes run from its off to the next token's off. */
struct nix_ltok {
	uint32_t off;
	uint8_t kind;  /* enum nix_tok or NIX_LTOK_* */
	uint8_t flags; /* NIX_LF_* */
};

struct nix_lex {
	/* Borrowed; n tokens ending with EOF or ERROR, then one more entry (not counted in n)
	 * with the same offset as the last, so that every token has a successor to measure
	 * its length by (nix_ltok_len()). */
	struct nix_ltok *toks;
	size_t n;
	/* for NIX_LTOK_ERROR: the message and the byte offset Nix reports */
	const char *msg;
	uint32_t err_off;
	/* The input ended inside a path: Nix then reports the end of the input where the
	 * token before the path's last piece starts (its lexer unstashes a location). */
	bool eof_in_path;
};

static inline uint32_t nix_ltok_len(const struct nix_ltok *t)
{
	return t[1].off - t[0].off;
}

/* The most tokens @len bytes can make, with the entry after the last: a token takes at
 * least one byte, except the final EOF or ERROR. */
static inline size_t nix_lex_max_toks(size_t len)
{
	return len + 2;
}

/* Lexes @len bytes of @src (len < 4 GiB) into @toks, which has room for
 * nix_lex_max_toks(len) tokens (and stays the caller's). Returns 0, or -ENOMEM / -EFBIG.
 * A lexical error is not a failure here: the array then ends with NIX_LTOK_ERROR. */
int nix_lex_run(const char *src, size_t len, struct nix_ltok *toks, struct nix_lex *lx);

#endif
