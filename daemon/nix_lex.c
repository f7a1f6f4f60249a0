/* SPDX-License-Identifier: MIT */
/* The Nix lexer: one pass over the buffer with a stack of start conditions, as Nix 2.8's
 * flex lexer has (DEFAULT, STRING, IND_STRING, INPATH, INPATH_SLASH), picking the longest
 * match among the rules that can start at each byte. It produces tokens only; what they
 * mean (numbers, escapes) is the parser's business. The common tokens (blanks,
 * punctuation, identifiers) take a short path through a character-class table, and go
 * straight into the caller's array, which has room for the most tokens possible. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "nix_lex.h"

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
	struct nix_ltok *toks; /* lx->toks, room for nix_lex_max_toks(len) */
	size_t n;              /* tokens so far (lx->n once done) */
	uint8_t *modes; /* owned */
	/* Scans that failed, so that runs are not rescanned from every byte (which would be
	 * quadratic): no PATH or PATH_SEG starts before path_fail_end, no URI before
	 * uri_fail_end, and no block comment closes after comment_fail_from. */
	uint32_t path_fail_end, uri_fail_end, comment_fail_from;
	size_t n_modes, cap_modes;
};

/* Character classes of the lexer's regular expressions, one bit each, and two for the
 * short paths of lex_default(). A constant table: parses run on several threads. */
enum {
	C_ALPHA = 1,
	C_DIGIT = 2,
	C_ID = 4,
	C_PATH = 8,
	C_URI = 16,
	C_WS = 32,     /* white space */
	C_PUNCT = 64,  /* a one-byte token that no longer rule can start with */
	C_IDSLOW = 128 /* after an identifier, may make it a path or a URI instead */
};

#define C_ALNUM (C_ID | C_PATH | C_URI)

static const uint8_t cclass[256] = {
	['a' ... 'z'] = C_ALPHA | C_ALNUM,
	['A' ... 'Z'] = C_ALPHA | C_ALNUM,
	['0' ... '9'] = C_DIGIT | C_ALNUM,
	['_'] = C_ID | C_PATH | C_URI,
	['-'] = C_ID | C_PATH | C_URI,
	['\''] = C_ID | C_URI,
	['.'] = C_PATH | C_URI | C_IDSLOW,
	['+'] = C_PATH | C_URI | C_IDSLOW,
	['/'] = C_URI | C_IDSLOW,
	[':'] = C_URI | C_IDSLOW | C_PUNCT,
	['?'] = C_URI | C_PUNCT,
	['@'] = C_URI | C_PUNCT,
	[','] = C_URI | C_PUNCT,
	['*'] = C_URI | C_PUNCT,
	['%'] = C_URI,
	['&'] = C_URI,
	['='] = C_URI,
	['$'] = C_URI,
	['!'] = C_URI,
	['~'] = C_URI,
	[';'] = C_PUNCT,
	['('] = C_PUNCT,
	[')'] = C_PUNCT,
	['['] = C_PUNCT,
	[']'] = C_PUNCT,
	[' '] = C_WS,
	['\t'] = C_WS,
	['\r'] = C_WS,
	['\n'] = C_WS,
};

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

/* The array has room for every token (each but the last takes at least one byte). */
static inline void push_tok(struct lexer *L, int kind, uint32_t off, uint8_t flags)
{
	L->toks[L->n++] = (struct nix_ltok){ .off = off, .kind = (uint8_t)kind, .flags = flags };
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
	return L->n ? L->toks[L->n - 1].off : 0;
}

/* Ends the current token at @end: it is @kind and starts at @off. */
static inline int emit(struct lexer *L, int kind, uint32_t off, uint32_t end)
{
	push_tok(L, kind, off, 0);
	L->p = end;
	return 0;
}

/* Ends a token that enters start condition @m. */
static int emit_push(struct lexer *L, int kind, uint32_t off, uint32_t end, enum lex_mode m,
		     uint8_t flags)
{
	int r = push_mode(L, m);

	if (r < 0)
		return r;
	push_tok(L, kind, off, flags);
	L->p = end;
	return 0;
}

/* The common tokens of a DEFAULT state, as many as come in a row: blanks, one-byte
 * punctuation, '=', identifiers and keywords, braces that keep the state DEFAULT, a '.'
 * that can only be DOT, and strings without escapes or interpolation (any other string
 * ends the run in the STRING state). One tight loop with the position and the next token
 * in locals (a byte store may alias anything else). Returns 1 when the next byte needs
 * lex_default(), 0 when the input ended or the start condition changed, or -ENOMEM. */
static int lex_default_run(struct lexer *L)
{
	const char *s = L->s;
	const uint32_t len = L->len;
	struct nix_ltok *t = L->toks + L->n;
	uint32_t p = L->p;
	int ret = 0;

	while (p < len) {
		unsigned char c = (unsigned char)s[p];
		uint8_t cl = cclass[c];
		uint32_t j = p + 1;
		int kind;

		if (cl & C_WS) {
			while (j < len && (cclass[(unsigned char)s[j]] & C_WS))
				j++;
			kind = NIX_TOK_WS;
		} else if (cl & C_PUNCT) {
			kind = op1_kind(c);
		} else if (c == '=') {
			kind = NIX_TOK_ASSIGN;
			if (j < len && s[j] == '=') {
				kind = NIX_TOK_EQ;
				j++;
			}
		} else if (is_id_start(c)) {
			unsigned char e;

			while (j < len && is_id_char((unsigned char)s[j]))
				j++;
			e = j < len ? (unsigned char)s[j] : 0;
			/* Only '.', '+', '/' or ':' can extend an identifier into a path or a URI
			 * (its other bytes end both), and after '.' or '+' only when the run of
			 * PATH_CHARs then meets '/' or ':'. Otherwise it is the longest match. */
			if (cclass[e] & C_IDSLOW) {
				uint32_t k = j;

				if (e == '/' || e == ':') {
					ret = 1;
					break;
				}
				while (k < len && is_path_char((unsigned char)s[k]))
					k++;
				if (k < len && (s[k] == '/' || s[k] == ':')) {
					ret = 1;
					break;
				}
				/* no path starts inside this run either */
				if (k > L->path_fail_end)
					L->path_fail_end = k;
			}
			kind = ident_kind(s + p, j - p);
		} else if (c == '{') {
			if (push_mode(L, M_BRACE) < 0) {
				ret = -ENOMEM;
				break;
			}
			kind = NIX_TOK_LBRACE;
		} else if (c == '}' && top(L) != M_INTERP) {
			if (top(L) == M_BRACE)
				L->n_modes--; /* back to the DEFAULT state that opened it */
			kind = NIX_TOK_RBRACE;
		} else if (c == '.' && p < L->path_fail_end && j < len && s[j] != '.' &&
			   !is_digit((unsigned char)s[j])) {
			/* no float, no ellipsis, and no path starts here */
			kind = NIX_TOK_DOT;
		} else if (c == '"') {
			uint32_t q = j;

			while (q < len && s[q] != '"' && s[q] != '\\' && s[q] != '$')
				q++;
			if (q < len && s[q] == '"') {
				/* plain text up to the closing quote: what lex_string() makes of it */
				*t++ = (struct nix_ltok){ .off = p, .kind = NIX_TOK_STR_OPEN };
				if (q > j)
					*t++ = (struct nix_ltok){ .off = j, .kind = NIX_TOK_STR_CONTENT };
				p = q;
				j = q + 1;
				kind = NIX_TOK_STR_CLOSE;
			} else {
				/* escapes, interpolation or no end: lex_string() takes over */
				if (push_mode(L, M_STRING) < 0) {
					ret = -ENOMEM;
					break;
				}
				*t++ = (struct nix_ltok){ .off = p, .kind = NIX_TOK_STR_OPEN };
				p = j;
				break;
			}
		} else {
			ret = 1;
			break;
		}
		*t++ = (struct nix_ltok){ .off = p, .kind = (uint8_t)kind };
		p = j;
	}
	L->n = (size_t)(t - L->toks);
	L->p = p;
	return ret;
}

/* One token in a DEFAULT state: every rule, longest match. */
static int lex_default(struct lexer *L)
{
	const char *s = L->s;
	uint32_t p = L->p, best = 0;
	unsigned char c = (unsigned char)s[p], d = at(L, p + 1);
	int kind = -1;

	/* trivia */
	if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
		uint32_t j = p + 1;

		while (j < L->len && (cclass[(unsigned char)s[j]] & C_WS))
			j++;
		return emit(L, NIX_TOK_WS, p, j);
	}
	if (c == '#') {
		const char *e = memchr(s + p, '\n', L->len - p);
		uint32_t j = e ? (uint32_t)(e - s) : L->len;
		const char *cr = memchr(s + p, '\r', j - p);

		if (cr)
			j = (uint32_t)(cr - s);
		return emit(L, NIX_TOK_COMMENT, p, j);
	}
	if (c == '/' && d == '*' && p < L->comment_fail_from) {
		/* \/\*([^*]|\*+[^*\/])*\*+\/ : the first "*" "/" after the opening ends it */
		const char *q = s + p + 2, *end = s + L->len;

		while (q < end && (q = memchr(q, '*', (size_t)(end - q))) && q + 1 < end &&
		       q[1] != '/')
			q++;
		if (q && q + 1 < end)
			return emit(L, NIX_TOK_COMMENT, p, (uint32_t)(q + 2 - s));
		/* unterminated: no comment rule matches, nor will one further on; fall through
		 * to '/' */
		L->comment_fail_from = p;
	}

	/* strings and interpolation */
	if (c == '"')
		return emit_push(L, NIX_TOK_STR_OPEN, p, p + 1, M_STRING, 0);
	if (c == '\'' && d == '\'') {
		uint32_t j = p + 2;

		/* \'\'(\ *\n)? */
		while (at(L, j) == ' ')
			j++;
		j = at(L, j) == '\n' ? j + 1 : p + 2;
		return emit_push(L, NIX_TOK_IND_OPEN, p, j, M_IND, 0);
	}
	if (c == '$' && d == '{')
		return emit_push(L, NIX_TOK_INTERP_OPEN, p, p + 2, M_INTERP, 0);
	if (c == '{')
		return emit_push(L, NIX_TOK_LBRACE, p, p + 1, M_BRACE, 0);
	if (c == '}') {
		enum lex_mode m = top(L);

		if (m != M_INITIAL)
			L->n_modes--;
		return emit(L, m == M_INTERP ? NIX_TOK_INTERP_CLOSE : NIX_TOK_RBRACE, p, p + 1);
	}

	/* the longest of the word-like rules; ties go to the earlier rule */
	if (is_id_start(c)) {
		uint32_t j = p + 1;

		while (is_id_char(at(L, j)))
			j++;
		best = j - p;
		kind = ident_kind(s + p, best);
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
		    seg + 2 > n)
			return emit_push(L, NIX_TOK_PATH, p, p + seg, M_INPATH_SLASH, 0);
		if (n > best)
			return emit_push(L, NIX_TOK_PATH, p, p + n,
					 s[p + n - 1] == '/' ? M_INPATH_SLASH : M_INPATH, 0);
		/* no path here, nor from anywhere inside this run of PATH_CHARs: they all end
		 * at the same byte */
		if (run > L->path_fail_end)
			L->path_fail_end = run;
	}
	if (c == '~') {
		uint32_t n = match_hpath(L, p);

		if (d == '/' && at(L, p + 2) == '$' && at(L, p + 3) == '{' && n < 4)
			return emit_push(L, NIX_TOK_PATH, p, p + 2, M_INPATH_SLASH, 0);
		if (n)
			return emit_push(L, NIX_TOK_PATH, p, p + n,
					 s[p + n - 1] == '/' ? M_INPATH_SLASH : M_INPATH, 0);
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
	return emit(L, kind, p, p + best);
}

/* Literal text of a "..." string, up to '"' or '${' (escapes kept as written). */
static int lex_string(struct lexer *L)
{
	const char *s = L->s;
	uint32_t p = L->p, j = p;

	if (s[p] == '"') {
		L->n_modes--;
		return emit(L, NIX_TOK_STR_CLOSE, p, p + 1);
	}
	if (s[p] == '$' && at(L, p + 1) == '{')
		return emit_push(L, NIX_TOK_INTERP_OPEN, p, p + 2, M_INTERP, 0);
	while (j < L->len) {
		unsigned char c = (unsigned char)s[j], d;

		if (c != '"' && c != '\\' && c != '$') {
			j++;
			continue;
		}
		if (c == '"')
			break;
		if (c == '\\') {
			j += j + 1 < L->len ? 2 : 1;
			continue;
		}
		d = at(L, j + 1);
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
	}
	return emit(L, NIX_TOK_STR_CONTENT, p, j);
}

/* Literal text of a ''...'' string, escapes ('''  ''$  ''\x) included. */
static int lex_ind(struct lexer *L)
{
	const char *s = L->s;
	uint32_t p = L->p, j = p;

	if (s[p] == '$' && at(L, p + 1) == '{')
		return emit_push(L, NIX_TOK_INTERP_OPEN, p, p + 2, M_INTERP, 0);
	if (s[p] == '\'' && at(L, p + 1) == '\'') {
		unsigned char e = at(L, p + 2);

		if (!(e == '$' || e == '\'' || (e == '\\' && p + 3 < L->len))) {
			L->n_modes--;
			return emit(L, NIX_TOK_IND_CLOSE, p, p + 2);
		}
	}
	while (j < L->len) {
		unsigned char c = (unsigned char)s[j];

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
	return emit(L, NIX_TOK_STR_CONTENT, p, j);
}

/* Inside a path after a piece: another piece, an interpolation, or the end of the path. */
static int lex_inpath(struct lexer *L, bool *ret_done)
{
	uint32_t p = L->p, n, m;

	*ret_done = true;
	if (L->s[p] == '$' && at(L, p + 1) == '{') {
		L->modes[L->n_modes - 1] = M_INPATH;
		return emit_push(L, NIX_TOK_INTERP_OPEN, p, p + 2, M_INTERP, NIX_LF_INPATH);
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
		push_tok(L, NIX_TOK_PATH, p, NIX_LF_INPATH);
		L->p = p + n;
		return 0;
	}
	if (top(L) == M_INPATH_SLASH) {
		set_error(L, "path has a trailing slash", p < L->len ? p : eof_off(L));
		push_tok(L, NIX_LTOK_ERROR, p, 0);
		return 0;
	}
	L->n_modes--;
	*ret_done = false; /* the byte is lexed again in the state below */
	return 0;
}

int nix_lex_run(const char *src, size_t len, struct nix_ltok *toks, struct nix_lex *lx)
{
	struct lexer L = { .s = src, .len = (uint32_t)len, .lx = lx, .toks = toks };
	int r = 0;

	if (len >= UINT32_MAX - 4)
		return -EFBIG;
	*lx = (struct nix_lex){ .toks = toks };
	L.cap_modes = 64;
	L.modes = malloc(L.cap_modes);
	if (!L.modes)
		return -ENOMEM;
	L.modes[L.n_modes++] = M_INITIAL;
	L.comment_fail_from = UINT32_MAX;

	if (len >= 3 && memcmp(src, "\xef\xbb\xbf", 3) == 0) {
		set_error(&L, "the file starts with a UTF-8 byte-order mark, which Nix does not "
			      "accept", 0);
		push_tok(&L, NIX_LTOK_ERROR, 0, 0);
		goto out;
	}
	while (L.p < L.len) {
		bool done;

		switch (top(&L)) {
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
			if (L.toks[L.n - 1].kind == NIX_LTOK_ERROR)
				goto out;
			break;
		default:
			r = lex_default_run(&L);
			if (r > 0)
				r = lex_default(&L);
			break;
		}
		if (r < 0)
			goto out;
	}
	if (top(&L) == M_INPATH_SLASH) {
		set_error(&L, "path has a trailing slash", eof_off(&L));
		push_tok(&L, NIX_LTOK_ERROR, L.len, 0);
		goto out;
	}
	lx->eof_in_path = top(&L) == M_INPATH;
	push_tok(&L, NIX_LTOK_EOF, L.len, 0);
out:
	free(L.modes);
	if (r < 0)
		return r;
	/* the entry after the last token: the last one's length is 0 */
	L.toks[L.n] = (struct nix_ltok){ .off = L.toks[L.n - 1].off, .kind = NIX_LTOK_EOF };
	lx->n = L.n;
	return 0;
}
