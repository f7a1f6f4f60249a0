/* SPDX-License-Identifier: MIT */
/* The lossless Nix syntax tree: a recursive-descent parser over nix_lex's tokens that
 * follows the grammar and operator table of Nix 2.8's bison parser, builds nodes in an
 * arena (one allocation per chunk, never per byte), and then applies the checks Nix makes
 * while parsing: duplicate attributes (with its merging of nested sets), dynamic attributes
 * in let and inherit, duplicate formals, undefined variables. It does not evaluate.
 * The lexer's token array is the tree's token store: a node records the range of tokens
 * it spans and points to its child nodes, so tokens are never copied. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "nix_lex.h"
#include "nix_tree.h"
#include "ws_proto.h"

#define MAX_DEPTH 2000 /* nesting of expressions; deeper input is refused, not a crash */

/* ---- memory ----------------------------------------------------------------------------- */

/* Nodes come from an arena: the first chunk is part of the tree's own allocation (see
 * tree_alloc()), further ones are malloc'd only for unusually dense input. */
struct arena_chunk {
	struct arena_chunk *next;
	max_align_t data[];
};

struct arena {
	char *next;                /* the free part of the current chunk */
	size_t left;
	struct arena_chunk *extra; /* chunks beyond the first, owned */
	size_t next_cap;           /* the size of the next one */
};

#define ARENA_ALIGN sizeof(void *) /* nodes hold pointers; names are bytes */
#define ARENA_PER_BYTE 10 /* arena bytes per input byte planned (typical Nix needs ~7) */
#define HUGE_PAGE (2 * 1024 * 1024)

static void *arena_grow(struct arena *a, size_t n)
{
	struct arena_chunk *c;
	size_t cap = a->next_cap > n ? a->next_cap : n;

	c = malloc(sizeof(*c) + cap);
	if (!c)
		return NULL;
	c->next = a->extra;
	a->extra = c;
	a->next_cap = cap < 8 * 1024 * 1024 ? cap * 2 : cap;
	a->next = (char *)c->data + n;
	a->left = cap - n;
	return c->data;
}

static inline void *arena_alloc(struct arena *a, size_t n)
{
	void *p;

	n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
	if (a->left < n)
		return arena_grow(a, n);
	p = a->next;
	a->next += n;
	a->left -= n;
	return p;
}

static void arena_free(struct arena *a)
{
	struct arena_chunk *c = a->extra, *next;

	for (; c; c = next) {
		next = c->next;
		free(c);
	}
	a->extra = NULL;
}

/* The tree as nix_tree_parse() hands it out: the public part first. One allocation holds
 * this struct, the token store and the arena's first chunk. */
struct tree_priv {
	struct nix_tree pub;
	struct arena arena;
	struct nix_ltok *toks;   /* the token store: n_toks tokens, the last EOF */
	size_t n_toks;
	uint32_t *line_starts;   /* built on the first nix_tree_linecol(); owned */
	size_t n_lines;
};

static_assert(sizeof(struct tree_priv) % ARENA_ALIGN == 0 &&
		      sizeof(struct nix_ltok) % ARENA_ALIGN == 0,
	      "the token store and the arena in a tree's allocation stay aligned");

/* The allocation of a tree for @len bytes of input, sized up front: the token store has
 * room for the most tokens possible and the arena for ARENA_PER_BYTE bytes per byte, and
 * the pages the parse does not use are never touched. One block, reused by malloc from
 * one parse to the next, rather than a few that each come back as fresh pages. */
static struct tree_priv *tree_alloc(size_t len)
{
	size_t toks_at = sizeof(struct tree_priv);
	size_t arena_at = toks_at + nix_lex_max_toks(len) * sizeof(struct nix_ltok);
	size_t bytes = arena_at + len * ARENA_PER_BYTE + 1024;
	struct tree_priv *tp;

	tp = malloc(bytes);
	if (!tp)
		return NULL;
	if (bytes >= 2 * HUGE_PAGE) {
		/* big trees: fewer page faults with transparent huge pages, in the whole huge
		 * pages the block covers */
		uintptr_t from = ((uintptr_t)tp + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
		uintptr_t to = ((uintptr_t)tp + bytes) & ~(uintptr_t)(HUGE_PAGE - 1);

		if (to > from)
			(void)madvise((void *)from, to - from, MADV_HUGEPAGE);
	}
	*tp = (struct tree_priv){ 0 };
	tp->toks = (struct nix_ltok *)(void *)((char *)tp + toks_at);
	tp->arena.next = (char *)tp + arena_at;
	tp->arena.left = bytes - arena_at;
	tp->arena.next_cap = 64 * 1024 + len * 2;
	return tp;
}

static void tree_free(struct tree_priv *tp)
{
	arena_free(&tp->arena);
	free(tp->line_starts);
	free(tp);
}

/* node flags */
#define NF_REC 0x1     /* an ATTRSET with the `rec` keyword */
#define NF_LENIENT 0x2 /* Nix's merging moves this into another set's scope: skip the
			* undefined-variable check inside rather than guess */
#define NF_CHECK 0x4   /* something inside for check_scopes(): a variable or an inherit */

/* ---- semantic sets (duplicate attributes) ----------------------------------------------- */

struct sem_ent {
	const char *name;
	uint32_t nlen;
	uint32_t set;
	uint32_t pos;  /* byte offset Nix reports for this definition */
	int32_t sub;   /* the attribute set it holds, when it is one; -1 otherwise */
	uint32_t next; /* next entry of the same set, +1; 0 ends */
};

struct sem_set {
	uint32_t head, tail; /* first/last entry +1 */
	uint32_t count;
	struct nix_node *node; /* its ATTRSET node, NULL for one a dotted path made */
};

struct sem_slot {
	uint32_t hash, idx; /* idx: entry index + 1; 0 is empty */
};

#define SEM_SMALL 8 /* sets up to this size are searched by a walk, not the table */

struct sem {
	struct sem_ent *ents;
	size_t n_ents, cap_ents;
	struct sem_slot *slots; /* entries of the sets larger than SEM_SMALL */
	size_t n_slots, n_hashed;
	struct sem_set *sets;
	size_t n_sets, cap_sets;
};

/* A name being looked up or added: its hash is computed at most once. */
struct sem_key {
	const char *name;
	uint32_t len;
	bool hashed;
	uint32_t hash; /* of the name alone, when hashed */
};

/* ---- parser state --------------------------------------------------------------------- */

struct parser {
	const char *src;
	uint32_t len;
	const char *filename;
	const struct nix_ltok *toks;
	size_t n_toks;
	const struct nix_lex *lx;
	size_t pos;  /* the next significant token */
	size_t triv; /* the first token not yet placed in a node (trivia before pos) */
	struct nix_node **scratch; /* finished nodes still waiting for their parent */
	size_t n_scratch, cap_scratch;
	struct arena *arena;
	int depth;
	bool failed;
	struct ws_err *err;
	struct sem sem;
	/* the last attribute set parse_attrset() finished and its semantic set, for the
	 * binding whose value it is */
	const struct nix_node *last_set;
	int32_t last_set_sem;
	/* Nix's GLR parser reads `{ }` both as a set and as an empty pattern; when both
	 * readings fail on the next token, it reports the pattern's expectations */
	size_t glr_empty_set_next;
};

static inline bool is_trivia(int k)
{
	return k == NIX_TOK_WS || k == NIX_TOK_COMMENT;
}

static uint32_t hash_bytes(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

/* 1-based line and column of @off, counting bytes; \r\n and \n end lines as Nix's do. */
static void linecol(const char *src, size_t len, size_t off, int *ret_line, int *ret_col)
{
	int line = 1;
	size_t bol = 0;

	if (off > len)
		off = len;
	for (size_t i = 0; i < off; i++) {
		if (src[i] == '\n') {
			line++;
			bol = i + 1;
		} else if (src[i] == '\r' && !(i + 1 < len && src[i + 1] == '\n')) {
			line++;
			bol = i + 1;
		}
	}
	*ret_line = line;
	*ret_col = (int)(off - bol) + 1;
}

static WS_PRINTF(3, 4) void fail_at(struct parser *P, uint32_t off, const char *fmt, ...)
{
	char msg[sizeof(((struct ws_err *)0)->message)];
	int line, col;
	va_list ap;

	if (P->failed)
		return;
	P->failed = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	linecol(P->src, P->len, off, &line, &col);
	(void)ws_fail_at(P->err, -EINVAL, WS_E_CONFIG_UNPARSABLE, P->filename, line, col, "%s",
			 msg);
}

/* ---- tokens ---------------------------------------------------------------------------- */

static inline const struct nix_ltok *peek(const struct parser *P)
{
	return &P->toks[P->pos];
}

static inline int peek_kind(const struct parser *P)
{
	return P->toks[P->pos].kind;
}

/* The significant token after the next one. */
static int peek2_kind(const struct parser *P)
{
	size_t i = P->pos;

	if (P->toks[i].kind >= NIX_LTOK_EOF)
		return P->toks[i].kind;
	for (i++; is_trivia(P->toks[i].kind); i++)
		;
	return P->toks[i].kind;
}

/* The token store ends with EOF or ERROR, which is not trivia. */
static inline void skip_to_significant(struct parser *P)
{
	while (is_trivia(P->toks[P->pos].kind))
		P->pos++;
}

/* A checkpoint: where a node that starts at the next token begins, in the scratch and in
 * the token store. */
struct mark {
	size_t scratch;
	uint32_t tok;
};

/* Places pending trivia in the node being built: tokens before P->triv belong to the
 * nodes that are open now. */
static inline void flush_trivia(struct parser *P)
{
	P->triv = P->pos;
}

static inline struct mark mark(struct parser *P)
{
	flush_trivia(P);
	return (struct mark){ .scratch = P->n_scratch, .tok = (uint32_t)P->pos };
}

/* Consumes the next significant token into the node being built. */
static inline void bump(struct parser *P)
{
	flush_trivia(P);
	if (P->toks[P->pos].kind >= NIX_LTOK_EOF)
		return;
	P->pos++;
	P->triv = P->pos;
	skip_to_significant(P);
}

static int scratch_push(struct parser *P, struct nix_node *n)
{
	if (P->n_scratch == P->cap_scratch) {
		size_t ncap = P->cap_scratch ? P->cap_scratch * 2 : 256;
		struct nix_node **s = realloc(P->scratch, ncap * sizeof(*s));

		if (!s) {
			fail_at(P, 0, "out of memory");
			return -ENOMEM;
		}
		P->scratch = s;
		P->cap_scratch = ncap;
	}
	P->scratch[P->n_scratch++] = n;
	return 0;
}

/* Which child nodes of a node of @kind are expressions for the undefined-variable check
 * (others are names). */
static inline bool child_is_expr(int kind, size_t child_idx, const struct nix_node *c)
{
	switch (kind) {
	case NIX_NODE_LAMBDA:
		return child_idx > 0 || c->kind == NIX_NODE_PATTERN;
	case NIX_NODE_PATTERN:
		return c->kind == NIX_NODE_PAT_ENTRY;
	case NIX_NODE_PAT_ENTRY:
		return child_idx > 0;
	case NIX_NODE_ATTRPATH:
		return c->kind != NIX_NODE_IDENT;
	case NIX_NODE_INHERIT:
		return c->kind == NIX_NODE_INHERIT_FROM;
	case NIX_NODE_WITH:
		return child_idx == 0; /* anything may come from the with in the body */
	default:
		return true;
	}
}

/* Makes the tokens placed since @m, with the nodes finished since, a node of @kind. */
static struct nix_node *finish(struct parser *P, enum nix_kind kind, struct mark m)
{
	size_t n = P->n_scratch - m.scratch;
	struct nix_node *nd;
	uint8_t flags = 0;

	if (P->failed)
		return NULL;
	nd = arena_alloc(P->arena, sizeof(*nd) + n * sizeof(nd->children[0]));
	if (!nd) {
		fail_at(P, 0, "out of memory");
		return NULL;
	}
	nd->parent = NULL;
	nd->toks = P->toks;
	nd->tok_start = m.tok;
	nd->tok_end = (uint32_t)P->triv;
	nd->start = P->toks[m.tok].off;
	nd->end = P->toks[P->triv].off;
	nd->n_children = (uint32_t)n;
	nd->kind = (uint8_t)kind;
	nd->op = NIX_TOK_COUNT;
	for (size_t i = 0; i < n; i++) {
		struct nix_node *c = P->scratch[m.scratch + i];

		c->parent = nd;
		nd->children[i] = c;
		if ((c->kind == NIX_NODE_IDENT || c->kind == NIX_NODE_INHERIT ||
		     (c->flags & NF_CHECK)) &&
		    child_is_expr(kind, i, c))
			flags |= NF_CHECK;
	}
	nd->flags = flags;
	P->n_scratch = m.scratch;
	if (scratch_push(P, nd) < 0)
		return NULL;
	return nd;
}

/* Bison's names for the tokens, as they appear in Nix's messages. */
static const char *tok_msg_name(const struct parser *P, const struct nix_ltok *t)
{
	switch (t->kind) {
	case NIX_TOK_IDENT: return "ID";
	case NIX_TOK_INT: return "INT";
	case NIX_TOK_FLOAT: return "FLOAT";
	case NIX_TOK_PATH:
		return P->src[t->off] == '~' && !(t->flags & NIX_LF_INPATH) ? "HPATH" : "PATH";
	case NIX_TOK_SPATH: return "SPATH";
	case NIX_TOK_URI: return "URI";
	case NIX_TOK_STR_OPEN:
	case NIX_TOK_STR_CLOSE: return "'\"'";
	case NIX_TOK_IND_OPEN: return "IND_STRING_OPEN";
	case NIX_TOK_IND_CLOSE: return "IND_STRING_CLOSE";
	case NIX_TOK_STR_CONTENT: return "STR";
	case NIX_TOK_INTERP_OPEN: return "DOLLAR_CURLY";
	case NIX_TOK_INTERP_CLOSE: return "'}'";
	case NIX_TOK_IF: return "IF";
	case NIX_TOK_THEN: return "THEN";
	case NIX_TOK_ELSE: return "ELSE";
	case NIX_TOK_ASSERT: return "ASSERT";
	case NIX_TOK_WITH: return "WITH";
	case NIX_TOK_LET: return "LET";
	case NIX_TOK_IN: return "IN";
	case NIX_TOK_REC: return "REC";
	case NIX_TOK_INHERIT: return "INHERIT";
	case NIX_TOK_OR_KW: return "OR_KW";
	case NIX_TOK_LBRACE: return "'{'";
	case NIX_TOK_RBRACE: return "'}'";
	case NIX_TOK_LBRACK: return "'['";
	case NIX_TOK_RBRACK: return "']'";
	case NIX_TOK_LPAREN: return "'('";
	case NIX_TOK_RPAREN: return "')'";
	case NIX_TOK_ASSIGN: return "'='";
	case NIX_TOK_SEMI: return "';'";
	case NIX_TOK_COLON: return "':'";
	case NIX_TOK_COMMA: return "','";
	case NIX_TOK_AT: return "'@'";
	case NIX_TOK_ELLIPSIS: return "ELLIPSIS";
	case NIX_TOK_DOT: return "'.'";
	case NIX_TOK_QUESTION: return "'?'";
	case NIX_TOK_CONCAT: return "CONCAT";
	case NIX_TOK_UPDATE: return "UPDATE";
	case NIX_TOK_PLUS: return "'+'";
	case NIX_TOK_MINUS: return "'-'";
	case NIX_TOK_STAR: return "'*'";
	case NIX_TOK_SLASH: return "'/'";
	case NIX_TOK_NOT: return "'!'";
	case NIX_TOK_AND: return "AND";
	case NIX_TOK_OR: return "OR";
	case NIX_TOK_IMPL: return "IMPL";
	case NIX_TOK_EQ: return "EQ";
	case NIX_TOK_NEQ: return "NEQ";
	case NIX_TOK_LT: return "'<'";
	case NIX_TOK_LE: return "LEQ";
	case NIX_TOK_GT: return "'>'";
	case NIX_TOK_GE: return "GEQ";
	case NIX_LTOK_EOF: return "end of file";
	default: return "invalid token";
	}
}

/* Nix's lexer matches string text in several pieces where ours has one token; an error at
 * the end of the input is reported at the start of its last piece. */
static uint32_t content_last_piece(const struct parser *P, const struct nix_ltok *t, bool ind)
{
	const char *s = P->src;
	uint32_t i = t->off, end = t->off + nix_ltok_len(t), last = t->off;

	if (!ind) {
		/* the main rule takes everything but a dangling \, $ or $\ at the end */
		while (i < end) {
			if (s[i] == '\\') {
				if (i + 1 >= end)
					return i;
				i += 2;
			} else if (s[i] == '$') {
				if (i + 1 >= end || (s[i + 1] == '\\' && i + 2 >= end))
					return i;
				i += s[i + 1] == '\\' ? 3 : 2;
			} else {
				i++;
			}
		}
		return t->off;
	}
	while (i < end) {
		last = i;
		if (s[i] == '\'' && i + 1 < end && s[i + 1] == '\'') {
			i += (i + 2 < end && s[i + 2] == '\\') ? 4 : 3; /* ''\x, ''$ or ''' */
			continue;
		}
		if ((s[i] == '$' || s[i] == '\'') &&
		    (i + 1 >= end || s[i + 1] == '\'' || (s[i] == '\'' && s[i + 1] == '$'))) {
			i++; /* a lone $ or ' */
			continue;
		}
		/* ([^$']|\$[^{']|'[^'$])+ */
		while (i < end) {
			if (s[i] == '$' || s[i] == '\'') {
				if (i + 1 >= end || s[i + 1] == '\'' || (s[i] == '\'' && s[i + 1] == '$'))
					break;
				i += 2;
			} else {
				i++;
			}
		}
	}
	return last;
}

/* Whether string text token @i is inside an indented string. */
static bool in_ind_string(const struct parser *P, size_t i)
{
	int depth = 0;

	/* walk back to the opening quote of this string, skipping nested interpolations */
	while (i-- > 0) {
		int k = P->toks[i].kind;

		if (k == NIX_TOK_INTERP_CLOSE)
			depth++;
		else if (k == NIX_TOK_INTERP_OPEN && depth)
			depth--;
		else if (!depth && (k == NIX_TOK_IND_OPEN || k == NIX_TOK_STR_OPEN))
			return k == NIX_TOK_IND_OPEN;
	}
	return false;
}

/* Where Nix reports token @i: its start; the end of the input is reported on the last
 * token the lexer matched. */
static uint32_t tok_report_off(const struct parser *P, size_t i)
{
	const struct nix_ltok *t;

	if (P->toks[i].kind != NIX_LTOK_EOF)
		return P->toks[i].off;
	if (!i)
		return 0;
	if (P->lx->eof_in_path)
		return i >= 2 ? P->toks[i - 2].off : 0;
	t = &P->toks[i - 1];
	if (t->kind == NIX_TOK_STR_CONTENT)
		return content_last_piece(P, t, in_ind_string(P, i - 1));
	return t->off;
}

/* A syntax error on the next token. @expecting may be NULL. Always returns NULL. */
static struct nix_node *unexpected(struct parser *P, const char *expecting)
{
	const struct nix_ltok *t = peek(P);

	if (t->kind == NIX_LTOK_ERROR) {
		fail_at(P, P->lx->err_off, "%s", P->lx->msg);
		return NULL;
	}
	if (P->pos == P->glr_empty_set_next)
		expecting = "':' or '@'";
	if (expecting)
		fail_at(P, tok_report_off(P, P->pos), "syntax error, unexpected %s, expecting %s",
			tok_msg_name(P, t), expecting);
	else
		fail_at(P, tok_report_off(P, P->pos), "syntax error, unexpected %s",
			tok_msg_name(P, t));
	return NULL;
}

static bool expect(struct parser *P, int kind, const char *expecting)
{
	if (P->failed)
		return false;
	if (peek_kind(P) != kind) {
		(void)unexpected(P, expecting);
		return false;
	}
	bump(P);
	return !P->failed;
}

/* ---- semantic sets --------------------------------------------------------------------- */

static int32_t sem_new_set(struct parser *P)
{
	struct sem *S = &P->sem;

	if (S->n_sets == S->cap_sets) {
		size_t ncap = S->cap_sets ? S->cap_sets * 2 : 64;
		struct sem_set *sets = realloc(S->sets, ncap * sizeof(*sets));

		if (!sets) {
			fail_at(P, 0, "out of memory");
			return -1;
		}
		S->sets = sets;
		S->cap_sets = ncap;
	}
	S->sets[S->n_sets] = (struct sem_set){ 0 };
	return (int32_t)S->n_sets++;
}

static inline uint32_t sem_key_hash(struct sem_key *k)
{
	if (!k->hashed) {
		k->hash = hash_bytes(k->name, k->len);
		k->hashed = true;
	}
	return k->hash;
}

static inline uint32_t sem_hash(uint32_t set, uint32_t name_hash)
{
	return name_hash ^ (set * 0x9e3779b1u);
}

static struct sem_ent *sem_find(struct parser *P, uint32_t set, struct sem_key *key)
{
	struct sem *S = &P->sem;
	uint32_t h;

	/* most sets are small: a walk of their list beats a cache miss in the table */
	if (S->sets[set].count <= SEM_SMALL) {
		for (uint32_t k = S->sets[set].head; k; k = S->ents[k - 1].next) {
			struct sem_ent *e = &S->ents[k - 1];

			if (e->nlen == key->len && memcmp(e->name, key->name, key->len) == 0)
				return e;
		}
		return NULL;
	}
	h = sem_hash(set, sem_key_hash(key));
	for (size_t i = h & (S->n_slots - 1);; i = (i + 1) & (S->n_slots - 1)) {
		uint32_t k = S->slots[i].idx;
		struct sem_ent *e;

		if (!k)
			return NULL;
		if (S->slots[i].hash != h)
			continue;
		e = &S->ents[k - 1];
		if (e->set == set && e->nlen == key->len && memcmp(e->name, key->name, key->len) == 0)
			return e;
	}
}

static void sem_slot_put(struct sem_slot *slots, size_t n_slots, uint32_t hash, uint32_t idx)
{
	size_t i = hash & (n_slots - 1);

	while (slots[i].idx)
		i = (i + 1) & (n_slots - 1);
	slots[i] = (struct sem_slot){ .hash = hash, .idx = idx };
}

/* Puts entry @k (index), whose name hashes to @name_hash, in the table, growing it as
 * needed. */
static int sem_hash_ent(struct sem *S, uint32_t k, uint32_t name_hash)
{
	struct sem_ent *e = &S->ents[k];

	if ((S->n_hashed + 1) * 2 > S->n_slots) {
		size_t n = S->n_slots ? S->n_slots * 2 : 1024;
		struct sem_slot *slots = calloc(n, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (size_t i = 0; i < S->n_slots; i++)
			if (S->slots[i].idx)
				sem_slot_put(slots, n, S->slots[i].hash, S->slots[i].idx);
		free(S->slots);
		S->slots = slots;
		S->n_slots = n;
	}
	sem_slot_put(S->slots, S->n_slots, sem_hash(e->set, name_hash), k + 1);
	S->n_hashed++;
	return 0;
}

static int sem_add(struct parser *P, uint32_t set, struct sem_key *key, uint32_t pos,
		   int32_t sub)
{
	struct sem *S = &P->sem;
	struct sem_set *st = &S->sets[set];
	uint32_t k;

	if (S->n_ents == S->cap_ents) {
		/* start at about one entry per eight tokens (an attribute set's binding takes
		 * at least four), so that typical files never grow the array */
		size_t ncap = S->cap_ents ? S->cap_ents * 2 : 64 + P->n_toks / 8;
		struct sem_ent *ents = realloc(S->ents, ncap * sizeof(*ents));

		if (!ents)
			goto oom;
		S->ents = ents;
		S->cap_ents = ncap;
	}
	k = (uint32_t)S->n_ents++;
	S->ents[k] = (struct sem_ent){ .name = key->name, .nlen = key->len, .set = set,
				       .pos = pos, .sub = sub };
	if (st->tail)
		S->ents[st->tail - 1].next = k + 1;
	else
		st->head = k + 1;
	st->tail = k + 1;
	st->count++;
	if (st->count == SEM_SMALL + 1) {
		/* the set outgrew its list: every entry goes in the table */
		for (uint32_t i = st->head; i; i = S->ents[i - 1].next) {
			const struct sem_ent *e = &S->ents[i - 1];

			if (sem_hash_ent(S, i - 1, hash_bytes(e->name, e->nlen)) < 0)
				goto oom;
		}
	} else if (st->count > SEM_SMALL + 1 && sem_hash_ent(S, k, sem_key_hash(key)) < 0) {
		goto oom;
	}
	return 0;
oom:
	fail_at(P, 0, "out of memory");
	return -ENOMEM;
}

/* ---- static attribute names -------------------------------------------------------------- */

/* Decodes a "..." string's literal text, as Nix's unescapeStr: \n \r \t, \x -> x, and CR or
 * CR LF -> LF. @out has room for @n bytes. Returns the decoded length. */
static size_t unescape_str(const char *s, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '\\' && i + 1 < n) {
			c = s[++i];
			out[o++] = c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
		} else if (c == '\r') {
			out[o++] = '\n';
			if (i + 1 < n && s[i + 1] == '\n')
				i++;
		} else {
			out[o++] = c;
		}
	}
	return o;
}

/* Whether a STRING node is ''...'' (its first token is the opening quote). */
static bool is_ind_string(const char *src, const struct nix_node *str)
{
	return src[str->start] == '\'';
}

static int ind_string_value(const char *src, const struct nix_ltok *toks,
			    const struct nix_node *str, char **ret_value, size_t *ret_len);

/* The value of a STRING node without interpolation, malloc'd; -EINVAL when it has one.
 * @toks is the token store. */
static int string_value(const char *src, const struct nix_ltok *toks, const struct nix_node *str,
			char **ret_value, size_t *ret_len)
{
	size_t total = 0, o = 0;
	char *buf;

	if (str->kind != NIX_NODE_STRING || str->n_children)
		return -EINVAL;
	/* no children: the tokens are the quotes and the text between them */
	for (uint32_t i = str->tok_start; i < str->tok_end; i++)
		if (toks[i].kind == NIX_TOK_STR_CONTENT)
			total += nix_ltok_len(&toks[i]);
	if (is_ind_string(src, str))
		return ind_string_value(src, toks, str, ret_value, ret_len);
	buf = malloc(total + 1);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = str->tok_start; i < str->tok_end; i++)
		if (toks[i].kind == NIX_TOK_STR_CONTENT)
			o += unescape_str(src + toks[i].off, nix_ltok_len(&toks[i]), buf + o);
	buf[o] = '\0';
	*ret_value = buf;
	if (ret_len)
		*ret_len = o;
	return 0;
}

/* Nix's stripIndentation for an indented string without interpolation: the smallest
 * indentation of the non-blank lines is removed, the last line is dropped when it is only
 * spaces, and the escapes ''$ ''' ''\x are decoded. */
static int ind_string_value(const char *src, const struct nix_ltok *toks,
			    const struct nix_node *str, char **ret_value, size_t *ret_len)
{
	size_t n = 0, o = 0, min = SIZE_MAX, cur = 0;
	const char *s = NULL;
	bool at_bol = true;
	char *buf;

	for (uint32_t i = str->tok_start; i < str->tok_end; i++)
		if (toks[i].kind == NIX_TOK_STR_CONTENT) {
			s = src + toks[i].off;
			n = nix_ltok_len(&toks[i]);
		}
	/* the content is one token: the lexer joins the literal pieces */
	for (size_t i = 0; i < n; i++) {
		if (at_bol) {
			if (s[i] == ' ') {
				cur++;
				continue;
			}
			if (s[i] == '\n') {
				cur = 0;
				continue;
			}
			at_bol = false;
			if (cur < min)
				min = cur;
		}
		if (s[i] == '\n') {
			at_bol = true;
			cur = 0;
		}
	}
	if (min == SIZE_MAX)
		min = 0; /* every line blank: Nix strips them all the same */
	buf = malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	at_bol = true;
	cur = 0;
	for (size_t i = 0; i < n; i++) {
		if (at_bol && s[i] == ' ' && cur < min) {
			cur++;
			continue;
		}
		at_bol = false;
		if (s[i] == '\n') {
			at_bol = true;
			cur = 0;
			buf[o++] = '\n';
			continue;
		}
		if (s[i] == '\'' && i + 2 < n && s[i + 1] == '\'') {
			char e = s[i + 2];

			if (e == '$') {
				buf[o++] = '$';
				i += 2;
				continue;
			}
			if (e == '\'') {
				buf[o++] = '\'';
				buf[o++] = '\'';
				i += 2;
				continue;
			}
			if (e == '\\' && i + 3 < n) {
				char x = s[i + 3];

				buf[o++] = x == 'n' ? '\n' : x == 'r' ? '\r' : x == 't' ? '\t' : x;
				i += 3;
				continue;
			}
		}
		buf[o++] = s[i];
	}
	/* a last line of only spaces is dropped */
	{
		size_t k = o;

		while (k > 0 && buf[k - 1] == ' ')
			k--;
		if (k == 0 || buf[k - 1] == '\n')
			o = k;
	}
	buf[o] = '\0';
	*ret_value = buf;
	if (ret_len)
		*ret_len = o;
	return 0;
}

static const struct nix_node *strip_parens(const struct nix_node *n)
{
	while (n && n->kind == NIX_NODE_PAREN)
		n = nix_node_child(n, 0);
	return n;
}

/* The static name of an attribute element, in the arena (or the source). Returns 0, or
 * -EINVAL for a dynamic one. */
static int attr_static_name(struct parser *P, const struct nix_node *a, const char **ret_name,
			    uint32_t *ret_len)
{
	const struct nix_node *s = a;
	WS_AUTOFREE char *v = NULL;
	size_t n;
	char *copy;

	if (a->kind == NIX_NODE_IDENT) {
		/* one token: trivia around it belongs to the parent */
		*ret_name = P->src + a->start;
		*ret_len = a->end - a->start;
		return 0;
	}
	if (a->kind == NIX_NODE_INTERP)
		s = strip_parens(nix_node_child(a, 0));
	if (!s || s->kind != NIX_NODE_STRING)
		return -EINVAL;
	/* "${x}" is dynamic even around a plain string: only ${"x"} and "x" are static */
	if (string_value(P->src, P->toks, s, &v, &n) < 0)
		return -EINVAL;
	copy = arena_alloc(P->arena, n + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, v, n + 1);
	*ret_name = copy;
	*ret_len = (uint32_t)n;
	return 0;
}

/* Whether attr_static_name() finds a name (memory aside), without decoding it. */
static bool attr_is_static(const struct nix_node *a)
{
	if (a->kind == NIX_NODE_IDENT)
		return true;
	if (a->kind == NIX_NODE_INTERP)
		a = strip_parens(nix_node_child(a, 0));
	return a && a->kind == NIX_NODE_STRING && !a->n_children;
}

/* ---- the grammar ------------------------------------------------------------------------ */

static struct nix_node *parse_expr(struct parser *P);
static struct nix_node *parse_select(struct parser *P);

static bool enter(struct parser *P)
{
	if (P->failed)
		return false;
	if (++P->depth > MAX_DEPTH) {
		P->depth--;
		fail_at(P, peek(P)->off, "expression nested more than %d levels deep", MAX_DEPTH);
		return false;
	}
	return true;
}

static inline void leave(struct parser *P)
{
	P->depth--;
}

/* ${ expr } */
static struct nix_node *parse_interp(struct parser *P)
{
	struct mark m = mark(P);

	bump(P);
	if (!parse_expr(P))
		return NULL;
	if (peek_kind(P) != NIX_TOK_INTERP_CLOSE && peek_kind(P) != NIX_TOK_RBRACE)
		return unexpected(P, "'}'");
	bump(P);
	return finish(P, NIX_NODE_INTERP, m);
}

/* "..." or ''...'' */
static struct nix_node *parse_string(struct parser *P)
{
	bool ind = peek_kind(P) == NIX_TOK_IND_OPEN;
	int close = ind ? NIX_TOK_IND_CLOSE : NIX_TOK_STR_CLOSE;
	struct mark m = mark(P);

	bump(P);
	for (;;) {
		int k = peek_kind(P);

		if (k == close)
			break;
		if (k == NIX_TOK_STR_CONTENT) {
			const struct nix_ltok *t = peek(P);
			uint32_t piece;

			bump(P);
			/* Nix's lexer returns a dangling \ or $ at the end of the input as a second
			 * STR, which its grammar does not take */
			if (!ind && peek_kind(P) == NIX_LTOK_EOF &&
			    (piece = content_last_piece(P, t, false)) != t->off) {
				fail_at(P, piece, "syntax error, unexpected STR, expecting '\"'");
				return NULL;
			}
		} else if (k == NIX_TOK_INTERP_OPEN) {
			if (!parse_interp(P))
				return NULL;
		} else {
			return unexpected(P, ind ? "IND_STR or DOLLAR_CURLY or IND_STRING_CLOSE"
						 : "'\"'");
		}
	}
	bump(P);
	return finish(P, NIX_NODE_STRING, m);
}

/* An attribute name: ID, or, "string", ${expr}. */
static struct nix_node *parse_attr(struct parser *P)
{
	struct mark m;

	switch (peek_kind(P)) {
	case NIX_TOK_IDENT:
	case NIX_TOK_OR_KW:
		m = mark(P);
		bump(P);
		return finish(P, NIX_NODE_IDENT, m);
	case NIX_TOK_STR_OPEN:
		return parse_string(P);
	case NIX_TOK_INTERP_OPEN:
		return parse_interp(P);
	default:
		return unexpected(P, "ID or OR_KW or DOLLAR_CURLY or '\"'");
	}
}

static struct nix_node *parse_attrpath(struct parser *P)
{
	struct mark m = mark(P);

	if (!parse_attr(P))
		return NULL;
	while (peek_kind(P) == NIX_TOK_DOT) {
		bump(P);
		if (!parse_attr(P))
			return NULL;
	}
	return finish(P, NIX_NODE_ATTRPATH, m);
}

/* Appends @s to @buf (NUL-terminated, @cap bytes) as much as fits. */
static void buf_add(char *buf, size_t cap, const char *s, size_t n)
{
	size_t len = strlen(buf);

	if (len + 1 >= cap)
		return;
	if (n > cap - len - 1)
		n = cap - len - 1;
	memcpy(buf + len, s, n);
	buf[len + n] = '\0';
}

/* An attribute name as Nix prints one in a path: bare when it is an identifier (and not
 * "if"), else quoted with escapes. */
static void show_ident(char *buf, size_t cap, const char *s, size_t n)
{
	bool bare = n > 0 && !(n == 2 && memcmp(s, "if", 2) == 0) &&
		    ((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_');

	for (size_t i = 0; bare && i < n; i++) {
		char c = s[i];

		bare = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		       c == '_' || c == '\'' || c == '-';
	}
	if (bare) {
		buf_add(buf, cap, s, n);
		return;
	}
	buf_add(buf, cap, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '"' || c == '\\')
			buf_add(buf, cap, "\\", 1), buf_add(buf, cap, &c, 1);
		else if (c == '\n')
			buf_add(buf, cap, "\\n", 2);
		else if (c == '\r')
			buf_add(buf, cap, "\\r", 2);
		else if (c == '\t')
			buf_add(buf, cap, "\\t", 2);
		else if (c == '$' && i + 1 < n && s[i + 1] == '{')
			buf_add(buf, cap, "\\$", 2);
		else
			buf_add(buf, cap, &c, 1);
	}
	buf_add(buf, cap, "\"", 1);
}

/* Nix's addAttr: records @path = value in set @set, merging nested sets the way Nix does,
 * and fails on a duplicate. @value_sem is the set the value denotes, or -1. */
static bool sem_is_rec(const struct parser *P, int32_t set)
{
	return set >= 0 && P->sem.sets[set].node && (P->sem.sets[set].node->flags & NF_REC);
}

static int add_attr(struct parser *P, uint32_t set, struct nix_node *binding,
		    const struct nix_node *path, int32_t value_sem)
{
	size_t n = path->n_children;
	uint32_t pos = path->start;

	for (size_t i = 0; i < n; i++) {
		const struct nix_node *a = path->children[i];
		struct sem_key key = { 0 };
		struct sem_ent *e;
		int r;

		r = attr_static_name(P, a, &key.name, &key.len);
		if (r == -ENOMEM) {
			fail_at(P, 0, "out of memory");
			return r;
		}
		if (r < 0) {
			/* a dynamic attribute: what follows lands in a fresh set */
			int32_t s = i + 1 < n ? sem_new_set(P) : -1;

			if (i + 1 < n && s < 0)
				return -ENOMEM;
			set = (uint32_t)s;
			continue;
		}
		e = sem_find(P, set, &key);
		if (i + 1 < n) {
			if (e) {
				if (e->sub < 0)
					goto dup;
				if (sem_is_rec(P, e->sub))
					binding->flags |= NF_LENIENT;
				set = (uint32_t)e->sub;
			} else {
				int32_t s = sem_new_set(P);

				if (s < 0 || sem_add(P, set, &key, pos, s) < 0)
					return -ENOMEM;
				set = (uint32_t)s;
			}
			continue;
		}
		if (!e)
			return sem_add(P, set, &key, pos, value_sem);
		if (e->sub < 0 || value_sem < 0)
			goto dup;
		/* both are attribute sets: Nix merges the new one's attributes in */
		if (sem_is_rec(P, e->sub) || sem_is_rec(P, value_sem)) {
			if (P->sem.sets[e->sub].node)
				P->sem.sets[e->sub].node->flags |= NF_LENIENT;
			P->sem.sets[value_sem].node->flags |= NF_LENIENT;
		}
		{
			uint32_t into = (uint32_t)e->sub;

			for (uint32_t ki = P->sem.sets[value_sem].head; ki; ki = P->sem.ents[ki - 1].next) {
				struct sem_ent ad = P->sem.ents[ki - 1];
				struct sem_key adk = { .name = ad.name, .len = ad.nlen };
				struct sem_ent *j2 = sem_find(P, into, &adk);
				char where[600];
				int l, c;

				if (j2) {
					linecol(P->src, P->len, ad.pos, &l, &c);
					snprintf(where, sizeof(where), "%s:%d:%d", P->filename, l, c);
					char shown[512] = "";

					show_ident(shown, sizeof(shown), ad.name, ad.nlen);
					fail_at(P, j2->pos, "attribute '%s' already defined at %s",
						shown, where);
					return -EINVAL;
				}
				if (sem_add(P, into, &adk, ad.pos, ad.sub) < 0)
					return -ENOMEM;
			}
		}
		return 0;
dup:
		{
			char shown[512] = "";
			char where[600];
			int l, c;

			/* Nix shows the whole path; a dynamic part as "${expr}" */
			for (size_t j = 0; j < n; j++) {
				const struct nix_node *aj = nix_node_child(path, j);
				const char *nm;
				uint32_t nl;

				if (j)
					buf_add(shown, sizeof(shown), ".", 1);
				if (attr_static_name(P, aj, &nm, &nl) == 0) {
					show_ident(shown, sizeof(shown), nm, nl);
				} else {
					const struct nix_node *x = aj->kind == NIX_NODE_INTERP
									   ? nix_node_child(aj, 0)
									   : aj;

					buf_add(shown, sizeof(shown), "\"${", 3);
					buf_add(shown, sizeof(shown), P->src + x->start,
						x->end - x->start);
					buf_add(shown, sizeof(shown), "}\"", 2);
				}
			}
			linecol(P->src, P->len, e->pos, &l, &c);
			snprintf(where, sizeof(where), "%s:%d:%d", P->filename, l, c);
			fail_at(P, pos, "attribute '%s' already defined at %s", shown, where);
			return -EINVAL;
		}
	}
	return 0;
}

/* inherit [(expr)] names ; */
static struct nix_node *parse_inherit(struct parser *P, uint32_t set)
{
	struct mark m = mark(P);
	uint32_t pos;

	bump(P);
	pos = P->toks[P->triv].off; /* the end of `inherit` */
	if (peek_kind(P) == NIX_TOK_LPAREN) {
		struct mark mf = mark(P);

		bump(P);
		if (!parse_expr(P) || !expect(P, NIX_TOK_RPAREN, "')'"))
			return NULL;
		if (!finish(P, NIX_NODE_INHERIT_FROM, mf))
			return NULL;
		pos = P->toks[P->triv - 1].off + 1;
	}
	for (;;) {
		int k = peek_kind(P);
		struct nix_node *a;
		struct sem_key key = { 0 };
		struct sem_ent *e;

		if (k == NIX_TOK_SEMI)
			break;
		if (k != NIX_TOK_IDENT && k != NIX_TOK_OR_KW && k != NIX_TOK_STR_OPEN &&
		    k != NIX_TOK_INTERP_OPEN)
			return unexpected(P, NULL);
		a = parse_attr(P);
		if (!a)
			return NULL;
		if (attr_static_name(P, a, &key.name, &key.len) < 0) {
			fail_at(P, a->start, "dynamic attributes not allowed in inherit");
			return NULL;
		}
		e = sem_find(P, set, &key);
		if (e) {
			char where[600];
			int l, c;

			linecol(P->src, P->len, e->pos, &l, &c);
			snprintf(where, sizeof(where), "%s:%d:%d", P->filename, l, c);
			char shown[512] = "";

			show_ident(shown, sizeof(shown), key.name, key.len);
			fail_at(P, pos, "attribute '%s' already defined at %s", shown, where);
			return NULL;
		}
		if (sem_add(P, set, &key, pos, -1) < 0)
			return NULL;
	}
	bump(P);
	return finish(P, NIX_NODE_INHERIT, m);
}

/* Bindings up to @end (not consumed), into semantic set @set. Sets *ret_dynamic when a
 * binding's first attribute is dynamic (refused in let). */
static bool parse_binds(struct parser *P, int end, uint32_t set, uint32_t *ret_dynamic)
{
	for (;;) {
		int k = peek_kind(P);
		struct mark m;
		struct nix_node *path, *val, *binding;
		const struct nix_node *inner;
		const char *name;
		uint32_t nlen;

		if (k == end)
			return true;
		if (k == NIX_TOK_INHERIT) {
			if (!parse_inherit(P, set))
				return false;
			continue;
		}
		if (k != NIX_TOK_IDENT && k != NIX_TOK_OR_KW && k != NIX_TOK_STR_OPEN &&
		    k != NIX_TOK_INTERP_OPEN) {
			(void)unexpected(P, NULL);
			return false;
		}
		m = mark(P);
		path = parse_attrpath(P);
		if (!path || !expect(P, NIX_TOK_ASSIGN, "'.' or '='"))
			return false;
		val = parse_expr(P);
		if (!val || !expect(P, NIX_TOK_SEMI, "';'"))
			return false;
		binding = finish(P, NIX_NODE_BINDING, m);
		if (!binding)
			return false;
		if (ret_dynamic && !*ret_dynamic &&
		    attr_static_name(P, nix_node_child(path, 0), &name, &nlen) < 0)
			*ret_dynamic = path->start + 1;
		inner = strip_parens(val);
		if (add_attr(P, set, binding, path,
			     inner->kind == NIX_NODE_ATTRSET && inner == P->last_set
				     ? P->last_set_sem
				     : -1) < 0)
			return false;
	}
}

/* [rec] { binds } and let { binds } */
static struct nix_node *parse_attrset(struct parser *P)
{
	struct mark m = mark(P);
	enum nix_kind kind = NIX_NODE_ATTRSET;
	int32_t set = sem_new_set(P);
	struct nix_node *n;

	if (set < 0)
		return NULL;
	bool rec = peek_kind(P) == NIX_TOK_REC;

	if (rec || peek_kind(P) == NIX_TOK_LET) {
		if (!rec)
			kind = NIX_NODE_LEGACY_LET;
		bump(P);
	}
	if (!expect(P, NIX_TOK_LBRACE, NULL))
		return NULL;
	if (!parse_binds(P, NIX_TOK_RBRACE, (uint32_t)set, NULL))
		return NULL;
	bump(P);
	n = finish(P, kind, m);
	if (n) {
		if (rec)
			n->flags |= NF_REC;
		/* a value of a binding strips to this set only if it is the last one made */
		P->last_set = n;
		P->last_set_sem = set;
		P->sem.sets[set].node = n;
	}
	return n;
}

static struct nix_node *parse_list(struct parser *P)
{
	struct mark m = mark(P);

	bump(P);
	while (peek_kind(P) != NIX_TOK_RBRACK) {
		if (!parse_select(P))
			return NULL;
	}
	bump(P);
	return finish(P, NIX_NODE_LIST, m);
}

static struct nix_node *parse_int(struct parser *P)
{
	const struct nix_ltok *t = peek(P);
	uint64_t v = 0;
	struct mark m;

	uint32_t len = nix_ltok_len(t);

	for (uint32_t i = 0; i < len; i++) {
		unsigned d = (unsigned)(P->src[t->off + i] - '0');

		if (v > (UINT64_C(9223372036854775807) - d) / 10) {
			fail_at(P, t->off, "invalid integer '%.*s'", (int)len, P->src + t->off);
			return NULL;
		}
		v = v * 10 + d;
	}
	m = mark(P);
	bump(P);
	return finish(P, NIX_NODE_LITERAL, m);
}

static struct nix_node *parse_float(struct parser *P)
{
	const struct nix_ltok *t = peek(P);
	WS_AUTOFREE char *copy = strndup(P->src + t->off, nix_ltok_len(t)); /* strtod needs a NUL */
	struct mark m;

	if (!copy) {
		fail_at(P, 0, "out of memory");
		return NULL;
	}
	errno = 0;
	(void)strtod(copy, NULL);
	if (errno != 0) {
		fail_at(P, t->off, "invalid float '%s'", copy);
		return NULL;
	}
	m = mark(P);
	bump(P);
	return finish(P, NIX_NODE_LITERAL, m);
}

/* A path literal, or a path with interpolation. */
static struct nix_node *parse_path(struct parser *P)
{
	struct mark m = mark(P);
	bool interp = false, first = true;
	int64_t lone_piece = -1; /* a piece right after the start, not yet followed by ${ */

	bump(P);
	for (;;) {
		const struct nix_ltok *t = peek(P);

		if (!(t->flags & NIX_LF_INPATH))
			break;
		if (t->kind == NIX_TOK_PATH) {
			/* Nix's grammar: the text that follows the path's start must lead to an
			 * interpolation (`./a//b` is an error there) */
			if (first)
				lone_piece = t->off;
			bump(P);
		} else {
			lone_piece = -1;
			interp = true;
			if (!parse_interp(P))
				return NULL;
		}
		first = false;
	}
	if (peek_kind(P) == NIX_LTOK_ERROR)
		return unexpected(P, NULL);
	if (lone_piece >= 0) {
		fail_at(P, (uint32_t)lone_piece,
			"syntax error, unexpected PATH_END, expecting DOLLAR_CURLY");
		return NULL;
	}
	return finish(P, interp ? NIX_NODE_PATH : NIX_NODE_LITERAL, m);
}

static struct nix_node *parse_simple(struct parser *P)
{
	struct nix_node *n = NULL;
	struct mark m;

	if (!enter(P))
		return NULL;
	switch (peek_kind(P)) {
	case NIX_TOK_IDENT:
		m = mark(P);
		bump(P);
		n = finish(P, NIX_NODE_IDENT, m);
		break;
	case NIX_TOK_INT:
		n = parse_int(P);
		break;
	case NIX_TOK_FLOAT:
		n = parse_float(P);
		break;
	case NIX_TOK_SPATH:
	case NIX_TOK_URI:
		m = mark(P);
		bump(P);
		n = finish(P, NIX_NODE_LITERAL, m);
		break;
	case NIX_TOK_PATH:
		n = parse_path(P);
		break;
	case NIX_TOK_STR_OPEN:
	case NIX_TOK_IND_OPEN:
		n = parse_string(P);
		break;
	case NIX_TOK_LPAREN:
		m = mark(P);
		bump(P);
		if (parse_expr(P) && expect(P, NIX_TOK_RPAREN, "')'"))
			n = finish(P, NIX_NODE_PAREN, m);
		break;
	case NIX_TOK_LET:
		if (peek2_kind(P) != NIX_TOK_LBRACE) {
			m = mark(P);
			bump(P);
			n = unexpected(P, "'{'");
			break;
		}
		/* fallthrough */
	case NIX_TOK_REC:
	case NIX_TOK_LBRACE:
		n = parse_attrset(P);
		break;
	case NIX_TOK_LBRACK:
		n = parse_list(P);
		break;
	default:
		n = unexpected(P, NULL);
		break;
	}
	leave(P);
	return n;
}

static bool starts_simple(int k)
{
	switch (k) {
	case NIX_TOK_IDENT:
	case NIX_TOK_INT:
	case NIX_TOK_FLOAT:
	case NIX_TOK_SPATH:
	case NIX_TOK_URI:
	case NIX_TOK_PATH:
	case NIX_TOK_STR_OPEN:
	case NIX_TOK_IND_OPEN:
	case NIX_TOK_LPAREN:
	case NIX_TOK_LET:
	case NIX_TOK_REC:
	case NIX_TOK_LBRACE:
	case NIX_TOK_LBRACK:
		return true;
	default:
		return false;
	}
}

/* e.a.b [or d], and the old `f or` (application to a variable named "or") */
static struct nix_node *parse_select(struct parser *P)
{
	struct mark m = mark(P);
	struct nix_node *e = parse_simple(P);

	if (!e)
		return NULL;
	if (peek_kind(P) == NIX_TOK_OR_KW) {
		struct mark mo = mark(P);

		bump(P);
		if (!finish(P, NIX_NODE_IDENT, mo))
			return NULL;
		return finish(P, NIX_NODE_APPLY, m);
	}
	if (peek_kind(P) != NIX_TOK_DOT)
		return e;
	bump(P);
	if (!parse_attrpath(P))
		return NULL;
	if (peek_kind(P) == NIX_TOK_OR_KW) {
		bump(P);
		if (!parse_select(P))
			return NULL;
	}
	return finish(P, NIX_NODE_SELECT, m);
}

static struct nix_node *parse_app(struct parser *P)
{
	struct mark m = mark(P);
	struct nix_node *n = parse_select(P);

	while (n && starts_simple(peek_kind(P))) {
		if (!parse_select(P))
			return NULL;
		n = finish(P, NIX_NODE_APPLY, m);
	}
	return n;
}

/* Operator precedence, from Nix's %left/%right/%nonassoc lines (higher binds tighter). */
enum {
	PREC_IMPL = 1,
	PREC_OR,
	PREC_AND,
	PREC_EQ,
	PREC_CMP,
	PREC_UPDATE,
	PREC_NOT,
	PREC_ADD,
	PREC_MUL,
	PREC_CONCAT,
	PREC_HAS,
	PREC_NEGATE,
};

enum assoc { LEFT, RIGHT, NONASSOC };

static int binop_prec(int k, enum assoc *ret_assoc)
{
	switch (k) {
	case NIX_TOK_IMPL: *ret_assoc = RIGHT; return PREC_IMPL;
	case NIX_TOK_OR: *ret_assoc = LEFT; return PREC_OR;
	case NIX_TOK_AND: *ret_assoc = LEFT; return PREC_AND;
	case NIX_TOK_EQ:
	case NIX_TOK_NEQ: *ret_assoc = NONASSOC; return PREC_EQ;
	case NIX_TOK_LT:
	case NIX_TOK_LE:
	case NIX_TOK_GT:
	case NIX_TOK_GE: *ret_assoc = NONASSOC; return PREC_CMP;
	case NIX_TOK_UPDATE: *ret_assoc = RIGHT; return PREC_UPDATE;
	case NIX_TOK_PLUS:
	case NIX_TOK_MINUS: *ret_assoc = LEFT; return PREC_ADD;
	case NIX_TOK_STAR:
	case NIX_TOK_SLASH: *ret_assoc = LEFT; return PREC_MUL;
	case NIX_TOK_CONCAT: *ret_assoc = RIGHT; return PREC_CONCAT;
	case NIX_TOK_QUESTION: *ret_assoc = NONASSOC; return PREC_HAS;
	default: return 0;
	}
}

static struct nix_node *parse_binary(struct parser *P, int min_prec);

static struct nix_node *parse_unary(struct parser *P)
{
	int k = peek_kind(P);
	struct nix_node *n;
	struct mark m;

	if (k != NIX_TOK_NOT && k != NIX_TOK_MINUS)
		return parse_app(P);
	if (!enter(P))
		return NULL;
	m = mark(P);
	bump(P);
	n = parse_binary(P, k == NIX_TOK_NOT ? PREC_NOT + 1 : PREC_NEGATE + 1);
	if (n) {
		n = finish(P, NIX_NODE_UNARY, m);
		if (n)
			n->op = (enum nix_tok)k;
	}
	leave(P);
	return n;
}

static struct nix_node *parse_binary(struct parser *P, int min_prec)
{
	struct mark m = mark(P);
	struct nix_node *lhs = parse_unary(P);
	int last_nonassoc = 0;

	while (lhs) {
		int k = peek_kind(P), prec;
		enum assoc as = LEFT;

		prec = binop_prec(k, &as);
		if (!prec || prec < min_prec)
			break;
		if (as == NONASSOC && prec == last_nonassoc && k != NIX_TOK_QUESTION)
			return unexpected(P, NULL);
		bump(P);
		if (k == NIX_TOK_QUESTION) {
			if (!parse_attrpath(P))
				return NULL;
			lhs = finish(P, NIX_NODE_HAS_ATTR, m);
			continue;
		}
		if (!enter(P))
			return NULL;
		lhs = parse_binary(P, as == RIGHT ? prec : prec + 1);
		leave(P);
		if (!lhs)
			return NULL;
		lhs = finish(P, NIX_NODE_BINOP, m);
		if (lhs)
			lhs->op = (enum nix_tok)k;
		last_nonassoc = as == NONASSOC ? prec : 0;
	}
	return lhs;
}

/* After `{` at the start of an expression: a function's pattern, or a set? */
static bool looks_like_pattern(const struct parser *P)
{
	size_t i = P->pos + 1;
	int k1, k2;

	while (i < P->n_toks && is_trivia(P->toks[i].kind))
		i++;
	k1 = P->toks[i].kind;
	if (k1 == NIX_TOK_ELLIPSIS)
		return true;
	if (k1 != NIX_TOK_RBRACE && k1 != NIX_TOK_IDENT)
		return false;
	if (k1 == NIX_LTOK_EOF)
		return false;
	for (i++; i < P->n_toks && is_trivia(P->toks[i].kind); i++)
		;
	k2 = P->toks[i].kind;
	if (k1 == NIX_TOK_RBRACE)
		return k2 == NIX_TOK_COLON || k2 == NIX_TOK_AT;
	return k2 == NIX_TOK_COMMA || k2 == NIX_TOK_QUESTION || k2 == NIX_TOK_RBRACE;
}

/* [x @] { formals } [@ x] : body  -- the cursor is on `x` or `{` */
static struct nix_node *parse_pattern_lambda(struct parser *P)
{
	struct mark m = mark(P), mp = mark(P);
	struct nix_node *pat;
	uint32_t dup_off = UINT32_MAX, dup_len = 0, at_name = UINT32_MAX, at_len = 0;
	uint32_t lambda_off = peek(P)->off;
	int32_t formals = sem_new_set(P); /* the names, to find duplicates */
	bool after_comma = false;

	if (formals < 0)
		return NULL;
	if (peek_kind(P) == NIX_TOK_IDENT) {
		struct mark mi = mark(P);

		at_name = peek(P)->off;
		at_len = nix_ltok_len(peek(P));
		bump(P);
		if (!finish(P, NIX_NODE_IDENT, mi))
			return NULL;
		bump(P); /* @ */
		if (peek_kind(P) != NIX_TOK_LBRACE)
			return unexpected(P, "'{'");
	}
	bump(P); /* { */
	for (;;) {
		int k = peek_kind(P);

		if (k == NIX_TOK_RBRACE)
			break;
		if (k == NIX_TOK_ELLIPSIS) {
			bump(P);
			if (peek_kind(P) != NIX_TOK_RBRACE)
				return unexpected(P, "'}'");
			break;
		}
		if (k == NIX_TOK_IDENT) {
			struct mark me = mark(P), mi = mark(P);
			const struct nix_ltok *id = peek(P);
			struct sem_key key = { .name = P->src + id->off, .len = nix_ltok_len(id) };

			if (sem_find(P, (uint32_t)formals, &key)) {
				if (dup_off == UINT32_MAX) {
					dup_off = id->off;
					dup_len = key.len;
				}
			} else if (sem_add(P, (uint32_t)formals, &key, id->off, -1) < 0) {
				return NULL;
			}
			bump(P);
			if (!finish(P, NIX_NODE_IDENT, mi))
				return NULL;
			if (peek_kind(P) == NIX_TOK_QUESTION) {
				bump(P);
				if (!parse_expr(P))
					return NULL;
			}
			if (!finish(P, NIX_NODE_PAT_ENTRY, me))
				return NULL;
			if (peek_kind(P) == NIX_TOK_COMMA) {
				bump(P);
				after_comma = true;
				continue;
			}
			if (peek_kind(P) != NIX_TOK_RBRACE)
				return unexpected(P, "'}'");
			break;
		}
		return unexpected(P, after_comma ? "'}'" : NULL);
	}
	bump(P); /* } */
	if (at_name == UINT32_MAX && peek_kind(P) == NIX_TOK_AT) {
		struct mark mi;

		bump(P);
		if (peek_kind(P) != NIX_TOK_IDENT)
			return unexpected(P, "ID");
		at_name = peek(P)->off;
		at_len = nix_ltok_len(peek(P));
		mi = mark(P);
		bump(P);
		if (!finish(P, NIX_NODE_IDENT, mi))
			return NULL;
	}
	pat = finish(P, NIX_NODE_PATTERN, mp);
	if (!pat)
		return NULL;
	if (!expect(P, NIX_TOK_COLON, at_name == UINT32_MAX ? "':' or '@'" : "':'"))
		return NULL;
	if (!parse_expr(P))
		return NULL;
	/* Nix checks the formals when the whole function has been read */
	if (dup_off != UINT32_MAX) {
		fail_at(P, dup_off, "duplicate formal function argument '%.*s'", (int)dup_len,
			P->src + dup_off);
		return NULL;
	}
	if (at_name != UINT32_MAX) {
		struct sem_key key = { .name = P->src + at_name, .len = at_len };

		if (sem_find(P, (uint32_t)formals, &key)) {
			fail_at(P, lambda_off, "duplicate formal function argument '%.*s'",
				(int)at_len, P->src + at_name);
			return NULL;
		}
	}
	return finish(P, NIX_NODE_LAMBDA, m);
}

static struct nix_node *parse_expr_inner(struct parser *P)
{
	struct mark m;
	int k = peek_kind(P);
	uint32_t dyn = 0, let_off;
	int32_t set;

	switch (k) {
	case NIX_TOK_IDENT: {
		int k2 = peek2_kind(P);

		if (k2 == NIX_TOK_COLON) {
			struct mark mi;

			m = mark(P);
			mi = mark(P);
			bump(P);
			if (!finish(P, NIX_NODE_IDENT, mi))
				return NULL;
			bump(P);
			if (!parse_expr(P))
				return NULL;
			return finish(P, NIX_NODE_LAMBDA, m);
		}
		if (k2 == NIX_TOK_AT)
			return parse_pattern_lambda(P);
		break;
	}
	case NIX_TOK_LBRACE: {
		struct nix_node *n;

		if (looks_like_pattern(P))
			return parse_pattern_lambda(P);
		n = parse_binary(P, 1);
		if (n && n->kind == NIX_NODE_ATTRSET && nix_node_n_children(n) == 0 &&
		    !nix_node_is_rec(n))
			P->glr_empty_set_next = P->pos;
		return n;
	}
	case NIX_TOK_ASSERT:
	case NIX_TOK_WITH:
		m = mark(P);
		bump(P);
		if (!parse_expr(P) || !expect(P, NIX_TOK_SEMI, "';'") || !parse_expr(P))
			return NULL;
		return finish(P, k == NIX_TOK_WITH ? NIX_NODE_WITH : NIX_NODE_ASSERT, m);
	case NIX_TOK_LET:
		if (peek2_kind(P) == NIX_TOK_LBRACE)
			break;
		m = mark(P);
		let_off = peek(P)->off;
		set = sem_new_set(P);
		if (set < 0)
			return NULL;
		bump(P);
		if (!parse_binds(P, NIX_TOK_IN, (uint32_t)set, &dyn))
			return NULL;
		bump(P);
		if (!parse_expr(P))
			return NULL;
		if (dyn) {
			fail_at(P, let_off, "dynamic attributes not allowed in let");
			return NULL;
		}
		return finish(P, NIX_NODE_LET_IN, m);
	case NIX_TOK_IF:
		m = mark(P);
		bump(P);
		if (!parse_expr(P) || !expect(P, NIX_TOK_THEN, "THEN") || !parse_expr(P) ||
		    !expect(P, NIX_TOK_ELSE, "ELSE") || !parse_expr(P))
			return NULL;
		return finish(P, NIX_NODE_IF, m);
	default:
		break;
	}
	return parse_binary(P, 1);
}

static struct nix_node *parse_expr(struct parser *P)
{
	struct nix_node *n;

	if (!enter(P))
		return NULL;
	n = parse_expr_inner(P);
	leave(P);
	return P->failed ? NULL : n;
}

/* ---- undefined variables ------------------------------------------------------------------ */

/* Names in scope: a hash of name -> how many bindings currently hold it. */
struct scope_slot {
	const char *name;
	uint32_t len;
	uint32_t count;
};

struct scope {
	struct scope_slot *slots;
	size_t n_slots, used;
	uint32_t *stack; /* slot indices of pushed names, for popping */
	size_t n_stack, cap_stack;
};

static const char *const base_env[] = {
	"abort", "baseNameOf", "builtins", "derivation", "derivationStrict", "dirOf", "false",
	"fetchGit", "fetchMercurial", "fetchTarball", "fetchTree", "fromTOML", "import", "isNull",
	"map", "null", "placeholder", "removeAttrs", "scopedImport", "throw", "toString", "true",
	"__add", "__addErrorContext", "__all", "__any", "__appendContext", "__attrNames",
	"__attrValues", "__bitAnd", "__bitOr", "__bitXor", "__catAttrs", "__ceil",
	"__compareVersions", "__concatLists", "__concatMap", "__concatStringsSep",
	"__currentSystem", "__currentTime", "__deepSeq", "__div", "__elem", "__elemAt",
	"__fetchurl", "__filter", "__filterSource", "__findFile", "__floor", "__foldl'",
	"__fromJSON", "__functionArgs", "__genList", "__genericClosure", "__getAttr",
	"__getContext", "__getEnv", "__groupBy", "__hasAttr", "__hasContext", "__hashFile",
	"__hashString", "__head", "__intersectAttrs", "__isAttrs", "__isBool", "__isFloat",
	"__isFunction", "__isInt", "__isList", "__isPath", "__isString", "__langVersion",
	"__length", "__lessThan", "__listToAttrs", "__mapAttrs", "__match", "__mul", "__nixPath",
	"__nixVersion", "__parseDrvName", "__partition", "__path", "__pathExists", "__readDir",
	"__readFile", "__replaceStrings", "__seq", "__sort", "__split", "__splitVersion",
	"__storeDir", "__storePath", "__stringLength", "__sub", "__substring", "__tail",
	"__toFile", "__toJSON", "__toPath", "__toXML", "__trace", "__tryEval", "__typeOf",
	"__unsafeDiscardOutputDependency", "__unsafeDiscardStringContext", "__unsafeGetAttrPos",
	"__zipAttrsWith",
	"__curPos", /* not a variable at all: the parser turns it into a position */
};

static int scope_grow(struct scope *S)
{
	size_t n = S->n_slots ? S->n_slots * 2 : 512;
	struct scope_slot *slots = calloc(n, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	/* re-inserting changes slot indices: only done while the stack is empty of those */
	for (size_t i = 0; i < S->n_slots; i++) {
		struct scope_slot *o = &S->slots[i];
		size_t j;

		if (!o->name)
			continue;
		j = hash_bytes(o->name, o->len) & (n - 1);
		while (slots[j].name)
			j = (j + 1) & (n - 1);
		slots[j] = *o;
		for (size_t k = 0; k < S->n_stack; k++)
			if (S->stack[k] == i)
				S->stack[k] = (uint32_t)j | 0x80000000u;
	}
	for (size_t k = 0; k < S->n_stack; k++)
		S->stack[k] &= 0x7fffffffu;
	free(S->slots);
	S->slots = slots;
	S->n_slots = n;
	return 0;
}

static struct scope_slot *scope_slot(struct scope *S, const char *name, uint32_t len,
				     bool create, size_t *ret_idx)
{
	size_t j;

	if (create && (S->used + 1) * 2 > S->n_slots && scope_grow(S) < 0)
		return NULL;
	if (!S->n_slots)
		return NULL;
	for (j = hash_bytes(name, len) & (S->n_slots - 1); S->slots[j].name;
	     j = (j + 1) & (S->n_slots - 1))
		if (S->slots[j].len == len && memcmp(S->slots[j].name, name, len) == 0)
			break;
	if (!S->slots[j].name) {
		if (!create)
			return NULL;
		S->slots[j] = (struct scope_slot){ .name = name, .len = len };
		S->used++;
	}
	if (ret_idx)
		*ret_idx = j;
	return &S->slots[j];
}

static int scope_push(struct scope *S, const char *name, uint32_t len)
{
	size_t idx;
	struct scope_slot *s = scope_slot(S, name, len, true, &idx);

	if (!s)
		return -ENOMEM;
	if (S->n_stack == S->cap_stack) {
		size_t ncap = S->cap_stack ? S->cap_stack * 2 : 256;
		uint32_t *st = realloc(S->stack, ncap * sizeof(*st));

		if (!st)
			return -ENOMEM;
		S->stack = st;
		S->cap_stack = ncap;
	}
	s->count++;
	S->stack[S->n_stack++] = (uint32_t)idx;
	return 0;
}

static void scope_pop_to(struct scope *S, size_t n)
{
	while (S->n_stack > n)
		S->slots[S->stack[--S->n_stack]].count--;
}

static bool scope_has(struct scope *S, const char *name, uint32_t len)
{
	struct scope_slot *s = scope_slot(S, name, len, false, NULL);

	return s && s->count > 0;
}

struct walk_frame {
	const struct nix_node *n;
	uint32_t i;        /* the next child (SELECT with a default: how many were seen) */
	bool pass;         /* sets: the second pass, over dynamic attributes */
	bool dynamic;      /* sets: the first pass skipped a dynamic attribute */
	size_t scope_mark; /* names to pop when leaving; SIZE_MAX: none */
};

static bool is_scoping(const struct parser *P, const struct nix_node *n)
{
	return n->kind == NIX_NODE_LET_IN || n->kind == NIX_NODE_LEGACY_LET ||
	       n->kind == NIX_NODE_LAMBDA ||
	       (n->kind == NIX_NODE_ATTRSET && (n->flags & NF_REC));
}

static int check_var(struct parser *P, struct scope *S, const struct nix_node *id)
{
	const char *name = P->src + id->start; /* an IDENT is one token */
	uint32_t len = id->end - id->start;

	if (scope_has(S, name, len))
		return 0;
	/* `f or` reads as f applied to a variable "or", placed where f starts */
	fail_at(P, P->toks[id->tok_start].kind == NIX_TOK_OR_KW && id->parent ? id->parent->start
									       : id->start,
		"undefined variable '%.*s'", (int)len, name);
	return -EINVAL;
}

/* Checks the names of a plain `inherit a b;` (no source): they are variables, which Nix
 * places where the bindings begin, just after the `{` or `let`. */
static int check_inherit_names(struct parser *P, struct scope *S, const struct nix_node *inh)
{
	size_t n = inh->n_children;
	const struct nix_node *owner = inh->parent;
	uint32_t pos = inh->start;

	/* the opening tokens come before the first binding */
	if (owner) {
		uint32_t stop = owner->n_children ? owner->children[0]->tok_start : owner->tok_end;

		for (uint32_t i = owner->tok_start; i < stop; i++)
			if (P->toks[i].kind == NIX_TOK_LBRACE || P->toks[i].kind == NIX_TOK_LET)
				pos = P->toks[i + 1].off;
	}

	if (n && inh->children[0]->kind == NIX_NODE_INHERIT_FROM)
		return 0; /* names of a source, not variables */
	for (size_t i = 0; i < n; i++) {
		const struct nix_node *a = inh->children[i];
		const char *name;
		uint32_t len;

		if (attr_static_name(P, a, &name, &len) < 0)
			continue;
		if (!scope_has(S, name, len)) {
			fail_at(P, pos, "undefined variable '%.*s'", (int)len, name);
			return -EINVAL;
		}
	}
	return 0;
}

/* Pushes the names a scoping node binds. */
static int bind_names(struct parser *P, struct scope *S, const struct nix_node *n)
{
	int r;

	if (n->kind == NIX_NODE_LAMBDA) {
		const struct nix_node *p = n->children[0];

		if (p->kind == NIX_NODE_IDENT)
			return scope_push(S, P->src + p->start, p->end - p->start);
		for (size_t i = 0; i < p->n_children; i++) {
			const struct nix_node *c = p->children[i];

			if (c->kind == NIX_NODE_PAT_ENTRY)
				c = c->children[0];
			r = scope_push(S, P->src + c->start, c->end - c->start); /* an IDENT */
			if (r < 0)
				return r;
		}
		return 0;
	}
	/* let, rec { }, let { }: plain inherits refer to the enclosing scope */
	for (size_t i = 0; i < n->n_children; i++) {
		const struct nix_node *c = n->children[i];

		if (c->kind == NIX_NODE_INHERIT && check_inherit_names(P, S, c) < 0)
			return -EINVAL;
	}
	for (size_t i = 0; i < n->n_children; i++) {
		const struct nix_node *c = n->children[i];
		const char *name;
		uint32_t len;

		if (c->kind == NIX_NODE_BINDING) {
			if (attr_static_name(P, c->children[0]->children[0], &name, &len) < 0)
				continue;
			r = scope_push(S, name, len);
			if (r < 0)
				return r;
		} else if (c->kind == NIX_NODE_INHERIT) {
			for (size_t j = 0; j < c->n_children; j++) {
				const struct nix_node *a = c->children[j];

				if (a->kind == NIX_NODE_INHERIT_FROM ||
				    attr_static_name(P, a, &name, &len) < 0)
					continue;
				r = scope_push(S, name, len);
				if (r < 0)
					return r;
			}
		}
	}
	return 0;
}

static bool binding_is_dynamic(const struct nix_node *c)
{
	return c->kind == NIX_NODE_BINDING && !attr_is_static(c->children[0]->children[0]);
}

/* The next child of @f to check, in the order Nix binds variables (which decides which of
 * several undefined variables it reports): a select's default before its attribute path,
 * and a set's dynamic attributes after the others. */
static const struct nix_node *walk_next(struct walk_frame *f, size_t *ret_idx)
{
	const struct nix_node *n = f->n;
	bool set = n->kind == NIX_NODE_ATTRSET || n->kind == NIX_NODE_LEGACY_LET;

	if (n->kind == NIX_NODE_SELECT && n->n_children == 3) {
		static const size_t order[] = { 0, 2, 1 };

		if (f->i >= 3)
			return NULL;
		*ret_idx = order[f->i++];
		return n->children[*ret_idx];
	}
	if (!set) {
		if (f->i >= n->n_children)
			return NULL;
		*ret_idx = f->i;
		return n->children[f->i++];
	}
	for (;;) {
		while (f->i < n->n_children) {
			const struct nix_node *c = n->children[f->i];

			*ret_idx = f->i++;
			if (binding_is_dynamic(c) != f->pass) {
				f->dynamic |= !f->pass;
				continue;
			}
			return c;
		}
		if (f->pass || !f->dynamic)
			return NULL;
		f->pass = true;
		f->i = 0;
	}
}

static int check_scopes(struct parser *P, const struct nix_node *root)
{
	struct scope S = { 0 };
	struct walk_frame *st = NULL;
	size_t n_st = 0, cap_st = 0;
	int r = 0;

	for (size_t i = 0; i < WS_ARRAY_SIZE(base_env); i++) {
		r = scope_push(&S, base_env[i], (uint32_t)strlen(base_env[i]));
		if (r < 0)
			goto out;
	}
	S.n_stack = 0; /* the base environment is never popped */

	cap_st = 64;
	st = malloc(cap_st * sizeof(*st));
	if (!st) {
		r = -ENOMEM;
		goto out;
	}
	st[n_st++] = (struct walk_frame){ .n = root, .scope_mark = SIZE_MAX };
	while (n_st) {
		struct walk_frame *f = &st[n_st - 1];
		const struct nix_node *n = f->n, *c;
		size_t child_idx;

		c = walk_next(f, &child_idx);
		if (!c) {
			if (f->scope_mark != SIZE_MAX)
				scope_pop_to(&S, f->scope_mark);
			n_st--;
			continue;
		}
		if (!child_is_expr(n->kind, child_idx, c) || (c->flags & NF_LENIENT))
			continue;
		if (c->kind == NIX_NODE_IDENT) {
			r = check_var(P, &S, c);
			if (r < 0)
				goto out;
			continue;
		}
		if (c->kind == NIX_NODE_INHERIT && n->kind == NIX_NODE_ATTRSET && !(n->flags & NF_REC)) {
			r = check_inherit_names(P, &S, c);
			if (r < 0)
				goto out;
		}
		if (!(c->flags & NF_CHECK))
			continue; /* no variable inside, nor a scope that checks an inherit */
		if (n_st == cap_st) {
			struct walk_frame *t = realloc(st, cap_st * 2 * sizeof(*st));

			if (!t) {
				r = -ENOMEM;
				goto out;
			}
			st = t;
			cap_st *= 2;
		}
		st[n_st] = (struct walk_frame){ .n = c, .scope_mark = SIZE_MAX };
		if (is_scoping(P, c)) {
			st[n_st].scope_mark = S.n_stack;
			r = bind_names(P, &S, c);
			if (r < 0)
				goto out;
		}
		n_st++;
	}
out:
	if (r == -ENOMEM)
		fail_at(P, 0, "out of memory");
	free(st);
	free(S.slots);
	free(S.stack);
	return r;
}

/* ---- the public face --------------------------------------------------------------------- */

int nix_tree_parse(const char *src, size_t len, const char *filename, struct nix_tree **ret_tree,
		   struct ws_err *err)
{
	struct nix_lex lx;
	struct parser P = { .src = src, .len = (uint32_t)len, .filename = filename ? filename : "",
			    .err = err, .glr_empty_set_next = SIZE_MAX };
	struct tree_priv *t;
	struct nix_node *root = NULL;
	int r;

	if (len >= UINT32_MAX - 4)
		return ws_fail(err, -EFBIG, WS_E_CONFIG_UNPARSABLE, "'%s' is too large to parse",
			       P.filename);
	t = tree_alloc(len);
	if (!t)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	r = nix_lex_run(src, len, t->toks, &lx);
	if (r < 0) {
		tree_free(t);
		return ws_fail(err, r, 0, "cannot lex '%s': %s", P.filename, strerror(-r));
	}
	P.toks = lx.toks;
	P.n_toks = lx.n;
	P.lx = &lx;
	P.arena = &t->arena;
	skip_to_significant(&P);

	if (parse_expr(&P)) {
		if (peek_kind(&P) != NIX_LTOK_EOF) {
			(void)unexpected(&P, peek_kind(&P) == NIX_LTOK_ERROR ? NULL : "end of file");
		} else {
			/* the root owns the leading and the trailing trivia */
			P.pos = P.n_toks - 1;
			flush_trivia(&P);
			root = finish(&P, NIX_NODE_ROOT, (struct mark){ 0 });
		}
	}
	if (root && !P.failed) {
		root->start = 0;
		root->end = (uint32_t)len;
		(void)check_scopes(&P, root);
	}
	free(P.scratch);
	free(P.sem.ents);
	free(P.sem.slots);
	free(P.sem.sets);
	if (P.failed || !root) {
		tree_free(t);
		return -EINVAL;
	}
	t->pub.src = src;
	t->pub.len = len;
	t->pub.root = root;
	t->n_toks = lx.n;
	*ret_tree = &t->pub;
	return 0;
}

void nix_tree_free(struct nix_tree *t)
{
	if (t)
		tree_free((struct tree_priv *)t);
}

bool nix_node_next_elem(const struct nix_tree *t, const struct nix_node *n,
			struct nix_elem_iter *it, struct nix_elem *ret_elem)
{
	const struct nix_ltok *toks = n->toks; /* the store of @t */
	uint32_t i = n->tok_start + it->tok;

	if (i >= n->tok_end)
		return false;
	if (it->child < n->n_children && n->children[it->child]->tok_start == i) {
		struct nix_node *c = n->children[it->child++];

		it->tok = c->tok_end - n->tok_start;
		*ret_elem = (struct nix_elem){ .is_node = true, .node = c };
		return true;
	}
	it->tok++;
	*ret_elem = (struct nix_elem){ .is_node = false };
	ret_elem->tok.kind = (enum nix_tok)toks[i].kind;
	ret_elem->tok.off = toks[i].off;
	ret_elem->tok.len = nix_ltok_len(&toks[i]);
	return true;
}

int nix_tree_print(const struct nix_tree *t, char **ret_buf, size_t *ret_len)
{
	/* iterative: left-nested operator chains make trees deeper than any stack */
	struct frame {
		const struct nix_node *n;
		struct nix_elem_iter it;
	} *stack = NULL;
	size_t n = 0, cap = 64, len = 0;
	char *buf = malloc(t->len + 1);
	int r = 0;

	stack = malloc(cap * sizeof(*stack));
	if (!buf || !stack) {
		r = -ENOMEM;
		goto out;
	}
	stack[n++] = (struct frame){ .n = t->root };
	while (n) {
		struct nix_elem e;

		if (!nix_node_next_elem(t, stack[n - 1].n, &stack[n - 1].it, &e)) {
			n--;
			continue;
		}
		if (!e.is_node) {
			if (e.tok.off + (size_t)e.tok.len > t->len || len + e.tok.len > t->len) {
				r = -EINVAL;
				goto out;
			}
			memcpy(buf + len, t->src + e.tok.off, e.tok.len);
			len += e.tok.len;
			continue;
		}
		if (n == cap) {
			struct frame *s2 = realloc(stack, cap * 2 * sizeof(*stack));

			if (!s2) {
				r = -ENOMEM;
				goto out;
			}
			stack = s2;
			cap *= 2;
		}
		stack[n++] = (struct frame){ .n = e.node };
	}
	buf[len] = '\0';
	*ret_buf = ws_steal(&buf);
	*ret_len = len;
out:
	free(buf);
	free(stack);
	return r;
}

struct nix_node *nix_tree_expr(const struct nix_tree *t)
{
	return nix_node_child(t->root, 0);
}

size_t nix_node_n_children(const struct nix_node *n)
{
	return n->n_children;
}

struct nix_node *nix_node_child(const struct nix_node *n, size_t i)
{
	return i < n->n_children ? n->children[i] : NULL;
}

int64_t nix_node_token(const struct nix_node *n, enum nix_tok kind)
{
	const struct nix_ltok *toks = n->toks;
	uint32_t k = 0;

	for (uint32_t i = n->tok_start; i < n->tok_end; i++) {
		if (k < n->n_children && n->children[k]->tok_start == i) {
			i = n->children[k++]->tok_end - 1; /* skip the child's tokens */
			continue;
		}
		if (toks[i].kind == kind)
			return toks[i].off;
	}
	return -1;
}

bool nix_node_is_rec(const struct nix_node *n)
{
	return n->kind == NIX_NODE_ATTRSET && (n->flags & NF_REC);
}

int nix_attr_name(const struct nix_tree *t, const struct nix_node *attr, char **ret_name)
{
	const struct tree_priv *tp = (const struct tree_priv *)t;
	const struct nix_node *s = attr;
	char *v;

	if (attr->kind == NIX_NODE_IDENT) {
		v = strndup(t->src + attr->start, attr->end - attr->start); /* one token */
		if (!v)
			return -ENOMEM;
		*ret_name = v;
		return 0;
	}
	if (attr->kind == NIX_NODE_INTERP)
		s = strip_parens(nix_node_child(attr, 0));
	if (!s || s->kind != NIX_NODE_STRING)
		return -EINVAL;
	return string_value(t->src, tp->toks, s, ret_name, NULL);
}

int nix_string_value(const struct nix_tree *t, const struct nix_node *str, char **ret_value)
{
	return string_value(t->src, ((const struct tree_priv *)t)->toks, str, ret_value, NULL);
}

char *nix_node_text(const struct nix_tree *t, const struct nix_node *n)
{
	return strndup(t->src + n->start, n->end - n->start);
}

/* Offsets where lines start (a line ends at \n, or at a \r not followed by \n, as in
 * linecol()), so that each look-up is a binary search rather than a scan from the top. */
static int build_line_starts(struct tree_priv *tp)
{
	const char *src = tp->pub.src;
	size_t len = tp->pub.len, cap = 64, n = 0;
	uint32_t *ls = malloc(cap * sizeof(*ls));

	if (!ls)
		return -ENOMEM;
	ls[n++] = 0;
	/* without a CR anywhere, only LF ends lines: let memchr() find them */
	bool lf_only = !memchr(src, '\r', len);
	for (size_t i = 0; i < len; i++) {
		if (lf_only) {
			const char *nl = memchr(src + i, '\n', len - i);

			if (!nl)
				break;
			i = (size_t)(nl - src);
		}
		if (src[i] == '\n' || (src[i] == '\r' && !(i + 1 < len && src[i + 1] == '\n'))) {
			if (n == cap) {
				uint32_t *g = realloc(ls, 2 * cap * sizeof(*ls));
				if (!g) {
					free(ls);
					return -ENOMEM;
				}
				ls = g;
				cap *= 2;
			}
			ls[n++] = (uint32_t)(i + 1);
		}
	}
	tp->line_starts = ls;
	tp->n_lines = n;
	return 0;
}

void nix_tree_linecol(const struct nix_tree *t, size_t off, int *ret_line, int *ret_col)
{
	struct tree_priv *tp = (struct tree_priv *)(uintptr_t)t; /* the table is a cache */
	size_t lo = 0, hi;

	if (!tp->line_starts && build_line_starts(tp) < 0) {
		linecol(t->src, t->len, off, ret_line, ret_col);
		return;
	}
	if (off > t->len)
		off = t->len;
	/* the last line start <= off */
	hi = tp->n_lines;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (tp->line_starts[mid] <= off)
			lo = mid;
		else
			hi = mid;
	}
	*ret_line = (int)lo + 1;
	*ret_col = (int)(off - tp->line_starts[lo]) + 1;
}

const char *nix_tok_name(enum nix_tok k)
{
	static const char *const names[NIX_TOK_COUNT] = {
		[NIX_TOK_WS] = "WS", [NIX_TOK_COMMENT] = "COMMENT", [NIX_TOK_IDENT] = "IDENT",
		[NIX_TOK_INT] = "INT", [NIX_TOK_FLOAT] = "FLOAT", [NIX_TOK_PATH] = "PATH",
		[NIX_TOK_SPATH] = "SPATH", [NIX_TOK_URI] = "URI", [NIX_TOK_STR_OPEN] = "STR_OPEN",
		[NIX_TOK_STR_CLOSE] = "STR_CLOSE", [NIX_TOK_IND_OPEN] = "IND_OPEN",
		[NIX_TOK_IND_CLOSE] = "IND_CLOSE", [NIX_TOK_STR_CONTENT] = "STR_CONTENT",
		[NIX_TOK_INTERP_OPEN] = "INTERP_OPEN", [NIX_TOK_INTERP_CLOSE] = "INTERP_CLOSE",
		[NIX_TOK_IF] = "IF", [NIX_TOK_THEN] = "THEN", [NIX_TOK_ELSE] = "ELSE",
		[NIX_TOK_ASSERT] = "ASSERT", [NIX_TOK_WITH] = "WITH", [NIX_TOK_LET] = "LET",
		[NIX_TOK_IN] = "IN", [NIX_TOK_REC] = "REC", [NIX_TOK_INHERIT] = "INHERIT",
		[NIX_TOK_OR_KW] = "OR_KW", [NIX_TOK_LBRACE] = "LBRACE", [NIX_TOK_RBRACE] = "RBRACE",
		[NIX_TOK_LBRACK] = "LBRACK", [NIX_TOK_RBRACK] = "RBRACK",
		[NIX_TOK_LPAREN] = "LPAREN", [NIX_TOK_RPAREN] = "RPAREN",
		[NIX_TOK_ASSIGN] = "ASSIGN", [NIX_TOK_SEMI] = "SEMI", [NIX_TOK_COLON] = "COLON",
		[NIX_TOK_COMMA] = "COMMA", [NIX_TOK_AT] = "AT", [NIX_TOK_ELLIPSIS] = "ELLIPSIS",
		[NIX_TOK_DOT] = "DOT", [NIX_TOK_QUESTION] = "QUESTION",
		[NIX_TOK_CONCAT] = "CONCAT", [NIX_TOK_UPDATE] = "UPDATE", [NIX_TOK_PLUS] = "PLUS",
		[NIX_TOK_MINUS] = "MINUS", [NIX_TOK_STAR] = "STAR", [NIX_TOK_SLASH] = "SLASH",
		[NIX_TOK_NOT] = "NOT", [NIX_TOK_AND] = "AND", [NIX_TOK_OR] = "OR",
		[NIX_TOK_IMPL] = "IMPL", [NIX_TOK_EQ] = "EQ", [NIX_TOK_NEQ] = "NEQ",
		[NIX_TOK_LT] = "LT", [NIX_TOK_LE] = "LE", [NIX_TOK_GT] = "GT", [NIX_TOK_GE] = "GE",
	};

	return (unsigned)k < NIX_TOK_COUNT && names[k] ? names[k] : "?";
}

const char *nix_kind_name(enum nix_kind k)
{
	static const char *const names[NIX_NODE_COUNT] = {
		[NIX_NODE_ROOT] = "ROOT", [NIX_NODE_IDENT] = "IDENT",
		[NIX_NODE_LITERAL] = "LITERAL", [NIX_NODE_PATH] = "PATH",
		[NIX_NODE_STRING] = "STRING", [NIX_NODE_INTERP] = "INTERP",
		[NIX_NODE_LIST] = "LIST", [NIX_NODE_PAREN] = "PAREN",
		[NIX_NODE_ATTRSET] = "ATTRSET", [NIX_NODE_LEGACY_LET] = "LEGACY_LET",
		[NIX_NODE_BINDING] = "BINDING", [NIX_NODE_ATTRPATH] = "ATTRPATH",
		[NIX_NODE_INHERIT] = "INHERIT", [NIX_NODE_INHERIT_FROM] = "INHERIT_FROM",
		[NIX_NODE_LET_IN] = "LET_IN", [NIX_NODE_WITH] = "WITH",
		[NIX_NODE_ASSERT] = "ASSERT", [NIX_NODE_IF] = "IF", [NIX_NODE_LAMBDA] = "LAMBDA",
		[NIX_NODE_PATTERN] = "PATTERN", [NIX_NODE_PAT_ENTRY] = "PAT_ENTRY",
		[NIX_NODE_APPLY] = "APPLY", [NIX_NODE_SELECT] = "SELECT",
		[NIX_NODE_HAS_ATTR] = "HAS_ATTR", [NIX_NODE_BINOP] = "BINOP",
		[NIX_NODE_UNARY] = "UNARY",
	};

	return (unsigned)k < NIX_NODE_COUNT && names[k] ? names[k] : "?";
}

int nix_check_buffer(const char *src, size_t len, const char *filename, struct ws_err *err)
{
	struct nix_tree *t = NULL;
	int r = nix_tree_parse(src, len, filename, &t, err);

	nix_tree_free(t);
	return r;
}

/* Iterative: the trees of long operator chains are deep. */
int nix_tree_check(const struct nix_tree *t, size_t *ret_off)
{
	const struct nix_node **stack;
	size_t n = 0, cap = 256;
	size_t bad = SIZE_MAX;

	if (t->root->parent || t->root->start != 0 || t->root->end != t->len ||
	    nix_node_n_children(t->root) != 1) {
		bad = 0;
		goto out_nostack;
	}
	stack = malloc(cap * sizeof(*stack));
	if (!stack)
		return -ENOMEM;
	stack[n++] = t->root;
	while (n && bad == SIZE_MAX) {
		const struct nix_node *nd = stack[--n];
		struct nix_elem_iter it = { 0 };
		struct nix_elem e;
		uint32_t at = nd->start;
		size_t n_elems = 0, n_children = 0;

		if (nd->end < nd->start) {
			bad = nd->start;
			break;
		}
		while (bad == SIZE_MAX && nix_node_next_elem(t, nd, &it, &e)) {
			n_elems++;
			if (!e.is_node) {
				if (e.tok.off != at || (unsigned)e.tok.kind >= NIX_TOK_COUNT ||
				    (e.tok.len == 0 && e.tok.kind != NIX_TOK_STR_CONTENT))
					bad = at;
				at += e.tok.len;
				continue;
			}
			if (e.node->parent != nd || e.node->start != at ||
			    e.node != nix_node_child(nd, n_children++)) {
				bad = at;
				break;
			}
			at = e.node->end;
			if (n == cap) {
				const struct nix_node **grown = realloc(stack, 2 * cap * sizeof(*stack));

				if (!grown) {
					free(stack);
					return -ENOMEM;
				}
				stack = grown;
				cap *= 2;
			}
			stack[n++] = e.node;
		}
		if (bad == SIZE_MAX && (n_elems == 0 || at != nd->end ||
					n_children != nix_node_n_children(nd) ||
					nix_node_child(nd, n_children)))
			bad = nd->start;
	}
	free(stack);
out_nostack:
	if (bad == SIZE_MAX)
		return 0;
	if (ret_off)
		*ret_off = bad;
	return -EPROTO;
}
