/* SPDX-License-Identifier: MIT */
/* The Nix lexer: one pass over the buffer with a stack of start conditions, as Nix 2.8's
 * flex lexer has (DEFAULT, STRING, IND_STRING, INPATH, INPATH_SLASH), picking the longest
 * match among the rules that can start at each byte. It produces tokens only; what they
 * mean (numbers, escapes) is the parser's business. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "nix_lex.h"

#define HUGE_ARRAY (2 * 1024 * 1024)

enum lex_mode {
	M_INITIAL,      /* bottom of the stack: a stray '}' does not pop it */
	M_BRACE,        /* DEFAULT pushed by '{' */
	M_INTERP,       /* DEFAULT pushed by '${': its '}' closes the interpolation */
	M_STRING,
	M_IND,
	M_INPATH,
	M_INPATH_SLASH,
};

struct lexer {
	const char *s;
	uint32_t len, p;
	struct nix_lex *lx;
	size_t cap;
	uint8_t *modes; /* owned */
	/* Scans that failed, so that runs are not rescanned from every byte (which would be
	 * quadratic): no PATH or PATH_SEG starts before path_fail_end, no URI before
	 * uri_fail_end, and no block comment closes after comment_fail_from. */
	uint32_t path_fail_end, uri_fail_end, comment_fail_from;
	size_t n_modes, cap_modes;
};

/* Character classes of the lexer's regular expressions, one bit each. */
enum { C_ALPHA = 1, C_DIGIT = 2, C_ID = 4, C_PATH = 8, C_URI = 16 };

static uint8_t cclass[256];

static void cclass_init(void)
{
	if (cclass['a'])
		return;
	for (int c = 0; c < 256; c++) {
		uint8_t m = 0;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
			m |= C_ALPHA | C_ID | C_PATH | C_URI;
		if (c >= '0' && c <= '9')
			m |= C_DIGIT | C_ID | C_PATH | C_URI;
		if (c == '_' || c == '\'' || c == '-')
			m |= C_ID;
		if (c == '.' || c == '_' || c == '-' || c == '+')
			m |= C_PATH;
		if (c && strchr("%/?:@&=+$,-_.!~*'", c))
			m |= C_URI;
		cclass[c] = m;
	}
}

static inline bool is_alpha(unsigned char c)
{
	return cclass[c] & C_ALPHA;
}

static inline bool is_digit(unsigned char c)
{
	return cclass[c] & C_DIGIT;
}

static inline bool is_id_start(unsigned char c)
{
	return (cclass[c] & C_ALPHA) || c == '_';
}

static inline bool is_id_char(unsigned char c)
{
	return cclass[c] & C_ID;
}

static inline bool is_path_char(unsigned char c)
{
	return cclass[c] & C_PATH;
}

static inline bool is_uri_char(unsigned char c)
{
	return cclass[c] & C_URI;
}

/* The byte at @i, or 0 past the end (no rule matches a NUL except ANY, checked apart). */
static inline unsigned char at(const struct lexer *L, uint32_t i)
{
	return i < L->len ? (unsigned char)L->s[i] : 0;
}

static int push_tok(struct lexer *L, int kind, uint32_t off, uint32_t len, uint8_t flags)
{
	struct nix_lex *lx = L->lx;

	if (lx->n == L->cap) {
		size_t ncap = L->cap * 2;
		struct nix_ltok *t = realloc(lx->toks, ncap * sizeof(*t));

		if (!t)
			return -ENOMEM;
		lx->toks = t;
		L->cap = ncap;
	}
	lx->toks[lx->n++] = (struct nix_ltok){ .off = off, .len = len, .kind = (uint8_t)kind,
					       .flags = flags };
	return 0;
}

static int push_mode(struct lexer *L, enum lex_mode m)
{
	if (L->n_modes == L->cap_modes) {
		size_t ncap = L->cap_modes * 2;
		uint8_t *t = realloc(L->modes, ncap);

		if (!t)
			return -ENOMEM;
		L->modes = t;
		L->cap_modes = ncap;
	}
	L->modes[L->n_modes++] = (uint8_t)m;
	return 0;
}

static inline enum lex_mode top(const struct lexer *L)
{
	return (enum lex_mode)L->modes[L->n_modes - 1];
}

/* {PATH}: PATH_CHAR* ('/' PATH_CHAR+)+ '/'?  Returns its length at @i, or 0. */
static uint32_t match_path(const struct lexer *L, uint32_t i)
{
	uint32_t j = i;
	int segs = 0;

	while (is_path_char(at(L, j)))
		j++;
	while (at(L, j) == '/' && is_path_char(at(L, j + 1))) {
		j += 2;
		while (is_path_char(at(L, j)))
			j++;
		segs++;
	}
	if (!segs)
		return 0;
	if (at(L, j) == '/')
		j++;
	return j - i;
}

/* {PATH_SEG}: PATH_CHAR* '/'.  Returns its length at @i, or 0. */
static uint32_t match_path_seg(const struct lexer *L, uint32_t i)
{
	uint32_t j = i;

	while (is_path_char(at(L, j)))
		j++;
	return at(L, j) == '/' ? j + 1 - i : 0;
}

/* {HPATH}: '~' ('/' PATH_CHAR+)+ '/'? */
static uint32_t match_hpath(const struct lexer *L, uint32_t i)
{
	uint32_t j = i + 1;
	int segs = 0;

	if (at(L, i) != '~')
		return 0;
	while (at(L, j) == '/' && is_path_char(at(L, j + 1))) {
		j += 2;
		while (is_path_char(at(L, j)))
			j++;
		segs++;
	}
	if (!segs)
		return 0;
	if (at(L, j) == '/')
		j++;
	return j - i;
}

/* {SPATH}: '<' PATH_CHAR+ ('/' PATH_CHAR+)* '>' */
static uint32_t match_spath(const struct lexer *L, uint32_t i)
{
	uint32_t j = i + 1;

	if (!is_path_char(at(L, j)))
		return 0;
	for (;;) {
		while (is_path_char(at(L, j)))
			j++;
		if (at(L, j) == '/' && is_path_char(at(L, j + 1))) {
			j++;
			continue;
		}
		break;
	}
	return at(L, j) == '>' ? j + 1 - i : 0;
}

/* {URI}: ALPHA [ALNUM+-.]* ':' URI_CHAR+ */
static uint32_t match_uri(struct lexer *L, uint32_t i)
{
	uint32_t j = i + 1, k;

	if (!is_alpha(at(L, i)) || i < L->uri_fail_end)
		return 0;
	while (is_alpha(at(L, j)) || is_digit(at(L, j)) || at(L, j) == '+' || at(L, j) == '-' ||
	       at(L, j) == '.')
		j++;
	if (at(L, j) != ':') {
		L->uri_fail_end = j; /* every start inside this run stops at the same byte */
		return 0;
	}
	k = j + 1;
	while (is_uri_char(at(L, k)))
		k++;
	if (k == j + 1)
		L->uri_fail_end = j;
	return k > j + 1 ? k - i : 0;
}

/* {FLOAT}: (([1-9][0-9]*\.[0-9]*)|(0?\.[0-9]+))([Ee][+-]?[0-9]+)? */
static uint32_t match_float(const struct lexer *L, uint32_t i)
{
	uint32_t j = i;

	if (at(L, j) >= '1' && at(L, j) <= '9') {
		while (is_digit(at(L, j)))
			j++;
		if (at(L, j) != '.')
			return 0;
		j++;
		while (is_digit(at(L, j)))
			j++;
	} else {
		if (at(L, j) == '0')
			j++;
		if (at(L, j) != '.' || !is_digit(at(L, j + 1)))
			return 0;
		j++;
		while (is_digit(at(L, j)))
			j++;
	}
	if (at(L, j) == 'e' || at(L, j) == 'E') {
		uint32_t k = j + 1;

		if (at(L, k) == '+' || at(L, k) == '-')
			k++;
		if (is_digit(at(L, k))) {
			while (is_digit(at(L, k)))
				k++;
			j = k;
		}
	}
	return j - i;
}

static int ident_kind(const char *s, uint32_t n)
{
#define KW(w, k)                                                                                   \
	if (n == sizeof(w) - 1 && memcmp(s, w, n) == 0)                                            \
		return k;
	switch (s[0]) {
	case 'a': KW("assert", NIX_TOK_ASSERT) break;
	case 'e': KW("else", NIX_TOK_ELSE) break;
	case 'i':
		KW("if", NIX_TOK_IF)
		KW("in", NIX_TOK_IN)
		KW("inherit", NIX_TOK_INHERIT)
		break;
	case 'l': KW("let", NIX_TOK_LET) break;
	case 'o': KW("or", NIX_TOK_OR_KW) break;
	case 'r': KW("rec", NIX_TOK_REC) break;
	case 't': KW("then", NIX_TOK_THEN) break;
	case 'w': KW("with", NIX_TOK_WITH) break;
	default: break;
	}
#undef KW
	return NIX_TOK_IDENT;
}

/* Two-byte operators of the DEFAULT state. */
static int op2_kind(unsigned char a, unsigned char b)
{
	switch (a) {
	case '=': return b == '=' ? NIX_TOK_EQ : -1;
	case '!': return b == '=' ? NIX_TOK_NEQ : -1;
	case '<': return b == '=' ? NIX_TOK_LE : -1;
	case '>': return b == '=' ? NIX_TOK_GE : -1;
	case '&': return b == '&' ? NIX_TOK_AND : -1;
	case '|': return b == '|' ? NIX_TOK_OR : -1;
	case '-': return b == '>' ? NIX_TOK_IMPL : -1;
	case '/': return b == '/' ? NIX_TOK_UPDATE : -1;
	case '+': return b == '+' ? NIX_TOK_CONCAT : -1;
	default: return -1;
	}
}

static int op1_kind(unsigned char c)
{
	switch (c) {
	case '[': return NIX_TOK_LBRACK;
	case ']': return NIX_TOK_RBRACK;
	case '(': return NIX_TOK_LPAREN;
	case ')': return NIX_TOK_RPAREN;
	case '=': return NIX_TOK_ASSIGN;
	case ';': return NIX_TOK_SEMI;
	case ':': return NIX_TOK_COLON;
	case ',': return NIX_TOK_COMMA;
	case '@': return NIX_TOK_AT;
	case '.': return NIX_TOK_DOT;
	case '?': return NIX_TOK_QUESTION;
	case '+': return NIX_TOK_PLUS;
	case '-': return NIX_TOK_MINUS;
	case '*': return NIX_TOK_STAR;
	case '/': return NIX_TOK_SLASH;
	case '!': return NIX_TOK_NOT;
	case '<': return NIX_TOK_LT;
	case '>': return NIX_TOK_GT;
	default: return -1;
	}
}

static void set_error(struct lexer *L, const char *msg, uint32_t off)
{
	L->lx->msg = msg;
	L->lx->err_off = off;
}

/* Where Nix reports something found at the end of the input: its lexer leaves the location
 * on the last token it matched (white space and comments included). */
static uint32_t eof_off(const struct lexer *L)
{
	return L->lx->n ? L->lx->toks[L->lx->n - 1].off : 0;
}

/* One token in a DEFAULT state. */
static int lex_default(struct lexer *L)
{
	uint32_t p = L->p, best = 0;
	unsigned char c = at(L, p), d = at(L, p + 1);
	int kind = -1, r;

	/* trivia */
	if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
		uint32_t j = p + 1;

		while (j < L->len && (L->s[j] == ' ' || L->s[j] == '\t' || L->s[j] == '\r' ||
				      L->s[j] == '\n'))
			j++;
		L->p = j;
		return push_tok(L, NIX_TOK_WS, p, j - p, 0);
	}
	if (c == '#') {
		const char *e = memchr(L->s + p, '\n', L->len - p);
		uint32_t j = e ? (uint32_t)(e - L->s) : L->len;
		const char *cr = memchr(L->s + p, '\r', j - p);

		if (cr)
			j = (uint32_t)(cr - L->s);
		L->p = j;
		return push_tok(L, NIX_TOK_COMMENT, p, j - p, 0);
	}
	if (c == '/' && d == '*') {
		/* \/\*([^*]|\*+[^*\/])*\*+\/ : the first "*" "/" after the opening ends it */
		uint32_t j = p + 2;

		if (p >= L->comment_fail_from)
			j = L->len;
		while (j + 1 < L->len && !(L->s[j] == '*' && L->s[j + 1] == '/'))
			j++;
		if (j + 1 >= L->len)
			L->comment_fail_from = p;
		if (j + 1 < L->len) {
			L->p = j + 2;
			return push_tok(L, NIX_TOK_COMMENT, p, j + 2 - p, 0);
		}
		/* unterminated: no comment rule matches; fall through to '/' */
	}

	/* strings and interpolation */
	if (c == '"') {
		L->p = p + 1;
		r = push_mode(L, M_STRING);
		return r < 0 ? r : push_tok(L, NIX_TOK_STR_OPEN, p, 1, 0);
	}
	if (c == '\'' && d == '\'') {
		uint32_t j = p + 2;

		/* \'\'(\ *\n)? */
		while (at(L, j) == ' ')
			j++;
		j = at(L, j) == '\n' ? j + 1 : p + 2;
		L->p = j;
		r = push_mode(L, M_IND);
		return r < 0 ? r : push_tok(L, NIX_TOK_IND_OPEN, p, j - p, 0);
	}
	if (c == '$' && d == '{') {
		L->p = p + 2;
		r = push_mode(L, M_INTERP);
		return r < 0 ? r : push_tok(L, NIX_TOK_INTERP_OPEN, p, 2, 0);
	}
	if (c == '{') {
		L->p = p + 1;
		r = push_mode(L, M_BRACE);
		return r < 0 ? r : push_tok(L, NIX_TOK_LBRACE, p, 1, 0);
	}
	if (c == '}') {
		enum lex_mode m = top(L);

		if (m != M_INITIAL)
			L->n_modes--;
		L->p = p + 1;
		return push_tok(L, m == M_INTERP ? NIX_TOK_INTERP_CLOSE : NIX_TOK_RBRACE, p, 1, 0);
	}

	/* the longest of the word-like rules; ties go to the earlier rule */
	if (is_id_start(c)) {
		uint32_t j = p + 1;

		while (is_id_char(at(L, j)))
			j++;
		best = j - p;
		kind = ident_kind(L->s + p, best);
	}
	if (is_digit(c)) {
		uint32_t j = p + 1;

		while (is_digit(at(L, j)))
			j++;
		if (j - p > best) {
			best = j - p;
			kind = NIX_TOK_INT;
		}
	}
	if (is_digit(c) || c == '.') {
		uint32_t n = match_float(L, p);

		if (n > best) {
			best = n;
			kind = NIX_TOK_FLOAT;
		}
	}
	if (c == '.' && d == '.' && at(L, p + 2) == '.' && best < 3) {
		best = 3;
		kind = NIX_TOK_ELLIPSIS;
	}
	if (best < 2 && op2_kind(c, d) >= 0) {
		best = 2;
		kind = op2_kind(c, d);
	}
	if (is_path_char(c) || c == '/') {
		uint32_t seg = 0, n = 0, run = p;

		if (p >= L->path_fail_end) {
			while (is_path_char(at(L, run)))
				run++;
			seg = at(L, run) == '/' ? run + 1 - p : 0;
			n = match_path(L, p);
		}

		/* {PATH_SEG}\$\{ : the path continues with an interpolation */
		if (seg && at(L, p + seg) == '$' && at(L, p + seg + 1) == '{' && seg + 2 > best &&
		    seg + 2 > n) {
			L->p = p + seg;
			r = push_mode(L, M_INPATH_SLASH);
			return r < 0 ? r : push_tok(L, NIX_TOK_PATH, p, seg, 0);
		}
		if (n > best) {
			L->p = p + n;
			r = push_mode(L, L->s[p + n - 1] == '/' ? M_INPATH_SLASH : M_INPATH);
			return r < 0 ? r : push_tok(L, NIX_TOK_PATH, p, n, 0);
		}
		/* no path here, nor from anywhere inside this run of PATH_CHARs: they all end
		 * at the same byte */
		if (run > L->path_fail_end)
			L->path_fail_end = run;
	}
	if (c == '~') {
		uint32_t n = match_hpath(L, p);

		if (d == '/' && at(L, p + 2) == '$' && at(L, p + 3) == '{' && n < 4) {
			L->p = p + 2;
			r = push_mode(L, M_INPATH_SLASH);
			return r < 0 ? r : push_tok(L, NIX_TOK_PATH, p, 2, 0);
		}
		if (n) {
			L->p = p + n;
			r = push_mode(L, L->s[p + n - 1] == '/' ? M_INPATH_SLASH : M_INPATH);
			return r < 0 ? r : push_tok(L, NIX_TOK_PATH, p, n, 0);
		}
	}
	if (c == '<') {
		uint32_t n = match_spath(L, p);

		if (n > best) {
			best = n;
			kind = NIX_TOK_SPATH;
		}
	}
	if (is_alpha(c)) {
		uint32_t n = match_uri(L, p);

		if (n > best) {
			best = n;
			kind = NIX_TOK_URI;
		}
	}
	if (kind < 0) {
		kind = op1_kind(c);
		best = 1;
		if (kind < 0)
			kind = NIX_LTOK_BAD;
	}
	L->p = p + best;
	return push_tok(L, kind, p, best, 0);
}

/* Literal text of a "..." string, up to '"' or '${' (escapes kept as written). */
static int lex_string(struct lexer *L)
{
	uint32_t p = L->p, j = p;
	unsigned char c;
	int r;

	if (at(L, p) == '"') {
		L->n_modes--;
		L->p = p + 1;
		return push_tok(L, NIX_TOK_STR_CLOSE, p, 1, 0);
	}
	if (at(L, p) == '$' && at(L, p + 1) == '{') {
		L->p = p + 2;
		r = push_mode(L, M_INTERP);
		return r < 0 ? r : push_tok(L, NIX_TOK_INTERP_OPEN, p, 2, 0);
	}
	while (j < L->len) {
		c = (unsigned char)L->s[j];
		if (c == '"')
			break;
		if (c == '\\') {
			j += j + 1 < L->len ? 2 : 1;
			continue;
		}
		if (c == '$') {
			unsigned char d = at(L, j + 1);

			if (j + 1 >= L->len || d == '"') {
				j++;
				break;
			}
			if (d == '{')
				break;
			if (d == '\\') {
				/* \$\\{ANY} */
				j += j + 2 < L->len ? 3 : 2;
				continue;
			}
			j += 2; /* \$[^{"\\]: "$$" is two literal dollars */
			continue;
		}
		j++;
	}
	L->p = j;
	return push_tok(L, NIX_TOK_STR_CONTENT, p, j - p, 0);
}

/* Literal text of a ''...'' string, escapes ('''  ''$  ''\x) included. */
static int lex_ind(struct lexer *L)
{
	uint32_t p = L->p, j = p;
	int r;

	if (at(L, p) == '$' && at(L, p + 1) == '{') {
		L->p = p + 2;
		r = push_mode(L, M_INTERP);
		return r < 0 ? r : push_tok(L, NIX_TOK_INTERP_OPEN, p, 2, 0);
	}
	if (at(L, p) == '\'' && at(L, p + 1) == '\'') {
		unsigned char e = at(L, p + 2);

		if (!(e == '$' || e == '\'' || (e == '\\' && p + 3 < L->len))) {
			L->n_modes--;
			L->p = p + 2;
			return push_tok(L, NIX_TOK_IND_CLOSE, p, 2, 0);
		}
	}
	while (j < L->len) {
		unsigned char c = (unsigned char)L->s[j];

		if (c == '$') {
			unsigned char d = at(L, j + 1);

			if (d == '{')
				break;
			/* \$[^{'] takes the next byte too, so "$${" stays literal */
			j += (j + 1 < L->len && d != '\'') ? 2 : 1;
			continue;
		}
		if (c == '\'') {
			if (at(L, j + 1) == '\'') {
				unsigned char e = at(L, j + 2);

				if (e == '$' || e == '\'') {
					j += 3;
					continue;
				}
				if (e == '\\' && j + 3 < L->len) {
					j += 4;
					continue;
				}
				break;
			}
			j++;
			continue;
		}
		j++;
	}
	L->p = j;
	return push_tok(L, NIX_TOK_STR_CONTENT, p, j - p, 0);
}

/* Inside a path after a piece: another piece, an interpolation, or the end of the path. */
static int lex_inpath(struct lexer *L, bool *ret_done)
{
	uint32_t p = L->p, n, m;
	int r;

	*ret_done = true;
	if (at(L, p) == '$' && at(L, p + 1) == '{') {
		L->modes[L->n_modes - 1] = M_INPATH;
		L->p = p + 2;
		r = push_mode(L, M_INTERP);
		return r < 0 ? r : push_tok(L, NIX_TOK_INTERP_OPEN, p, 2, NIX_LF_INPATH);
	}
	/* {PATH}|{PATH_SEG}|{PATH_CHAR}+ */
	n = match_path(L, p);
	m = match_path_seg(L, p);
	if (m > n)
		n = m;
	for (m = p; is_path_char(at(L, m)); m++)
		;
	if (m - p > n)
		n = m - p;
	if (n) {
		L->modes[L->n_modes - 1] = L->s[p + n - 1] == '/' ? M_INPATH_SLASH : M_INPATH;
		L->p = p + n;
		return push_tok(L, NIX_TOK_PATH, p, n, NIX_LF_INPATH);
	}
	if (top(L) == M_INPATH_SLASH) {
		set_error(L, "path has a trailing slash", p < L->len ? p : eof_off(L));
		return push_tok(L, NIX_LTOK_ERROR, p, 0, 0);
	}
	L->n_modes--;
	*ret_done = false; /* the byte is lexed again in the state below */
	return 0;
}

int nix_lex_run(const char *src, size_t len, struct nix_lex *lx)
{
	struct lexer L = { .s = src, .len = (uint32_t)len, .lx = lx };
	int r = 0;

	if (len >= UINT32_MAX - 4)
		return -EFBIG;
	*lx = (struct nix_lex){ 0 };
	cclass_init();
	L.cap = len + 2; /* a token has at least one byte: no growth; untouched pages cost nothing */
	if (L.cap * sizeof(*lx->toks) >= HUGE_ARRAY) {
		/* big inputs: fewer page faults with transparent huge pages */
		size_t bytes = (L.cap * sizeof(*lx->toks) + HUGE_ARRAY - 1) & ~(size_t)(HUGE_ARRAY - 1);

		lx->toks = aligned_alloc(HUGE_ARRAY, bytes);
		if (lx->toks)
			(void)madvise(lx->toks, bytes, MADV_HUGEPAGE);
	} else {
		lx->toks = malloc(L.cap * sizeof(*lx->toks));
	}
	L.cap_modes = 64;
	L.modes = malloc(L.cap_modes);
	if (!lx->toks || !L.modes) {
		r = -ENOMEM;
		goto out;
	}
	L.modes[L.n_modes++] = M_INITIAL;
	L.comment_fail_from = UINT32_MAX;

	if (len >= 3 && memcmp(src, "\xef\xbb\xbf", 3) == 0) {
		set_error(&L, "the file starts with a UTF-8 byte-order mark, which Nix does not "
			      "accept", 0);
		r = push_tok(&L, NIX_LTOK_ERROR, 0, 0, 0);
		goto out;
	}
	while (L.p < L.len) {
		enum lex_mode m = top(&L);
		bool done;

		switch (m) {
		case M_STRING:
			r = lex_string(&L);
			break;
		case M_IND:
			r = lex_ind(&L);
			break;
		case M_INPATH:
		case M_INPATH_SLASH:
			r = lex_inpath(&L, &done);
			if (r < 0)
				goto out;
			if (!done)
				continue;
			if (lx->n && lx->toks[lx->n - 1].kind == NIX_LTOK_ERROR)
				goto out;
			break;
		default:
			r = lex_default(&L);
			break;
		}
		if (r < 0)
			goto out;
	}
	if (top(&L) == M_INPATH_SLASH) {
		set_error(&L, "path has a trailing slash", eof_off(&L));
		r = push_tok(&L, NIX_LTOK_ERROR, L.len, 0, 0);
		goto out;
	}
	lx->eof_in_path = top(&L) == M_INPATH;
	r = push_tok(&L, NIX_LTOK_EOF, L.len, 0, 0);
out:
	free(L.modes);
	if (r < 0)
		nix_lex_clear(lx);
	return r;
}

void nix_lex_clear(struct nix_lex *lx)
{
	free(lx->toks);
	*lx = (struct nix_lex){ 0 };
}
