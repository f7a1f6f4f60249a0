/* SPDX-License-Identifier: MIT */
/* The Nix lexer and lossless syntax tree. Every byte of the source belongs to exactly one
 * token (white space and comments included), tokens hang off nodes in source order, so
 * concatenating the tokens of the root reproduces the input byte for byte. The parser
 * covers the whole Nix 2.x language and reports the first error with line and column.
 * Pure module: no I/O, no libuv. */
#ifndef NIX_TREE_H
#define NIX_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ws_err;

enum nix_tok {
	NIX_TOK_WS,          /* spaces, tabs, \r, \n */
	NIX_TOK_COMMENT,     /* # ... (without the newline) or a block comment */
	NIX_TOK_IDENT,
	NIX_TOK_INT,
	NIX_TOK_FLOAT,
	NIX_TOK_PATH,        /* a path literal, or one literal piece of an interpolated path */
	NIX_TOK_SPATH,       /* <nixpkgs> */
	NIX_TOK_URI,
	NIX_TOK_STR_OPEN,    /* " */
	NIX_TOK_STR_CLOSE,   /* " */
	NIX_TOK_IND_OPEN,    /* '' */
	NIX_TOK_IND_CLOSE,   /* '' */
	NIX_TOK_STR_CONTENT, /* literal text inside a string, escapes kept as written */
	NIX_TOK_INTERP_OPEN, /* ${ */
	NIX_TOK_INTERP_CLOSE,/* } closing an interpolation */
	/* keywords */
	NIX_TOK_IF, NIX_TOK_THEN, NIX_TOK_ELSE, NIX_TOK_ASSERT, NIX_TOK_WITH, NIX_TOK_LET,
	NIX_TOK_IN, NIX_TOK_REC, NIX_TOK_INHERIT, NIX_TOK_OR_KW,
	/* punctuation */
	NIX_TOK_LBRACE, NIX_TOK_RBRACE, NIX_TOK_LBRACK, NIX_TOK_RBRACK, NIX_TOK_LPAREN,
	NIX_TOK_RPAREN, NIX_TOK_ASSIGN, NIX_TOK_SEMI, NIX_TOK_COLON, NIX_TOK_COMMA, NIX_TOK_AT,
	NIX_TOK_ELLIPSIS, NIX_TOK_DOT, NIX_TOK_QUESTION,
	/* operators */
	NIX_TOK_CONCAT, NIX_TOK_UPDATE, NIX_TOK_PLUS, NIX_TOK_MINUS, NIX_TOK_STAR, NIX_TOK_SLASH,
	NIX_TOK_NOT, NIX_TOK_AND, NIX_TOK_OR, NIX_TOK_IMPL, NIX_TOK_EQ, NIX_TOK_NEQ, NIX_TOK_LT,
	NIX_TOK_LE, NIX_TOK_GT, NIX_TOK_GE,
	NIX_TOK_COUNT
};

enum nix_kind {
	NIX_NODE_ROOT,        /* the file: leading trivia, one expression, trailing trivia */
	NIX_NODE_IDENT,       /* a variable reference, or a plain attribute name in a path */
	NIX_NODE_LITERAL,     /* int, float, uri, <spath>, or a path without interpolation */
	NIX_NODE_PATH,        /* a path with interpolation: PATH tokens and INTERP children */
	NIX_NODE_STRING,      /* "..." or ''...'': STR_CONTENT tokens and INTERP children */
	NIX_NODE_INTERP,      /* ${ expr } */
	NIX_NODE_LIST,        /* [ elems ] : children are the elements */
	NIX_NODE_PAREN,       /* ( expr ) */
	NIX_NODE_ATTRSET,     /* [rec] { bindings } : children BINDING / INHERIT */
	NIX_NODE_LEGACY_LET,  /* let { bindings } */
	NIX_NODE_BINDING,     /* attrpath = value ; : children ATTRPATH, value */
	NIX_NODE_ATTRPATH,    /* a.b."c".${d} : children IDENT / STRING / INTERP */
	NIX_NODE_INHERIT,     /* inherit [(expr)] a "b" ; : optional INHERIT_FROM, then IDENT/STRING */
	NIX_NODE_INHERIT_FROM,/* the ( expr ) of inherit (expr) a b; child: the expr */
	NIX_NODE_LET_IN,      /* let bindings in body : children BINDING/INHERIT..., body */
	NIX_NODE_WITH,        /* with env ; body : children env, body */
	NIX_NODE_ASSERT,      /* assert cond ; body : children cond, body */
	NIX_NODE_IF,          /* if c then a else b : children c, a, b */
	NIX_NODE_LAMBDA,      /* param : body : children (IDENT | PATTERN), body */
	NIX_NODE_PATTERN,     /* [x @] { a, b ? d, ... } [@ x] : children PAT_ENTRY..., and
			       * an IDENT child for the @-bound name (before or after) */
	NIX_NODE_PAT_ENTRY,   /* a [? default] : children IDENT [, default expr] */
	NIX_NODE_APPLY,       /* f x : children f, x */
	NIX_NODE_SELECT,      /* e.a.b [or d] : children e, ATTRPATH [, default] */
	NIX_NODE_HAS_ATTR,    /* e ? a.b : children e, ATTRPATH */
	NIX_NODE_BINOP,       /* a OP b : children a, b; the operator is the node's op token */
	NIX_NODE_UNARY,       /* -a, !a : child a; the operator is the node's op token */
	NIX_NODE_COUNT
};

struct nix_node;
struct nix_ltok;

/* A node is the tokens [tok_start, tok_end) of the tree's token store, in which its child
 * nodes are sub-ranges. Leading and trailing trivia of a node belong to its parent. */
struct nix_node {
	struct nix_node *parent;  /* NULL for the root */
	const struct nix_ltok *toks; /* private: the tree's token store */
	uint32_t start, end;      /* byte range [start, end) of this node's tokens, trivia
				   * inside it included */
	uint32_t tok_start, tok_end; /* private: its tokens (see nix_node_next_elem()) */
	uint32_t n_children;      /* child nodes (nix_node_n_children()) */
	uint8_t kind;             /* enum nix_kind */
	uint8_t op;               /* enum nix_tok: BINOP/UNARY: the operator, else COUNT */
	uint8_t flags;            /* private to nix_tree.c */
	struct nix_node *children[]; /* in source order (nix_node_child()) */
};

struct nix_tree {
	const char *src;          /* borrowed from nix_tree_parse()'s caller unless owned */
	size_t len;
	struct nix_node *root;
	/* private bookkeeping follows in the implementation (the token store among it) */
};

/* One element of a node: a token directly in it, or a child node. */
struct nix_elem {
	bool is_node;
	union {
		struct nix_node *node;
		struct {
			enum nix_tok kind;
			uint32_t off, len; /* bytes of the source */
		} tok;
	};
};

/* Where a walk over a node's elements is; zero-initialise it to start. */
struct nix_elem_iter {
	uint32_t tok;   /* the next token, counted from the node's first */
	uint32_t child; /* the next child node */
};

/* The elements of @n (a node of @t) in source order: fills *ret_elem with the next one and
 * returns true, or returns false after the last. Tokens and children together cover
 * [n->start, n->end) without gap or overlap. */
bool nix_node_next_elem(const struct nix_tree *t, const struct nix_node *n,
			struct nix_elem_iter *it, struct nix_elem *ret_elem);

/* Parses @len bytes of @src (kept borrowed: it must outlive the tree). @filename is used in
 * error messages only. On a syntax error fills @err with WS_E_CONFIG_UNPARSABLE, the file,
 * line and column (1-based, of the offending token, where Nix reports it) and a message in
 * the spirit of Nix's ("syntax error, unexpected '=', expecting ';'"), and returns -EINVAL.
 * Also rejects what nix-instantiate --parse rejects beyond the grammar: a leading byte-order
 * mark, undefined variables (outside every `with`), attributes defined twice, dynamic
 * attributes in `let` or `inherit`. Returns 0 and the tree (free with nix_tree_free()). */
int nix_tree_parse(const char *src, size_t len, const char *filename, struct nix_tree **ret_tree,
		   struct ws_err *err);
void nix_tree_free(struct nix_tree *t);

/* Concatenates every token of the tree, walking the nodes in order (malloc'd,
 * NUL-terminated; *ret_len without NUL). Equals the input for every tree nix_tree_parse()
 * returned. */
int nix_tree_print(const struct nix_tree *t, char **ret_buf, size_t *ret_len);

/* The one expression of the file (the ROOT's only child node). */
struct nix_node *nix_tree_expr(const struct nix_tree *t);

/* Child nodes only (tokens skipped); nix_node_child() is NULL past the last. */
size_t nix_node_n_children(const struct nix_node *n);
struct nix_node *nix_node_child(const struct nix_node *n, size_t i);
/* The first token of @kind directly in @n; returns its byte offset, or -1. */
int64_t nix_node_token(const struct nix_node *n, enum nix_tok kind);
/* True when an ATTRSET has the `rec` keyword. */
bool nix_node_is_rec(const struct nix_node *n);

/* The static name of an attribute-path element (IDENT, or a STRING without interpolation,
 * its escapes decoded): malloc'd copy in *ret_name. -EINVAL for a dynamic one. */
int nix_attr_name(const struct nix_tree *t, const struct nix_node *attr, char **ret_name);
/* The decoded value of a STRING node without interpolation. -EINVAL otherwise. */
int nix_string_value(const struct nix_tree *t, const struct nix_node *str, char **ret_value);

/* Source text of a node (malloc'd copy of src[start, end)). */
char *nix_node_text(const struct nix_tree *t, const struct nix_node *n);
/* 1-based line and column (in bytes) of byte offset @off. */
void nix_tree_linecol(const struct nix_tree *t, size_t off, int *ret_line, int *ret_col);

const char *nix_tok_name(enum nix_tok k);
const char *nix_kind_name(enum nix_kind k);

/* For `workspaced --check` and tests: parses FILE's bytes; returns 0 or -EINVAL with @err
 * set as nix_tree_parse() does. */
int nix_check_buffer(const char *src, size_t len, const char *filename, struct ws_err *err);

/* Checks what every tree nix_tree_parse() returns must satisfy (for the tests and the
 * fuzzer): the root has no parent, spans the whole input and holds one expression; in
 * every node, tokens and children follow each other without gap from its start to its
 * end, each token of a known kind and non-empty (but string content), each child with
 * this node as parent and in nix_node_child() order, and no child past the last. Returns
 * 0, or -EPROTO with *ret_off (may be NULL) the byte offset where the first violation is. */
int nix_tree_check(const struct nix_tree *t, size_t *ret_off);

#endif
