/* SPDX-License-Identifier: MIT */
/* A small lazy evaluator over the lossless Nix tree, enough for computed workspace values:
 * literals, interpolation, let/rec/inherit scoping, lambdas and a few operators. It never
 * reads files, never imports and knows no builtins beyond toString/true/false/null: whatever
 * depends on the outside world (function arguments, `with`, other builtins) is reported as
 * "cannot evaluate", never guessed. Every allocation lives in the context's arena. */
#include "nix_eval.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nix_tree.h"
#include "ws_macros.h"

enum env_kind {
	ENV_BINDINGS, /* let / rec: bindings of @node, evaluated in this env */
	ENV_ARG,      /* plain lambda argument @name bound to @arg */
	ENV_PATTERN,  /* set pattern @node, argument @arg, defaults in this env */
	ENV_OPAQUE,   /* the parameters of lambda @node, whose argument is unknown */
	ENV_WITH,     /* names from a `with`: unknown */
};

struct thunk;

struct env {
	enum env_kind kind;
	struct env *up;
	const struct nix_node *node;
	const char *name;
	struct thunk *arg;
};

enum { BI_TOSTRING, BI_BUILTINS };

struct nix_value {
	enum nix_vkind kind;
	bool b;
	int64_t i;
	const char *s;
	const struct nix_node *node; /* ATTRS: ATTRSET; LAMBDA: LAMBDA; LIST: LIST */
	struct env *env;             /* ATTRS: where values evaluate; LAMBDA: closure */
	struct env *outer;           /* ATTRS: where a plain inherit looks */
	int builtin;
};

struct thunk {
	const struct nix_node *node;
	struct env *env;
	const struct nix_value *v;
	bool forcing;
};

struct chunk {
	struct chunk *next;
	max_align_t data[];
};

struct nix_eval {
	const struct nix_tree *t;
	struct chunk *chunks;
	unsigned long steps;
	int depth;
};

static void *ev_alloc(struct nix_eval *ev, size_t size)
{
	struct chunk *c = calloc(1, sizeof(*c) + size);

	if (!c)
		return NULL;
	c->next = ev->chunks;
	ev->chunks = c;
	return c->data;
}

static char *ev_strndup(struct nix_eval *ev, const char *s, size_t len)
{
	char *p = ev_alloc(ev, len + 1);

	if (p)
		memcpy(p, s, len);
	return p;
}

int nix_eval_new(const struct nix_tree *t, struct nix_eval **ret_ev)
{
	struct nix_eval *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return -ENOMEM;
	ev->t = t;
	*ret_ev = ev;
	return 0;
}

void nix_eval_free(struct nix_eval *ev)
{
	if (!ev)
		return;
	while (ev->chunks) {
		struct chunk *c = ev->chunks;

		ev->chunks = c->next;
		free(c);
	}
	free(ev);
}

static struct nix_value *new_val(struct nix_eval *ev, enum nix_vkind kind)
{
	struct nix_value *v = ev_alloc(ev, sizeof(*v));

	if (v)
		v->kind = kind;
	return v;
}

static struct env *new_env(struct nix_eval *ev, enum env_kind kind, struct env *up,
			   const struct nix_node *node)
{
	struct env *e = ev_alloc(ev, sizeof(*e));

	if (e) {
		e->kind = kind;
		e->up = up;
		e->node = node;
	}
	return e;
}

static struct thunk *new_thunk(struct nix_eval *ev, const struct nix_node *node, struct env *env)
{
	struct thunk *th = ev_alloc(ev, sizeof(*th));

	if (th) {
		th->node = node;
		th->env = env;
	}
	return th;
}

static int eval(struct nix_eval *ev, const struct nix_node *n, struct env *env,
		const struct nix_value **ret_v);

static int force(struct nix_eval *ev, struct thunk *th, const struct nix_value **ret_v)
{
	const struct nix_value *v;
	int r;

	if (th->v) {
		*ret_v = th->v;
		return 0;
	}
	if (th->forcing)
		return -ELOOP; /* infinite recursion */
	th->forcing = true;
	r = eval(ev, th->node, th->env, &v);
	th->forcing = false;
	if (r < 0)
		return r;
	th->v = v;
	*ret_v = v;
	return 0;
}

/* The static name of an attribute-path element, in the arena. */
static const char *static_name(struct nix_eval *ev, const struct nix_node *attr)
{
	WS_AUTOFREE char *name = NULL;

	if (nix_attr_name(ev->t, attr, &name) < 0)
		return NULL;
	return ev_strndup(ev, name, strlen(name));
}

/* The first element of a binding's attribute path, and how many elements it has. */
static const char *binding_head(struct nix_eval *ev, const struct nix_node *b, size_t *ret_n)
{
	const struct nix_node *path = nix_node_child(b, 0);

	if (!path || path->kind != NIX_NODE_ATTRPATH || nix_node_n_children(path) == 0)
		return NULL;
	*ret_n = nix_node_n_children(path);
	return static_name(ev, nix_node_child(path, 0));
}

static int lookup(struct nix_eval *ev, const char *name, struct env *env,
		  const struct nix_value **ret_v);
static int select_attr(struct nix_eval *ev, const struct nix_value *set, const char *name,
		       const struct nix_value **ret_v);

/* Looks @name up among the bindings and inherits of @node (ATTRSET or LET_IN): values
 * evaluate in @venv, plain inherits look in @outer. -ENOENT when not bound there. */
static int bindings_get(struct nix_eval *ev, const struct nix_node *node, struct env *venv,
			struct env *outer, const char *name, const struct nix_value **ret_v)
{
	size_t nc = nix_node_n_children(node);

	for (size_t i = 0; i < nc; i++) {
		const struct nix_node *c = nix_node_child(node, i);

		if (c->kind == NIX_NODE_BINDING) {
			size_t n = 0;
			const char *head = binding_head(ev, c, &n);
			struct thunk *th;

			if (!head || strcmp(head, name) != 0)
				continue;
			if (n != 1)
				return -ENOEXEC; /* a.b = ...; sets are not assembled here */
			th = new_thunk(ev, nix_node_child(c, 1), venv);
			if (!th)
				return -ENOMEM;
			return force(ev, th, ret_v);
		}
		if (c->kind == NIX_NODE_INHERIT) {
			size_t ic = nix_node_n_children(c);
			const struct nix_node *from = NULL;

			for (size_t j = 0; j < ic; j++) {
				const struct nix_node *a = nix_node_child(c, j);
				const char *an;

				if (a->kind == NIX_NODE_INHERIT_FROM) {
					from = nix_node_child(a, 0);
					continue;
				}
				an = static_name(ev, a);
				if (!an || strcmp(an, name) != 0)
					continue;
				if (from) {
					const struct nix_value *src;
					int r = eval(ev, from, venv, &src);

					if (r < 0)
						return r;
					return select_attr(ev, src, name, ret_v);
				}
				return lookup(ev, name, outer, ret_v);
			}
		}
	}
	return -ENOENT;
}

static bool pattern_binds(struct nix_eval *ev, const struct nix_node *pat, const char *name)
{
	size_t nc = nix_node_n_children(pat);

	for (size_t i = 0; i < nc; i++) {
		const struct nix_node *c = nix_node_child(pat, i);
		const struct nix_node *id = c->kind == NIX_NODE_PAT_ENTRY ? nix_node_child(c, 0) : c;
		WS_AUTOFREE char *text = NULL;

		if (!id || id->kind != NIX_NODE_IDENT)
			continue;
		text = nix_node_text(ev->t, id);
		if (text && strcmp(text, name) == 0)
			return true;
	}
	return false;
}

static int lookup(struct nix_eval *ev, const char *name, struct env *env,
		  const struct nix_value **ret_v)
{
	struct nix_value *v;
	int r;

	for (struct env *e = env; e; e = e->up) {
		switch (e->kind) {
		case ENV_BINDINGS:
			r = bindings_get(ev, e->node, e, e->up, name, ret_v);
			if (r != -ENOENT)
				return r;
			break;
		case ENV_ARG:
			if (strcmp(e->name, name) == 0)
				return force(ev, e->arg, ret_v);
			break;
		case ENV_PATTERN: {
			const struct nix_node *pat = e->node;
			size_t nc = nix_node_n_children(pat);

			for (size_t i = 0; i < nc; i++) {
				const struct nix_node *c = nix_node_child(pat, i);
				WS_AUTOFREE char *text = NULL;

				if (c->kind == NIX_NODE_IDENT) {
					text = nix_node_text(ev->t, c);
					if (text && strcmp(text, name) == 0)
						return force(ev, e->arg, ret_v);
					continue;
				}
				if (c->kind != NIX_NODE_PAT_ENTRY)
					continue;
				text = nix_node_text(ev->t, nix_node_child(c, 0));
				if (!text || strcmp(text, name) != 0)
					continue;
				{
					const struct nix_value *arg;

					r = force(ev, e->arg, &arg);
					if (r < 0)
						return r;
					r = select_attr(ev, arg, name, ret_v);
					if (r == -ENOENT && nix_node_n_children(c) > 1)
						return eval(ev, nix_node_child(c, 1), e, ret_v);
					return r == -ENOENT ? -ENOEXEC : r;
				}
			}
			break;
		}
		case ENV_OPAQUE: {
			const struct nix_node *param = nix_node_child(e->node, 0);

			if (param->kind == NIX_NODE_IDENT) {
				WS_AUTOFREE char *text = nix_node_text(ev->t, param);

				if (text && strcmp(text, name) == 0)
					return -ENOEXEC;
			} else if (pattern_binds(ev, param, name)) {
				return -ENOEXEC;
			}
			break;
		}
		case ENV_WITH:
			break;
		}
	}
	/* the builtins are lexically outermost, so they win over `with` */
	if (strcmp(name, "true") == 0 || strcmp(name, "false") == 0) {
		v = new_val(ev, NIX_V_BOOL);
		if (!v)
			return -ENOMEM;
		v->b = name[0] == 't';
	} else if (strcmp(name, "null") == 0) {
		v = new_val(ev, NIX_V_NULL);
	} else if (strcmp(name, "toString") == 0 || strcmp(name, "builtins") == 0) {
		v = new_val(ev, NIX_V_BUILTIN);
		if (!v)
			return -ENOMEM;
		v->builtin = name[0] == 't' ? BI_TOSTRING : BI_BUILTINS;
	} else {
		return -ENOEXEC;
	}
	if (!v)
		return -ENOMEM;
	*ret_v = v;
	return 0;
}

static int select_attr(struct nix_eval *ev, const struct nix_value *set, const char *name,
		       const struct nix_value **ret_v)
{
	if (set->kind == NIX_V_BUILTIN && set->builtin == BI_BUILTINS) {
		struct nix_value *v;

		if (strcmp(name, "toString") != 0)
			return -ENOEXEC;
		v = new_val(ev, NIX_V_BUILTIN);
		if (!v)
			return -ENOMEM;
		v->builtin = BI_TOSTRING;
		*ret_v = v;
		return 0;
	}
	if (set->kind != NIX_V_ATTRS)
		return -ENOEXEC;
	return bindings_get(ev, set->node, set->env, set->outer, name, ret_v);
}

/* Appends the decoded text of a "..." string piece to @buf. */
static int append(char **buf, size_t *len, const char *s, size_t n)
{
	char *b = realloc(*buf, *len + n + 1);

	if (!b)
		return -ENOMEM;
	memcpy(b + *len, s, n);
	*len += n;
	b[*len] = '\0';
	*buf = b;
	return 0;
}

static int append_escaped(char **buf, size_t *len, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int r;

		if (c == '\\' && i + 1 < n) {
			c = s[++i];
			if (c == 'n')
				c = '\n';
			else if (c == 't')
				c = '\t';
			else if (c == 'r')
				c = '\r';
		}
		r = append(buf, len, &c, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

static int eval_string(struct nix_eval *ev, const struct nix_node *n, struct env *env,
		       const struct nix_value **ret_v)
{
	WS_AUTOFREE char *buf = NULL;
	struct nix_value *v;
	size_t len = 0;
	int r;

	if (nix_node_token(n, NIX_TOK_IND_OPEN) >= 0) {
		/* indented strings: only without interpolation (the tree decodes those) */
		r = nix_string_value(ev->t, n, &buf);
		if (r < 0)
			return -ENOEXEC;
		len = strlen(buf);
	} else {
		struct nix_elem_iter it = { 0 };
		struct nix_elem el;

		r = append(&buf, &len, "", 0);
		if (r < 0)
			return r;
		while (nix_node_next_elem(ev->t, n, &it, &el)) {
			const struct nix_value *part;

			if (!el.is_node) {
				if (el.tok.kind != NIX_TOK_STR_CONTENT)
					continue;
				r = append_escaped(&buf, &len, ev->t->src + el.tok.off,
						   el.tok.len);
				if (r < 0)
					return r;
				continue;
			}
			r = eval(ev, nix_node_child(el.node, 0), env, &part);
			if (r < 0)
				return r;
			if (part->kind != NIX_V_STRING)
				return -ENOEXEC; /* Nix coerces only strings (and paths, to the store) */
			r = append(&buf, &len, part->s, strlen(part->s));
			if (r < 0)
				return r;
		}
	}
	v = new_val(ev, NIX_V_STRING);
	if (!v || !(v->s = ev_strndup(ev, buf, len)))
		return -ENOMEM;
	*ret_v = v;
	return 0;
}

static int eval_literal(struct nix_eval *ev, const struct nix_node *n,
			const struct nix_value **ret_v)
{
	struct nix_elem_iter it = { 0 };
	struct nix_elem el;

	while (nix_node_next_elem(ev->t, n, &it, &el)) {
		const char *s = ev->t->src + (el.is_node ? 0 : el.tok.off);
		struct nix_value *v;

		if (el.is_node)
			continue;
		switch (el.tok.kind) {
		case NIX_TOK_INT: {
			int64_t x = 0;

			for (uint32_t k = 0; k < el.tok.len; k++) {
				if (x > (INT64_MAX - 9) / 10)
					return -ENOEXEC;
				x = x * 10 + (s[k] - '0');
			}
			v = new_val(ev, NIX_V_INT);
			if (!v)
				return -ENOMEM;
			v->i = x;
			*ret_v = v;
			return 0;
		}
		case NIX_TOK_PATH:
			v = new_val(ev, NIX_V_PATH);
			if (!v || !(v->s = ev_strndup(ev, s, el.tok.len)))
				return -ENOMEM;
			*ret_v = v;
			return 0;
		case NIX_TOK_URI:
			v = new_val(ev, NIX_V_STRING);
			if (!v || !(v->s = ev_strndup(ev, s, el.tok.len)))
				return -ENOMEM;
			*ret_v = v;
			return 0;
		default:
			break;
		}
	}
	return -ENOEXEC;
}

static int apply(struct nix_eval *ev, const struct nix_value *f, struct thunk *arg,
		 const struct nix_value **ret_v)
{
	const struct nix_node *param, *body;
	const struct nix_value *a;
	struct env *e;
	int r;

	if (f->kind == NIX_V_BUILTIN && f->builtin == BI_TOSTRING) {
		struct nix_value *v;
		char num[32];

		r = force(ev, arg, &a);
		if (r < 0)
			return r;
		v = new_val(ev, NIX_V_STRING);
		if (!v)
			return -ENOMEM;
		switch (a->kind) {
		case NIX_V_STRING:
			v->s = a->s;
			break;
		case NIX_V_INT:
			snprintf(num, sizeof(num), "%" PRId64, a->i);
			v->s = ev_strndup(ev, num, strlen(num));
			break;
		case NIX_V_BOOL:
			v->s = a->b ? "1" : "";
			break;
		case NIX_V_NULL:
			v->s = "";
			break;
		default:
			return -ENOEXEC;
		}
		if (!v->s)
			return -ENOMEM;
		*ret_v = v;
		return 0;
	}
	if (f->kind != NIX_V_LAMBDA)
		return -ENOEXEC;
	param = nix_node_child(f->node, 0);
	body = nix_node_child(f->node, 1);
	if (param->kind == NIX_NODE_IDENT) {
		WS_AUTOFREE char *pname = nix_node_text(ev->t, param);

		e = new_env(ev, ENV_ARG, f->env, param);
		if (!e || !pname || !(e->name = ev_strndup(ev, pname, strlen(pname))))
			return -ENOMEM;
	} else {
		r = force(ev, arg, &a);
		if (r < 0)
			return r;
		if (a->kind != NIX_V_ATTRS)
			return -ENOEXEC;
		e = new_env(ev, ENV_PATTERN, f->env, param);
		if (!e)
			return -ENOMEM;
	}
	e->arg = arg;
	return eval(ev, body, e, ret_v);
}

static bool values_equal(const struct nix_value *a, const struct nix_value *b, int *ret_r)
{
	*ret_r = 0;
	if (a->kind != b->kind) {
		if ((a->kind == NIX_V_ATTRS || a->kind == NIX_V_LIST) ||
		    (b->kind == NIX_V_ATTRS || b->kind == NIX_V_LIST))
			*ret_r = -ENOEXEC;
		return false;
	}
	switch (a->kind) {
	case NIX_V_NULL:
		return true;
	case NIX_V_BOOL:
		return a->b == b->b;
	case NIX_V_INT:
		return a->i == b->i;
	case NIX_V_STRING:
	case NIX_V_PATH:
		return strcmp(a->s, b->s) == 0;
	default:
		*ret_r = -ENOEXEC;
		return false;
	}
}

static int eval_binop(struct nix_eval *ev, const struct nix_node *n, struct env *env,
		      const struct nix_value **ret_v)
{
	const struct nix_value *a, *b;
	struct nix_value *v;
	int r;

	r = eval(ev, nix_node_child(n, 0), env, &a);
	if (r < 0)
		return r;
	if (n->op == NIX_TOK_AND || n->op == NIX_TOK_OR || n->op == NIX_TOK_IMPL) {
		if (a->kind != NIX_V_BOOL)
			return -ENOEXEC;
		if ((n->op == NIX_TOK_AND && !a->b) || (n->op == NIX_TOK_OR && a->b) ||
		    (n->op == NIX_TOK_IMPL && !a->b)) {
			v = new_val(ev, NIX_V_BOOL);
			if (!v)
				return -ENOMEM;
			v->b = n->op != NIX_TOK_AND;
			*ret_v = v;
			return 0;
		}
		r = eval(ev, nix_node_child(n, 1), env, &b);
		if (r < 0)
			return r;
		if (b->kind != NIX_V_BOOL)
			return -ENOEXEC;
		*ret_v = b;
		return 0;
	}
	r = eval(ev, nix_node_child(n, 1), env, &b);
	if (r < 0)
		return r;
	switch (n->op) {
	case NIX_TOK_EQ:
	case NIX_TOK_NEQ: {
		bool eq = values_equal(a, b, &r);

		if (r < 0)
			return r;
		v = new_val(ev, NIX_V_BOOL);
		if (!v)
			return -ENOMEM;
		v->b = n->op == NIX_TOK_EQ ? eq : !eq;
		break;
	}
	case NIX_TOK_PLUS:
		if (a->kind == NIX_V_STRING && b->kind == NIX_V_STRING) {
			size_t la = strlen(a->s), lb = strlen(b->s);
			char *s = ev_alloc(ev, la + lb + 1);

			v = new_val(ev, NIX_V_STRING);
			if (!v || !s)
				return -ENOMEM;
			memcpy(s, a->s, la);
			memcpy(s + la, b->s, lb);
			v->s = s;
			break;
		}
		/* integers */
		__attribute__((fallthrough));
	case NIX_TOK_MINUS:
	case NIX_TOK_STAR:
		if (a->kind != NIX_V_INT || b->kind != NIX_V_INT)
			return -ENOEXEC;
		v = new_val(ev, NIX_V_INT);
		if (!v)
			return -ENOMEM;
		if (n->op == NIX_TOK_PLUS ? __builtin_add_overflow(a->i, b->i, &v->i)
		    : n->op == NIX_TOK_MINUS ? __builtin_sub_overflow(a->i, b->i, &v->i)
					     : __builtin_mul_overflow(a->i, b->i, &v->i))
			return -ENOEXEC;
		break;
	default:
		return -ENOEXEC;
	}
	*ret_v = v;
	return 0;
}

static int eval_select(struct nix_eval *ev, const struct nix_node *n, struct env *env,
		       const struct nix_value **ret_v)
{
	const struct nix_node *path = nix_node_child(n, 1);
	const struct nix_value *cur;
	size_t np = nix_node_n_children(path);
	int r;

	r = eval(ev, nix_node_child(n, 0), env, &cur);
	for (size_t i = 0; r == 0 && i < np; i++) {
		const struct nix_node *a = nix_node_child(path, i);
		const char *name = NULL;

		if (a->kind == NIX_NODE_INTERP) {
			const struct nix_value *k;

			r = eval(ev, nix_node_child(a, 0), env, &k);
			if (r < 0)
				break;
			if (k->kind != NIX_V_STRING) {
				r = -ENOEXEC;
				break;
			}
			name = k->s;
		} else if (a->kind == NIX_NODE_STRING && nix_node_n_children(a) > 0) {
			const struct nix_value *k;

			r = eval_string(ev, a, env, &k);
			if (r < 0)
				break;
			name = k->s;
		} else {
			name = static_name(ev, a);
		}
		if (!name) {
			r = -ENOEXEC;
			break;
		}
		r = select_attr(ev, cur, name, &cur);
	}
	if (r == -ENOENT && nix_node_n_children(n) > 2)
		return eval(ev, nix_node_child(n, 2), env, ret_v);
	if (r < 0)
		return r == -ENOENT ? -ENOEXEC : r;
	*ret_v = cur;
	return 0;
}

static int eval(struct nix_eval *ev, const struct nix_node *n, struct env *env,
		const struct nix_value **ret_v)
{
	struct nix_value *v;
	struct env *e;
	int r = -ENOEXEC;

	if (!n)
		return -ENOEXEC;
	if (++ev->steps > NIX_EVAL_MAX_STEPS || ev->depth >= NIX_EVAL_MAX_DEPTH)
		return -ELOOP;
	ev->depth++;
	switch (n->kind) {
	case NIX_NODE_PAREN:
		r = eval(ev, nix_node_child(n, 0), env, ret_v);
		break;
	case NIX_NODE_LITERAL:
		r = eval_literal(ev, n, ret_v);
		break;
	case NIX_NODE_STRING:
		r = eval_string(ev, n, env, ret_v);
		break;
	case NIX_NODE_IDENT: {
		WS_AUTOFREE char *name = nix_node_text(ev->t, n);

		r = name ? lookup(ev, name, env, ret_v) : -ENOMEM;
		break;
	}
	case NIX_NODE_SELECT:
		r = eval_select(ev, n, env, ret_v);
		break;
	case NIX_NODE_APPLY: {
		const struct nix_value *f;
		struct thunk *arg;

		r = eval(ev, nix_node_child(n, 0), env, &f);
		if (r < 0)
			break;
		arg = new_thunk(ev, nix_node_child(n, 1), env);
		r = arg ? apply(ev, f, arg, ret_v) : -ENOMEM;
		break;
	}
	case NIX_NODE_LAMBDA:
	case NIX_NODE_LIST:
		v = new_val(ev, n->kind == NIX_NODE_LAMBDA ? NIX_V_LAMBDA : NIX_V_LIST);
		if (!v) {
			r = -ENOMEM;
			break;
		}
		v->node = n;
		v->env = env;
		*ret_v = v;
		r = 0;
		break;
	case NIX_NODE_ATTRSET:
		v = new_val(ev, NIX_V_ATTRS);
		if (!v) {
			r = -ENOMEM;
			break;
		}
		v->node = n;
		v->outer = env;
		v->env = env;
		if (nix_node_is_rec(n) && !(v->env = new_env(ev, ENV_BINDINGS, env, n))) {
			r = -ENOMEM;
			break;
		}
		*ret_v = v;
		r = 0;
		break;
	case NIX_NODE_LET_IN: {
		size_t nc = nix_node_n_children(n);

		e = new_env(ev, ENV_BINDINGS, env, n);
		r = e ? eval(ev, nix_node_child(n, nc - 1), e, ret_v) : -ENOMEM;
		break;
	}
	case NIX_NODE_IF: {
		const struct nix_value *c;

		r = eval(ev, nix_node_child(n, 0), env, &c);
		if (r < 0)
			break;
		if (c->kind != NIX_V_BOOL) {
			r = -ENOEXEC;
			break;
		}
		r = eval(ev, nix_node_child(n, c->b ? 1 : 2), env, ret_v);
		break;
	}
	case NIX_NODE_BINOP:
		r = eval_binop(ev, n, env, ret_v);
		break;
	case NIX_NODE_UNARY: {
		const struct nix_value *a;

		r = eval(ev, nix_node_child(n, 0), env, &a);
		if (r < 0)
			break;
		if (n->op == NIX_TOK_NOT && a->kind == NIX_V_BOOL) {
			v = new_val(ev, NIX_V_BOOL);
			if (v)
				v->b = !a->b;
		} else if (n->op == NIX_TOK_MINUS && a->kind == NIX_V_INT && a->i != INT64_MIN) {
			v = new_val(ev, NIX_V_INT);
			if (v)
				v->i = -a->i;
		} else {
			r = -ENOEXEC;
			break;
		}
		r = v ? 0 : -ENOMEM;
		if (v)
			*ret_v = v;
		break;
	}
	case NIX_NODE_WITH:
		e = new_env(ev, ENV_WITH, env, n);
		r = e ? eval(ev, nix_node_child(n, 1), e, ret_v) : -ENOMEM;
		break;
	default:
		r = -ENOEXEC;
		break;
	}
	ev->depth--;
	return r;
}

/* The scope of @n's place in the tree: what its ancestors bind for it. */
static int env_at(struct nix_eval *ev, const struct nix_node *n, struct env **ret_env)
{
	const struct nix_node *p = n->parent;
	struct env *up = NULL, *e = NULL;
	size_t nc;
	int r;

	if (!p) {
		*ret_env = NULL;
		return 0;
	}
	r = env_at(ev, p, &up);
	if (r < 0)
		return r;
	nc = nix_node_n_children(p);
	switch (p->kind) {
	case NIX_NODE_LET_IN:
		e = new_env(ev, ENV_BINDINGS, up, p);
		break;
	case NIX_NODE_ATTRSET:
		if (!nix_node_is_rec(p)) {
			*ret_env = up;
			return 0;
		}
		e = new_env(ev, ENV_BINDINGS, up, p);
		break;
	case NIX_NODE_LAMBDA:
		if (n == nix_node_child(p, 0) && n->kind == NIX_NODE_IDENT) {
			*ret_env = up;
			return 0;
		}
		e = new_env(ev, ENV_OPAQUE, up, p);
		break;
	case NIX_NODE_WITH:
		if (nc < 2 || n != nix_node_child(p, 1)) {
			*ret_env = up;
			return 0;
		}
		e = new_env(ev, ENV_WITH, up, p);
		break;
	default:
		*ret_env = up;
		return 0;
	}
	if (!e)
		return -ENOMEM;
	*ret_env = e;
	return 0;
}

int nix_eval_node(struct nix_eval *ev, const struct nix_node *n, const struct nix_value **ret_v)
{
	const struct nix_value *v;
	struct env *env;
	int r;

	if (!n)
		return -ENOEXEC;
	r = env_at(ev, n, &env);
	if (r < 0)
		return r;
	ev->depth = 0;
	r = eval(ev, n, env, &v);
	if (r < 0)
		return r;
	*ret_v = v;
	return 0;
}

int nix_eval_attr(struct nix_eval *ev, const struct nix_value *set, const char *name,
		  const struct nix_value **ret_v)
{
	const struct nix_value *v;
	int r;

	if (set->kind != NIX_V_ATTRS)
		return -ENOEXEC;
	ev->depth = 0;
	r = select_attr(ev, set, name, &v);
	if (r < 0)
		return r;
	*ret_v = v;
	return 0;
}

int nix_eval_string(const struct nix_tree *t, const struct nix_node *n, char **ret_str)
{
	struct nix_eval *ev = NULL;
	const struct nix_value *v;
	char *s;
	int r;

	r = nix_eval_new(t, &ev);
	if (r < 0)
		return r;
	r = nix_eval_node(ev, n, &v);
	if (r == 0 && v->kind != NIX_V_STRING)
		r = -ENOEXEC;
	if (r == 0) {
		s = strdup(v->s);
		if (!s)
			r = -ENOMEM;
		else
			*ret_str = s;
	}
	nix_eval_free(ev);
	return r;
}

enum nix_vkind nix_value_kind(const struct nix_value *v)
{
	return v->kind;
}

const char *nix_value_str(const struct nix_value *v)
{
	return v->kind == NIX_V_STRING || v->kind == NIX_V_PATH ? v->s : NULL;
}

int64_t nix_value_int(const struct nix_value *v)
{
	return v->kind == NIX_V_INT ? v->i : 0;
}

bool nix_value_bool(const struct nix_value *v)
{
	return v->kind == NIX_V_BOOL && v->b;
}

const struct nix_node *nix_value_node(const struct nix_value *v)
{
	return v->kind == NIX_V_ATTRS ? v->node : NULL;
}
