/* SPDX-License-Identifier: MIT */
/* The machine file model: finds every workspace entry under
 * sandboxed-workspace.workspaces in whatever shape the user wrote it, reads each one
 * (evaluating computed values with nix_eval where that is safe), and plans edits as splices
 * of new text that copies its siblings' layout. It never writes files and never touches a
 * byte outside a splice; every edit is re-parsed and re-read before it is returned. */
#include "flake.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "nix_eval.h"
#include "nix_tree.h"

#define SW_ATTR "sandboxed-workspace"
#define WS_ATTR "workspaces"

/* Where an entry (or a place for one) lives, for the editor. */
struct entry_info {
	const struct nix_node *head;     /* the binding that first defines the entry */
	const struct nix_node *set;      /* the ATTRSET holding @head */
	int depth;                       /* path elements consumed before @set: 0, 1 or 2 */
	const struct nix_node *lit;      /* the entry's literal ATTRSET, or NULL */
	const struct nix_node *hostkey;  /* the STRING node of a literal hostKey, or NULL */
	bool hostkey_other;              /* hostKey is set, but not as an editable literal */
};

struct flake {
	char *relpath;
	char *buf;
	size_t len;
	struct nix_tree *tree;
	struct nix_eval *ev;
	struct ws_entry *entries;
	struct entry_info *info;
	size_t n, cap;
	size_t *slots;      /* name hash -> index + 1 (0: empty), open addressing */
	size_t n_slots;     /* a power of two, at least twice n */
	/* places for a first entry */
	const struct nix_node *root_set;  /* the last literal set at the config root */
	const struct nix_node *block[3];  /* the last literal set at depth 1 and 2 */
	const struct nix_node *dotted;    /* last root binding `sandboxed-workspace.X` */
	const struct nix_node *dotted_set;
	const struct nix_node *opaque;    /* first non-literal value that may hold entries */
	const char *opaque_why;
	int depth_guard;
	unsigned refs;                    /* owners besides the first (flake_ref) */
};

static const char *const want_path[2] = {SW_ATTR, WS_ATTR};

/* ---- small helpers ------------------------------------------------------------------- */

static int node_line(const struct flake *f, const struct nix_node *n)
{
	int line = 0, col = 0;

	nix_tree_linecol(f->tree, n->start, &line, &col);
	return line;
}

static int node_col(const struct flake *f, const struct nix_node *n)
{
	int line = 0, col = 0;

	nix_tree_linecol(f->tree, n->start, &line, &col);
	return col;
}

/* The last element of an APPLY chain's callee name (`lib.mkIf` -> "mkIf"), or NULL. */
static char *callee_name(const struct flake *f, const struct nix_node *fn)
{
	char *name = NULL;

	while (fn && fn->kind == NIX_NODE_PAREN)
		fn = nix_node_child(fn, 0);
	if (!fn)
		return NULL;
	if (fn->kind == NIX_NODE_IDENT)
		return nix_node_text(f->tree, fn);
	if (fn->kind == NIX_NODE_SELECT && nix_node_n_children(fn) == 2) {
		const struct nix_node *path = nix_node_child(fn, 1);
		size_t n = nix_node_n_children(path);

		if (n > 0 && nix_attr_name(f->tree, nix_node_child(path, n - 1), &name) == 0)
			return name;
	}
	return NULL;
}

enum wrap { WRAP_NONE, WRAP_ONE, WRAP_MERGE };

/* Recognises lib.mkIf c X, lib.mkDefault X, lib.mkForce X, lib.mkOverride p X,
 * lib.mkBefore X, lib.mkAfter X (-> X) and lib.mkMerge [ ... ] (-> the list). */
static enum wrap unwrap_once(const struct flake *f, const struct nix_node *n,
			     const struct nix_node **ret_inner)
{
	static const struct {
		const char *name;
		size_t args;
		enum wrap kind;
	} wrappers[] = {
		{"mkIf", 2, WRAP_ONE},       {"mkDefault", 1, WRAP_ONE}, {"mkForce", 1, WRAP_ONE},
		{"mkOverride", 2, WRAP_ONE}, {"mkBefore", 1, WRAP_ONE},  {"mkAfter", 1, WRAP_ONE},
		{"mkMerge", 1, WRAP_MERGE},
	};
	const struct nix_node *fn = n, *last = NULL;
	WS_AUTOFREE char *name = NULL;
	size_t args = 0;

	if (n->kind != NIX_NODE_APPLY)
		return WRAP_NONE;
	while (fn->kind == NIX_NODE_APPLY) {
		if (!last)
			last = nix_node_child(fn, 1);
		args++;
		fn = nix_node_child(fn, 0);
	}
	name = callee_name(f, fn);
	if (!name)
		return WRAP_NONE;
	for (size_t i = 0; i < WS_ARRAY_SIZE(wrappers); i++) {
		if (strcmp(name, wrappers[i].name) != 0 || args != wrappers[i].args)
			continue;
		while (last->kind == NIX_NODE_PAREN)
			last = nix_node_child(last, 0);
		if (wrappers[i].kind == WRAP_MERGE && last->kind != NIX_NODE_LIST)
			return WRAP_NONE;
		*ret_inner = last;
		return wrappers[i].kind;
	}
	return WRAP_NONE;
}

/* Strips parentheses and the single-value wrappers. */
static const struct nix_node *unwrap(const struct flake *f, const struct nix_node *n)
{
	const struct nix_node *inner;

	for (int guard = 0; n && guard < 64; guard++) {
		if (n->kind == NIX_NODE_PAREN) {
			n = nix_node_child(n, 0);
			continue;
		}
		if (unwrap_once(f, n, &inner) == WRAP_ONE) {
			n = inner;
			continue;
		}
		break;
	}
	return n;
}

/* The static names of a binding's attribute path (malloc'd array of malloc'd strings).
 * Returns the count, or -EINVAL when an element is dynamic. */
static int binding_path(const struct flake *f, const struct nix_node *b, char ***ret_names)
{
	const struct nix_node *path = nix_node_child(b, 0);
	size_t n = path ? nix_node_n_children(path) : 0;
	char **names;

	if (!path || path->kind != NIX_NODE_ATTRPATH || n == 0)
		return -EINVAL;
	names = calloc(n, sizeof(*names));
	if (!names)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (nix_attr_name(f->tree, nix_node_child(path, i), &names[i]) < 0) {
			for (size_t j = 0; j < i; j++)
				free(names[j]);
			free(names);
			return -EINVAL;
		}
	}
	*ret_names = names;
	return (int)n;
}

static void names_free(char **names, int n)
{
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

size_t ws_entry_n_problems(const struct ws_entry *e)
{
	return e->problems ? json_object_array_length(e->problems) : 0;
}

/* e->extra, made when the first attribute goes in (most entries have none). */
static struct json_object *entry_extra(struct ws_entry *e)
{
	if (!e->extra)
		e->extra = json_object_new_object();
	return e->extra;
}

void ws_entry_add_problem(struct ws_entry *e, const char *kind, const char *fmt, ...)
{
	struct json_object *p;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!e->problems)
		e->problems = json_object_new_array();
	p = json_object_new_object();
	json_object_object_add(p, "kind", json_object_new_string(kind)); /* p owns it */
	json_object_object_add(p, "message", json_object_new_string(msg));
	json_object_array_add(e->problems, p); /* problems now owns p */
}

/* ---- reading entries ----------------------------------------------------------------- */

static size_t name_hash(const char *s)
{
	size_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* The index of entry @name, or -1. Files with thousands of entries stay linear. */
static ssize_t entry_index(const struct flake *f, const char *name)
{
	if (!f->n_slots)
		return -1;
	for (size_t h = name_hash(name) & (f->n_slots - 1);; h = (h + 1) & (f->n_slots - 1)) {
		size_t v = f->slots[h];

		if (v == 0)
			return -1;
		if (strcmp(f->entries[v - 1].name, name) == 0)
			return (ssize_t)(v - 1);
	}
}

static int index_add(struct flake *f, size_t idx)
{
	if (2 * (f->n + 1) > f->n_slots) {
		size_t n_slots = f->n_slots ? 2 * f->n_slots : 16;
		size_t *slots = calloc(n_slots, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		free(f->slots);
		f->slots = slots;
		f->n_slots = n_slots;
		for (size_t i = 0; i < f->n; i++)
			if (i != idx)
				(void)index_add(f, i);
	}
	for (size_t h = name_hash(f->entries[idx].name) & (f->n_slots - 1);;
	     h = (h + 1) & (f->n_slots - 1))
		if (f->slots[h] == 0) {
			f->slots[h] = idx + 1;
			return 0;
		}
}

static struct ws_entry *entry_get(struct flake *f, const char *name, const struct nix_node *head,
				  const struct nix_node *set, int depth, size_t *ret_idx)
{
	struct ws_entry *e;
	ssize_t found = entry_index(f, name);

	if (found >= 0) {
		*ret_idx = (size_t)found;
		return &f->entries[found];
	}
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;
		struct ws_entry *ne = realloc(f->entries, cap * sizeof(*ne));
		struct entry_info *ni;

		if (!ne)
			return NULL;
		f->entries = ne;
		ni = realloc(f->info, cap * sizeof(*ni));
		if (!ni)
			return NULL;
		f->info = ni;
		f->cap = cap;
	}
	e = &f->entries[f->n];
	memset(e, 0, sizeof(*e));
	memset(&f->info[f->n], 0, sizeof(f->info[f->n]));
	e->name = strdup(name);
	if (!e->name)
		return NULL;
	if (index_add(f, f->n) < 0) {
		free(e->name);
		return NULL;
	}
	e->line = node_line(f, head);
	f->info[f->n].head = head;
	f->info[f->n].set = set;
	f->info[f->n].depth = depth;
	*ret_idx = f->n;
	f->n++;
	return e;
}

/* Reads attribute @key of an entry. @v is the entry's set value (NULL for a dotted piece,
 * which evaluates @node in place); @node is the value's expression (NULL for inherit). */
static int entry_attr(struct flake *f, size_t idx, const char *key, const struct nix_value *v,
		      const struct nix_node *node, bool literal_place)
{
	struct ws_entry *e = &f->entries[idx];
	struct entry_info *in = &f->info[idx];
	WS_AUTOFREE char *text = NULL; /* the value's source text, made where it is needed */
	const struct nix_value *val = NULL;
	int r;

	if (strcmp(key, "config") == 0 ||
	    (strcmp(key, "type") != 0 && strcmp(key, "ip") != 0 && strcmp(key, "autoStart") != 0 &&
	     strcmp(key, "hostKey") != 0)) {
		text = node ? nix_node_text(f->tree, node) : strdup(key);
		if (!text)
			return -ENOMEM;
		if (strcmp(key, "config") == 0) {
			free(e->config);
			e->config = ws_steal(&text);
		} else {
			json_object_object_add(entry_extra(e), key,
					       json_object_new_string(text)); /* owns */
		}
		return 0;
	}
	/* A plain string literal means what it says wherever it stands: read it directly
	 * (the common case, and far cheaper than evaluating the attribute by name). */
	if (node && node->kind == NIX_NODE_STRING && nix_node_n_children(node) == 0 &&
	    strcmp(key, "autoStart") != 0) {
		WS_AUTOFREE char *lit = NULL;

		r = nix_string_value(f->tree, node, &lit);
		if (r == -ENOMEM)
			return r;
		if (r == 0) {
			char **slot = strcmp(key, "type") == 0 ? &e->type
				      : strcmp(key, "ip") == 0 ? &e->ip
								 : &e->host_key;

			free(*slot);
			*slot = ws_steal(&lit);
			if (strcmp(key, "ip") == 0) {
				free(e->ip_expr);
				e->ip_expr = NULL;
			} else if (strcmp(key, "hostKey") == 0) {
				in->hostkey = NULL;
				in->hostkey_other = true;
				if (literal_place && nix_node_token(node, NIX_TOK_STR_OPEN) >= 0) {
					in->hostkey = node;
					in->hostkey_other = false;
				}
			}
			return 0;
		}
	}
	text = node ? nix_node_text(f->tree, node) : strdup(key);
	if (!text)
		return -ENOMEM;
	r = v ? nix_eval_attr(f->ev, v, key, &val) : nix_eval_node(f->ev, node, &val);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		val = NULL;
	if (strcmp(key, "type") == 0) {
		free(e->type);
		e->type = val && nix_value_kind(val) == NIX_V_STRING ? strdup(nix_value_str(val))
								       : NULL;
	} else if (strcmp(key, "ip") == 0) {
		free(e->ip);
		free(e->ip_expr);
		e->ip = val && nix_value_kind(val) == NIX_V_STRING ? strdup(nix_value_str(val))
								     : NULL;
		e->ip_expr = NULL;
		/* a plain literal has no expression to show */
		if (!node || node->kind != NIX_NODE_STRING || nix_node_n_children(node) > 0)
			e->ip_expr = ws_steal(&text);
	} else if (strcmp(key, "autoStart") == 0) {
		e->auto_start = val && nix_value_kind(val) == NIX_V_BOOL ? nix_value_bool(val) : -1;
	} else {
		free(e->host_key);
		e->host_key = val && nix_value_kind(val) == NIX_V_STRING
				      ? strdup(nix_value_str(val))
				      : NULL;
		in->hostkey = NULL;
		in->hostkey_other = true;
		if (literal_place && node && node->kind == NIX_NODE_STRING &&
		    nix_node_n_children(node) == 0 && nix_node_token(node, NIX_TOK_STR_OPEN) >= 0) {
			in->hostkey = node;
			in->hostkey_other = false;
		}
	}
	return 0;
}

/* Reads every attribute of set @v (written as @set) into entry @idx. */
static int entry_read_set(struct flake *f, size_t idx, const struct nix_value *v,
			  const struct nix_node *set, bool literal_place)
{
	size_t nc = nix_node_n_children(set);
	int r;

	for (size_t i = 0; i < nc; i++) {
		const struct nix_node *c = nix_node_child(set, i);

		if (c->kind == NIX_NODE_BINDING) {
			const struct nix_node *path = nix_node_child(c, 0);
			WS_AUTOFREE char *key = NULL;

			if (nix_node_n_children(path) == 1 &&
			    nix_attr_name(f->tree, nix_node_child(path, 0), &key) == 0) {
				r = entry_attr(f, idx, key, v, nix_node_child(c, 1), literal_place);
			} else {
				WS_AUTOFREE char *ptext = nix_node_text(f->tree, path);
				WS_AUTOFREE char *vtext = nix_node_text(f->tree, nix_node_child(c, 1));

				if (!ptext || !vtext)
					return -ENOMEM;
				json_object_object_add(entry_extra(&f->entries[idx]), ptext,
						       json_object_new_string(vtext));
				r = 0;
			}
			if (r < 0)
				return r;
		} else if (c->kind == NIX_NODE_INHERIT) {
			size_t ic = nix_node_n_children(c);

			for (size_t j = 0; j < ic; j++) {
				const struct nix_node *a = nix_node_child(c, j);
				WS_AUTOFREE char *key = NULL;

				if (a->kind == NIX_NODE_INHERIT_FROM ||
				    nix_attr_name(f->tree, a, &key) < 0)
					continue;
				r = entry_attr(f, idx, key, v, NULL, false);
				if (r < 0)
					return r;
			}
		}
	}
	return 0;
}

/* A literal attribute set whose attributes do not see each other: not `rec`, no
 * `inherit` (whose names are looked up around the set). */
static bool plain_set(const struct nix_node *n)
{
	size_t nc;

	if (n->kind != NIX_NODE_ATTRSET || nix_node_is_rec(n))
		return false;
	nc = nix_node_n_children(n);
	for (size_t i = 0; i < nc; i++)
		if (nix_node_child(n, i)->kind != NIX_NODE_BINDING)
			return false;
	return true;
}

/* An entry `NAME = VALUE` found at @head in @set. */
static int found_entry(struct flake *f, const char *name, const struct nix_node *head,
		       const struct nix_node *set, int depth, const struct nix_node *value)
{
	const struct nix_node *inner = unwrap(f, value);
	const struct nix_value *v = NULL;
	struct ws_entry *e;
	size_t idx;
	int r;

	e = entry_get(f, name, head, set, depth, &idx);
	if (!e)
		return -ENOMEM;
	if (plain_set(inner)) {
		/* a literal set, neither rec nor inheriting: each attribute means what its own
		 * expression means, so the set need not be evaluated as a whole */
		f->info[idx].lit = inner;
		return entry_read_set(f, idx, NULL, inner, true);
	}
	r = nix_eval_node(f->ev, inner, &v);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || nix_value_kind(v) != NIX_V_ATTRS) {
		WS_AUTOFREE char *text = nix_node_text(f->tree, value);

		ws_entry_add_problem(e, "CONFIG_UNSUPPORTED",
			    "the entry is not an attribute set and cannot be evaluated here: %s",
			    text ? text : "?");
		/* its address is unknown, not absent: automatic allocation must not guess */
		if (!e->ip && !e->ip_expr)
			e->ip_expr = ws_steal(&text);
		return 0;
	}
	if (inner->kind == NIX_NODE_ATTRSET)
		f->info[idx].lit = inner;
	return entry_read_set(f, idx, v, nix_value_node(v), inner->kind == NIX_NODE_ATTRSET);
}

static int walk_value(struct flake *f, const struct nix_node *n, int depth, bool top);

static void note_opaque(struct flake *f, const struct nix_node *n, const char *why)
{
	if (!f->opaque) {
		f->opaque = n;
		f->opaque_why = why;
	}
}

static int walk_set(struct flake *f, const struct nix_node *set, int depth, bool top)
{
	size_t nc = nix_node_n_children(set);
	int r;

	/* a module in full form: the configuration is under `config` */
	if (top && depth == 0) {
		for (size_t i = 0; i < nc; i++) {
			const struct nix_node *c = nix_node_child(set, i);
			char **names = NULL;
			int n;
			bool full;

			if (c->kind != NIX_NODE_BINDING)
				continue;
			n = binding_path(f, c, &names);
			if (n == -ENOMEM)
				return n;
			if (n < 0)
				continue;
			full = strcmp(names[0], "config") == 0 || strcmp(names[0], "options") == 0;
			names_free(names, n);
			if (full)
				goto module;
		}
	}
	if (depth == 0)
		f->root_set = set;
	else
		f->block[depth] = set;
	for (size_t i = 0; i < nc; i++) {
		const struct nix_node *c = nix_node_child(set, i);
		char **names = NULL;
		int n, level, k;

		if (c->kind == NIX_NODE_INHERIT) {
			/* `inherit workspaces;` hides entries we cannot see */
			size_t ic = nix_node_n_children(c);

			for (size_t j = 0; j < ic && depth < 2; j++) {
				WS_AUTOFREE char *an = NULL;

				if (nix_attr_name(f->tree, nix_node_child(c, j), &an) == 0 &&
				    strcmp(an, want_path[depth]) == 0)
					note_opaque(f, c, "inherited from elsewhere");
			}
			continue;
		}
		if (c->kind != NIX_NODE_BINDING)
			continue;
		n = binding_path(f, c, &names);
		if (n == -ENOMEM)
			return n;
		if (n < 0)
			continue;
		r = 0;
		for (k = 0, level = depth; k < n; k++, level++) {
			if (level == 2) {
				r = k + 1 == n
					    ? found_entry(f, names[k], c, set, depth, nix_node_child(c, 1))
					    : 0;
				if (r == 0 && k + 1 < n) {
					/* workspaces.NAME.attr = ...; a piece of an entry */
					struct ws_entry *e;
					size_t idx;

					e = entry_get(f, names[k], c, set, depth, &idx);
					if (!e) {
						r = -ENOMEM;
						break;
					}
					if (k + 2 == n) {
						r = entry_attr(f, idx, names[k + 1], NULL,
							       nix_node_child(c, 1), true);
					} else {
						WS_AUTOFREE char *vt =
							nix_node_text(f->tree, nix_node_child(c, 1));
						json_object_object_add(entry_extra(e), names[k + 1],
								       json_object_new_string(vt ? vt : ""));
					}
				}
				break;
			}
			if (strcmp(names[k], want_path[level]) != 0)
				break;
			if (k + 1 == n) {
				r = walk_value(f, nix_node_child(c, 1), level + 1, false);
				break;
			}
		}
		if (depth == 0 && n >= 2 && strcmp(names[0], SW_ATTR) == 0) {
			f->dotted = c;
			f->dotted_set = set;
		}
		names_free(names, n);
		if (r < 0)
			return r;
	}
	return 0;

module:
	for (size_t i = 0; i < nc; i++) {
		const struct nix_node *c = nix_node_child(set, i);
		char **names = NULL;
		int n;

		if (c->kind != NIX_NODE_BINDING)
			continue;
		n = binding_path(f, c, &names);
		if (n == -ENOMEM)
			return n;
		if (n < 0)
			continue;
		r = 0;
		if (strcmp(names[0], "config") == 0) {
			if (n == 1) {
				r = walk_value(f, nix_node_child(c, 1), 0, false);
			} else if (n >= 2 && strcmp(names[1], SW_ATTR) == 0) {
				/* config.sandboxed-workspace... = ...; treated like a root binding of
				 * a set we cannot add blocks to */
				note_opaque(f, c, "dotted 'config.sandboxed-workspace' paths");
			}
		}
		names_free(names, n);
		if (r < 0)
			return r;
	}
	return 0;
}

static int walk_value(struct flake *f, const struct nix_node *n, int depth, bool top)
{
	const struct nix_node *inner;
	int r;

	if (++f->depth_guard > 200) {
		f->depth_guard--;
		return 0;
	}
	r = 0;
	switch (n->kind) {
	case NIX_NODE_PAREN:
		r = walk_value(f, nix_node_child(n, 0), depth, top);
		break;
	case NIX_NODE_LAMBDA:
		if (top)
			r = walk_value(f, nix_node_child(n, 1), depth, top);
		else
			note_opaque(f, n, "a function");
		break;
	case NIX_NODE_WITH:
	case NIX_NODE_ASSERT:
		r = walk_value(f, nix_node_child(n, 1), depth, top);
		break;
	case NIX_NODE_LET_IN:
		r = walk_value(f, nix_node_child(n, nix_node_n_children(n) - 1), depth, top);
		break;
	case NIX_NODE_ATTRSET:
		r = walk_set(f, n, depth, top);
		break;
	case NIX_NODE_APPLY:
		switch (unwrap_once(f, n, &inner)) {
		case WRAP_ONE:
			r = walk_value(f, inner, depth, top);
			break;
		case WRAP_MERGE:
			for (size_t i = 0; r == 0 && i < nix_node_n_children(inner); i++)
				r = walk_value(f, nix_node_child(inner, i), depth, top);
			break;
		default:
			note_opaque(f, n, "a function call");
			break;
		}
		break;
	case NIX_NODE_IDENT:
		note_opaque(f, n, "a variable");
		break;
	default:
		note_opaque(f, n, "not a literal attribute set");
		break;
	}
	f->depth_guard--;
	return r;
}

static void entry_clear(struct ws_entry *e)
{
	free(e->name);
	free(e->type);
	free(e->ip);
	free(e->ip_expr);
	free(e->config);
	free(e->host_key);
	json_putp(&e->extra);
	json_putp(&e->problems);
}

struct flake *flake_ref(struct flake *f)
{
	if (f)
		f->refs++;
	return f;
}

void flake_free(struct flake *f)
{
	if (!f)
		return;
	if (f->refs > 0) {
		f->refs--;
		return;
	}
	for (size_t i = 0; i < f->n; i++)
		entry_clear(&f->entries[i]);
	free(f->entries);
	free(f->info);
	free(f->slots);
	nix_eval_free(f->ev);
	nix_tree_free(f->tree);
	free(f->buf);
	free(f->relpath);
	free(f);
}

int flake_parse(const char *relpath, const char *buf, size_t len, struct flake **ret_flake,
		struct ws_err *err)
{
	struct flake *f = calloc(1, sizeof(*f));
	int r;

	if (!f)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	f->relpath = strdup(relpath ? relpath : "default.nix");
	f->buf = malloc(len + 1);
	if (!f->relpath || !f->buf) {
		flake_free(f);
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	memcpy(f->buf, buf, len);
	f->buf[len] = '\0';
	f->len = len;
	r = nix_tree_parse(f->buf, f->len, f->relpath, &f->tree, err);
	if (r < 0) {
		flake_free(f);
		return r;
	}
	r = nix_eval_new(f->tree, &f->ev);
	if (r == 0)
		r = walk_value(f, nix_tree_expr(f->tree), 0, true);
	if (r < 0) {
		flake_free(f);
		return ws_fail(err, r, 0, "cannot read '%s': %s", relpath, strerror(-r));
	}
	for (size_t i = 0; i < f->n; i++) {
		struct ws_entry *e = &f->entries[i];
		int t = e->type ? ws_type_from_string(e->type) : -EINVAL;
		if (ws_entry_n_problems(e) > 0)
			continue; /* unreadable: nothing more to say */
		if (t < 0)
			ws_entry_add_problem(e, "TYPE_INVALID",
					     "type %s%s%s is not vm, container or incus",
				    e->type ? "\"" : "", e->type ? e->type : "(not a literal)",
				    e->type ? "\"" : "");
		if (ws_name_validate(e->name, t < 0 ? WS_TYPE_COUNT : (enum ws_type)t, NULL) < 0) {
			struct ws_err nerr = {0};

			(void)ws_name_validate(e->name, t < 0 ? WS_TYPE_COUNT : (enum ws_type)t,
					       &nerr);
			ws_entry_add_problem(e, "NAME_INVALID", "%s", nerr.message);
			ws_err_clear(&nerr);
		}
		if (!e->config)
			ws_entry_add_problem(e, "CONFIG_MISSING", "the entry has no config");
	}
	*ret_flake = f;
	return 0;
}

const char *flake_bytes(const struct flake *f, size_t *ret_len)
{
	if (ret_len)
		*ret_len = f->len;
	return f->buf;
}

size_t flake_n_entries(const struct flake *f)
{
	return f->n;
}

struct ws_entry *flake_entries(struct flake *f)
{
	return f->entries;
}

struct ws_entry *flake_find(struct flake *f, const char *name)
{
	ssize_t i = entry_index(f, name);

	return i >= 0 ? &f->entries[i] : NULL;
}

static const struct entry_info *find_info(const struct flake *f, const char *name)
{
	ssize_t i = entry_index(f, name);

	if (i >= 0)
		return &f->info[i];
	return NULL;
}

/* ---- planning edits ------------------------------------------------------------------ */

/* A growable output string. */




/* A Nix string literal for @s. */
static void sb_nix_string(struct ws_buf *b, const char *s)
{
	ws_buf_puts(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\' || (*s == '$' && s[1] == '{'))
			ws_buf_add(b, "\\", 1);
		if (*s == '\n')
			ws_buf_puts(b, "\\n");
		else if (*s == '\r')
			ws_buf_puts(b, "\\r");
		else if (*s == '\t')
			ws_buf_puts(b, "\\t");
		else
			ws_buf_add(b, s, 1);
	}
	ws_buf_puts(b, "\"");
}

static void sb_attr(struct ws_buf *b, const char *name)
{
	if (ws_nix_ident_ok(name))
		ws_buf_puts(b, name);
	else
		sb_nix_string(b, name);
}

/* The layout an insertion copies. */
struct layout {
	const char *nl;       /* "\n" or "\r\n" */
	char indent[128];     /* of the new binding's line */
	char inner[128];      /* of the lines inside the new entry */
	char unit[64];        /* one level of indentation */
	bool own_line;        /* a new line after the anchor (else inline, after it) */
	bool one_line;        /* the entry's attributes on one line */
	size_t at;            /* insertion offset */
};

/* @a followed by @b in @dst, cut to @size. */
static void join(char *dst, size_t size, const char *a, const char *b)
{
	size_t la = strnlen(a, size - 1), lb = strnlen(b, size - 1 - la);

	memmove(dst, a, la);
	memcpy(dst + la, b, lb);
	dst[la + lb] = '\0';
}

static size_t line_start(const struct flake *f, size_t off)
{
	while (off > 0 && f->buf[off - 1] != '\n')
		off--;
	return off;
}

/* The leading white space of the line holding @off. */
static void line_indent(const struct flake *f, size_t off, char *buf, size_t size)
{
	size_t s = line_start(f, off), e = s;

	while (e < f->len && (f->buf[e] == ' ' || f->buf[e] == '\t'))
		e++;
	if (e - s >= size)
		e = s + size - 1;
	memcpy(buf, f->buf + s, e - s);
	buf[e - s] = '\0';
}

static bool only_ws_before(const struct flake *f, size_t off)
{
	for (size_t i = line_start(f, off); i < off; i++)
		if (f->buf[i] != ' ' && f->buf[i] != '\t')
			return false;
	return true;
}

static bool same_line(const struct flake *f, size_t a, size_t b)
{
	return memchr(f->buf + a, '\n', b - a) == NULL;
}

static const char *newline_at(const struct flake *f, size_t off)
{
	const char *p = memchr(f->buf + off, '\n', f->len - off);

	if (!p) {
		for (p = NULL; off > 0; off--)
			if (f->buf[off - 1] == '\n') {
				p = f->buf + off - 1;
				break;
			}
	}
	if (p && p > f->buf && p[-1] == '\r')
		return "\r\n";
	return "\n";
}

/* One level of indentation: what @set's first binding adds to the set's own line, else the
 * first indented line of the file, else two spaces. */
static void indent_unit(const struct flake *f, const struct nix_node *set, char *unit, size_t size)
{
	char outer[128], in[128];

	if (set && nix_node_n_children(set) > 0) {
		const struct nix_node *c = nix_node_child(set, 0);

		line_indent(f, set->start, outer, sizeof(outer));
		line_indent(f, c->start, in, sizeof(in));
		if (only_ws_before(f, c->start) && strlen(in) > strlen(outer) &&
		    strncmp(in, outer, strlen(outer)) == 0) {
			snprintf(unit, size, "%s", in + strlen(outer));
			return;
		}
	}
	for (size_t i = 0; i < f->len; i++) {
		if ((i == 0 || f->buf[i - 1] == '\n') && (f->buf[i] == ' ' || f->buf[i] == '\t')) {
			size_t e = i;

			if (f->buf[i] == '\t') {
				snprintf(unit, size, "\t");
				return;
			}
			while (e < f->len && f->buf[e] == ' ')
				e++;
			if (e < f->len && f->buf[e] != '\n' && f->buf[e] != '\r') {
				snprintf(unit, size, "%.*s", (int)(e - i < size ? e - i : size - 1),
					 f->buf + i);
				return;
			}
		}
	}
	snprintf(unit, size, "  ");
}

/* Where text goes after @anchor (a binding), and how it must look. */
static void layout_after(const struct flake *f, const struct nix_node *set,
			 const struct nix_node *anchor, struct layout *lo)
{
	size_t p = anchor->end, q = p;

	memset(lo, 0, sizeof(*lo));
	indent_unit(f, set, lo->unit, sizeof(lo->unit));
	/* keep a trailing comment on the anchor's line with the anchor */
	while (q < f->len && (f->buf[q] == ' ' || f->buf[q] == '\t'))
		q++;
	if (q < f->len && f->buf[q] == '#') {
		while (q < f->len && f->buf[q] != '\n' && f->buf[q] != '\r')
			q++;
	} else if (q + 1 < f->len && f->buf[q] == '/' && f->buf[q + 1] == '*') {
		const char *end = memmem(f->buf + q + 2, f->len - q - 2, "*/", 2);

		if (end && same_line(f, q, (size_t)(end - f->buf))) {
			q = (size_t)(end - f->buf) + 2;
			while (q < f->len && (f->buf[q] == ' ' || f->buf[q] == '\t'))
				q++;
		}
	}
	lo->own_line = q >= f->len || f->buf[q] == '\n' || f->buf[q] == '\r';
	lo->at = lo->own_line ? q : p;
	lo->nl = newline_at(f, p);
	line_indent(f, anchor->start, lo->indent, sizeof(lo->indent));
	join(lo->inner, sizeof(lo->inner), lo->indent, lo->unit);
	lo->one_line = !lo->own_line;
}

/* Writes `PATH = { type = ...; ... };` (without leading indentation). */
static void write_entry(struct ws_buf *b, const struct layout *lo, char **path, size_t n,
			const struct flake_new_entry *e)
{
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			ws_buf_puts(b, ".");
		sb_attr(b, path[i]);
	}
	if (lo->one_line) {
		ws_buf_printf(b, " = { type = \"%s\"; config = %s; ip = ", ws_type_to_string(e->type),
			  e->config);
		sb_nix_string(b, e->ip);
		ws_buf_puts(b, e->auto_start ? "; autoStart = true; };" : "; };");
		return;
	}
	ws_buf_printf(b, " = {%s", lo->nl);
	ws_buf_printf(b, "%stype = \"%s\";%s", lo->inner, ws_type_to_string(e->type), lo->nl);
	ws_buf_printf(b, "%sconfig = %s;%s", lo->inner, e->config, lo->nl);
	ws_buf_printf(b, "%sip = ", lo->inner);
	sb_nix_string(b, e->ip);
	ws_buf_printf(b, ";%s", lo->nl);
	if (e->auto_start)
		ws_buf_printf(b, "%sautoStart = true;%s", lo->inner, lo->nl);
	ws_buf_printf(b, "%s};", lo->indent);
}

/* A planned splice: replace [from, to) with text. */
struct splice {
	size_t from, to;
	char *text;
};

static const struct nix_node *last_binding(const struct nix_node *set)
{
	const struct nix_node *last = NULL;

	for (size_t i = 0; i < nix_node_n_children(set); i++) {
		const struct nix_node *c = nix_node_child(set, i);

		if (c->kind == NIX_NODE_BINDING || c->kind == NIX_NODE_INHERIT)
			last = c;
	}
	return last;
}

/* Text @body (a binding, built by @gen for a layout) goes into @set: after @anchor (or the
 * set's last binding), or into the empty set. */
typedef void (*gen_fn)(struct ws_buf *b, const struct layout *lo, void *userdata);

static int plan_in_set(const struct flake *f, const struct nix_node *set,
		       const struct nix_node *anchor, bool blank_line, gen_fn gen, void *userdata,
		       struct splice *ret)
{
	struct ws_buf b = {0};
	struct layout lo;

	if (!anchor)
		anchor = last_binding(set);
	if (anchor) {
		layout_after(f, set, anchor, &lo);
		if (lo.own_line) {
			ws_buf_puts(&b, lo.nl);
			if (blank_line)
				ws_buf_puts(&b, lo.nl);
			ws_buf_puts(&b, lo.indent);
		} else {
			ws_buf_puts(&b, " ");
		}
		gen(&b, &lo, userdata);
		ret->from = ret->to = lo.at;
	} else {
		int64_t ob = nix_node_token(set, NIX_TOK_LBRACE);
		int64_t cb = nix_node_token(set, NIX_TOK_RBRACE);
		char outer[128];
		bool blank = true;

		if (ob < 0 || cb < 0 || cb <= ob)
			return -EINVAL;
		for (int64_t i = ob + 1; i < cb; i++)
			if (f->buf[i] != ' ' && f->buf[i] != '\t' && f->buf[i] != '\n' &&
			    f->buf[i] != '\r')
				blank = false;
		memset(&lo, 0, sizeof(lo));
		indent_unit(f, NULL, lo.unit, sizeof(lo.unit));
		lo.nl = newline_at(f, (size_t)ob);
		line_indent(f, (size_t)ob, outer, sizeof(outer));
		/* Only insertions: the blank between the braces is the user's and stays. */
		const char *nl_in = blank ? memchr(f->buf + ob + 1, '\n', (size_t)(cb - ob - 1))
					  : NULL;

		ret->from = (size_t)ob + 1;
		if (!memchr(f->buf, '\n', f->len)) {
			lo.one_line = true;
			ws_buf_puts(&b, " ");
			gen(&b, &lo, userdata);
			ws_buf_puts(&b, " ");
		} else if (nl_in) {
			/* `{` NL ... `}`: a line of its own right after the brace's line */
			join(lo.indent, sizeof(lo.indent), outer, lo.unit);
			join(lo.inner, sizeof(lo.inner), lo.indent, lo.unit);
			ws_buf_puts(&b, lo.indent);
			gen(&b, &lo, userdata);
			ws_buf_puts(&b, lo.nl);
			ret->from = (size_t)(nl_in - f->buf) + 1;
		} else {
			join(lo.indent, sizeof(lo.indent), outer, lo.unit);
			join(lo.inner, sizeof(lo.inner), lo.indent, lo.unit);
			ws_buf_printf(&b, "%s%s", lo.nl, lo.indent);
			gen(&b, &lo, userdata);
			ws_buf_puts(&b, lo.nl);
			if (blank) {
				/* `{ }`: the entry goes before the closing brace */
				ws_buf_puts(&b, outer);
				ret->from = (size_t)cb;
			}
		}
		ret->to = ret->from;
	}
	if (b.oom) {
		free(b.s);
		return -ENOMEM;
	}
	ret->text = b.s ? b.s : strdup("");
	return ret->text ? 0 : -ENOMEM;
}

struct entry_gen {
	const struct flake_new_entry *e;
	char *path[3];
	size_t n;
	const struct nix_node *like; /* an entry whose one-line/multi-line layout is copied */
	const struct flake *f;
	bool block; /* wrap in `sandboxed-workspace = { enable = true; ... };` */
	const struct flake_edit_hooks *hooks; /* may be NULL */
};

static void gen_entry(struct ws_buf *b, const struct layout *lo0, void *userdata)
{
	struct entry_gen *g = userdata;
	struct layout lo = *lo0;

	if (g->like && g->f && same_line(g->f, g->like->start, g->like->end))
		lo.one_line = true;
	if (g->like && g->f && !lo.one_line) {
		/* copy the sibling's inner indentation when it has its own lines */
		const struct nix_node *c = nix_node_n_children(g->like) ? nix_node_child(g->like, 0)
									 : NULL;

		if (c && only_ws_before(g->f, c->start))
			line_indent(g->f, c->start, lo.inner, sizeof(lo.inner));
	}
	if (!g->block) {
		write_entry(b, &lo, g->path, g->n, g->e);
		return;
	}
	if (lo.one_line) {
		ws_buf_puts(b, SW_ATTR " = { enable = true; ");
		write_entry(b, &lo, g->path, g->n, g->e);
		ws_buf_puts(b, " };");
		return;
	}
	{
		struct layout in = lo;

		join(in.indent, sizeof(in.indent), lo.indent, lo.unit);
		join(in.inner, sizeof(in.inner), in.indent, lo.unit);
		ws_buf_printf(b, SW_ATTR " = {%s%senable = true;%s%s", lo.nl, in.indent, lo.nl,
			  in.indent);
		write_entry(b, &in, g->path, g->n, g->e);
		ws_buf_printf(b, "%s%s};", lo.nl, lo.indent);
	}
}

static int apply_splice(const struct flake *f, const struct splice *s, char **ret_buf,
			size_t *ret_len)
{
	size_t tl = strlen(s->text), len = f->len - (s->to - s->from) + tl;
	char *out = malloc(len + 1);

	if (!out)
		return -ENOMEM;
	memcpy(out, f->buf, s->from);
	memcpy(out + s->from, s->text, tl);
	memcpy(out + s->from + tl, f->buf + s->to, f->len - s->to);
	out[len] = '\0';
	*ret_buf = out;
	*ret_len = len;
	return 0;
}

static int unsupported_at(const struct flake *f, const struct nix_node *n, const char *why,
			  struct ws_err *err)
{
	ws_fail_at(err, -EINVAL, WS_E_CONFIG_UNSUPPORTED, f->relpath, node_line(f, n),
		   node_col(f, n),
		   "%s:%d: the workspaces are declared by %s, which cannot be edited safely",
		   f->relpath, node_line(f, n), why);
	ws_err_set_str(err, "reason", why);
	return -EINVAL;
}

/* Checks that the edited file parses and declares @e as requested. */
static int check_added(const struct flake *f, const char *buf, size_t len,
		       const struct flake_new_entry *e, struct flake **keep)
{
	struct flake *nf = NULL;
	struct ws_entry *ne;
	struct ws_err perr = {0};
	int r;

	r = flake_parse(f->relpath, buf, len, &nf, &perr);
	ws_err_clear(&perr);
	if (r < 0)
		return r == -ENOMEM ? r : -EPROTO;
	ne = flake_find(nf, e->name);
	r = 0;
	if (!ne || flake_n_entries(nf) != f->n + 1 || !ne->type ||
	    strcmp(ne->type, ws_type_to_string(e->type)) != 0 || !ne->ip ||
	    strcmp(ne->ip, e->ip) != 0 || !ne->config || strcmp(ne->config, e->config) != 0 ||
	    ne->auto_start != (e->auto_start ? 1 : 0))
		r = -EPROTO;
	if (r == 0 && keep) {
		*keep = nf; /* the caller wants the checked parse: no need to parse again */
		return 0;
	}
	flake_free(nf);
	return r;
}

static int try_plan(const struct flake *f, const struct nix_node *set,
		    const struct nix_node *anchor, bool blank, struct entry_gen *g,
		    const struct flake_new_entry *e, char **ret_buf, size_t *ret_len,
		    struct flake **keep)
{
	struct splice s = {0};
	char *out = NULL;
	size_t len = 0;
	int r;

	r = plan_in_set(f, set, anchor, blank, gen_entry, g, &s);
	if (r < 0)
		return r;
	r = apply_splice(f, &s, &out, &len);
	free(s.text);
	if (r < 0)
		return r;
	if (g->hooks && g->hooks->candidate)
		g->hooks->candidate(g->hooks->userdata, out, len);
	r = check_added(f, out, len, e, keep);
	if (r < 0) {
		if (g->hooks && g->hooks->rejected)
			g->hooks->rejected(g->hooks->userdata, out);
		free(out);
		return r;
	}
	*ret_buf = out;
	*ret_len = len;
	return 0;
}

static int add_entry(const struct flake *f, const struct flake_new_entry *e,
		     const struct flake_edit_hooks *hooks, char **ret_buf, size_t *ret_len,
		     struct flake **keep, struct ws_err *err);

int flake_add_entry_parsed(const struct flake *f, const struct flake_new_entry *e,
			   const struct flake_edit_hooks *hooks, char **ret_buf, size_t *ret_len,
			   struct flake **ret_flake, struct ws_err *err)
{
	struct flake *keep = NULL;
	int r = add_entry(f, e, hooks, ret_buf, ret_len, ret_flake ? &keep : NULL, err);

	if (r == 0 && ret_flake)
		*ret_flake = keep;
	return r;
}

int flake_add_entry(const struct flake *f, const struct flake_new_entry *e, char **ret_buf,
		    size_t *ret_len, struct ws_err *err)
{
	return add_entry(f, e, NULL, ret_buf, ret_len, NULL, err);
}

static int add_entry(const struct flake *f, const struct flake_new_entry *e,
		     const struct flake_edit_hooks *hooks, char **ret_buf, size_t *ret_len,
		     struct flake **keep, struct ws_err *err)
{
	struct entry_gen g = {.e = e, .f = f, .hooks = hooks};
	uint32_t best = 0;
	const struct entry_info *last = NULL;
	int r = -EPROTO;

	if (!e->name || !e->config || !e->ip || e->type >= WS_TYPE_COUNT)
		return ws_fail(err, -EINVAL, WS_RPC_INVALID_PARAMS, "incomplete entry");
	for (size_t i = 0; i < f->n; i++)
		if (strcmp(f->entries[i].name, e->name) == 0) {
			ws_fail_at(err, -EEXIST, WS_E_EXISTS, f->relpath, f->entries[i].line, 0,
				   "workspace \"%s\" is already declared at %s:%d", e->name,
				   f->relpath, f->entries[i].line);
			ws_err_set_str(err, WS_KEY_NAME, e->name);
			return -EEXIST;
		}
	if (f->opaque)
		return unsupported_at(f, f->opaque, f->opaque_why, err);
	g.path[2] = (char *)(uintptr_t)e->name;
	for (size_t i = 0; i < f->n; i++)
		if (!last || f->info[i].head->start >= best) {
			last = &f->info[i];
			best = f->info[i].head->start;
		}
	if (last) {
		/* after the last entry, in its form; then after the others' */
		for (size_t pass = 0; pass <= f->n; pass++) {
			const struct entry_info *in = last;

			if (pass > 0) {
				in = &f->info[f->n - pass];
				if (in == last)
					continue;
			}
			g.n = 3 - (size_t)in->depth;
			for (size_t k = 0; k < g.n; k++)
				g.path[k] = (char *)(uintptr_t)(k + (size_t)in->depth < 2
						 ? want_path[k + (size_t)in->depth]
						 : e->name);
			g.like = in->lit;
			r = try_plan(f, in->set, in->head, false, &g, e, ret_buf, ret_len, keep);
			if (r == 0 || r == -ENOMEM)
				break;
		}
	} else if (f->block[2]) {
		g.n = 1;
		g.path[0] = (char *)(uintptr_t)e->name;
		r = try_plan(f, f->block[2], NULL, false, &g, e, ret_buf, ret_len, keep);
	} else if (f->block[1]) {
		g.n = 2;
		g.path[0] = (char *)(uintptr_t)WS_ATTR;
		g.path[1] = (char *)(uintptr_t)e->name;
		r = try_plan(f, f->block[1], NULL, false, &g, e, ret_buf, ret_len, keep);
	} else if (f->dotted) {
		g.n = 3;
		g.path[0] = (char *)(uintptr_t)SW_ATTR;
		g.path[1] = (char *)(uintptr_t)WS_ATTR;
		g.path[2] = (char *)(uintptr_t)e->name;
		r = try_plan(f, f->dotted_set, f->dotted, false, &g, e, ret_buf, ret_len, keep);
	} else if (f->root_set) {
		g.n = 2;
		g.path[0] = (char *)(uintptr_t)WS_ATTR;
		g.path[1] = (char *)(uintptr_t)e->name;
		g.block = true;
		r = try_plan(f, f->root_set, NULL, true, &g, e, ret_buf, ret_len, keep);
	} else {
		return unsupported_at(f, nix_tree_expr(f->tree),
				      "an expression that is not an attribute set", err);
	}
	if (r == -ENOMEM)
		return ws_fail(err, r, 0, "out of memory");
	if (r < 0)
		return ws_fail(err, -EPROTO, 0,
			       "internal error: no safe place for workspace \"%s\" in '%s'",
			       e->name, f->relpath);
	return 0;
}

struct hostkey_gen {
	const char *key;
};

static void gen_hostkey(struct ws_buf *b, const struct layout *lo, void *userdata)
{
	struct hostkey_gen *g = userdata;

	ws_buf_puts(b, "hostKey = ");
	sb_nix_string(b, g->key);
	ws_buf_puts(b, ";");
}

static int set_hostkey(const struct flake *f, const char *name, const char *key, char **ret_buf,
		       size_t *ret_len, struct flake **keep, struct ws_err *err);

int flake_set_hostkey(const struct flake *f, const char *name, const char *key, char **ret_buf,
		      size_t *ret_len, struct ws_err *err)
{
	return set_hostkey(f, name, key, ret_buf, ret_len, NULL, err);
}

int flake_set_hostkey_parsed(const struct flake *f, const char *name, const char *key,
			     char **ret_buf, size_t *ret_len, struct flake **ret_flake,
			     struct ws_err *err)
{
	return set_hostkey(f, name, key, ret_buf, ret_len, ret_flake, err);
}

static int set_hostkey(const struct flake *f, const char *name, const char *key, char **ret_buf,
		       size_t *ret_len, struct flake **keep, struct ws_err *err)
{
	const struct entry_info *in = find_info(f, name);
	struct hostkey_gen g = {.key = key};
	struct splice s = {0};
	struct flake *nf = NULL;
	struct ws_entry *ne;
	struct ws_err perr = {0};
	char *out = NULL;
	size_t len = 0;
	int r;

	if (!in) {
		ws_fail(err, -ENOENT, WS_E_NOT_FOUND, "no workspace \"%s\" in '%s'", name,
			f->relpath);
		ws_err_set_str(err, WS_KEY_NAME, name);
		return -ENOENT;
	}
	if (in->hostkey) {
		struct ws_buf b = {0};

		sb_nix_string(&b, key);
		if (b.oom) {
			free(b.s);
			return ws_fail(err, -ENOMEM, 0, "out of memory");
		}
		s.from = in->hostkey->start;
		s.to = in->hostkey->end;
		s.text = b.s;
	} else if (in->lit && !in->hostkey_other) {
		r = plan_in_set(f, in->lit, NULL, false, gen_hostkey, &g, &s);
		if (r < 0)
			return ws_fail(err, r, 0, "out of memory");
	} else {
		return unsupported_at(f, in->head,
				      in->hostkey_other ? "a hostKey that is not a string literal"
							: "an entry that is not a literal set",
				      err);
	}
	r = apply_splice(f, &s, &out, &len);
	free(s.text);
	if (r < 0)
		return ws_fail(err, r, 0, "out of memory");
	r = flake_parse(f->relpath, out, len, &nf, &perr);
	ws_err_clear(&perr);
	ne = r == 0 ? flake_find(nf, name) : NULL;
	if (!ne || !ne->host_key || strcmp(ne->host_key, key) != 0 ||
	    flake_n_entries(nf) != f->n) {
		flake_free(nf);
		free(out);
		return ws_fail(err, -EPROTO, 0,
			       "internal error: setting the host key of \"%s\" in '%s' failed", name,
			       f->relpath);
	}
	if (keep)
		*keep = nf; /* the checked parse: the caller's new model */
	else
		flake_free(nf);
	*ret_buf = out;
	*ret_len = len;
	return 0;
}

const char *flake_workspace_template(void)
{
	/* The same bytes for every workspace: neither the name nor the type is written here,
	 * so the file never contradicts default.nix after a rename or a change of type, and
	 * every workspace file is the one git blob (a create writes no new object for it). */
	return "# A sandboxed workspace: a NixOS module. Its host name is its workspace name\n"
	       "# (this file's name without .nix); its type and IP address are declared in\n"
	       "# ../default.nix, under sandboxed-workspace.workspaces.\n"
	       "{ config, lib, pkgs, ... }:\n"
	       "\n"
	       "{\n"
	       "  environment.systemPackages = with pkgs; [ ];\n"
	       "}\n";
}
