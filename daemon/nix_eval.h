/* SPDX-License-Identifier: MIT */
/* A tiny, safe evaluator over the lossless tree, for values users compute in machine files
 * (e.g. `ip = "${subnet}.${toString n}";` or `workspaces.a = mkWs "vm" 50;`). It knows
 * string and integer literals, interpolation, `+`, `-`, `*`, `==`, `!=`, `&&`, `||`, `!`,
 * `if`, `let`, `rec`, `inherit`, lambdas (plain and set patterns with defaults), attribute
 * selection on literal sets, and the builtins `toString`, `true`, `false`, `null`. Anything
 * else (function arguments such as config/lib/pkgs, names from `with`, imports, other
 * builtins) cannot be evaluated. Work is bounded by a step and a depth limit. Pure module. */
#ifndef NIX_EVAL_H
#define NIX_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nix_tree;
struct nix_node;

enum nix_vkind {
	NIX_V_NULL,
	NIX_V_BOOL,
	NIX_V_INT,
	NIX_V_STRING,
	NIX_V_PATH,    /* a path literal, kept as its source text */
	NIX_V_ATTRS,   /* a literal attribute set */
	NIX_V_LIST,
	NIX_V_LAMBDA,
	NIX_V_BUILTIN,
};

#define NIX_EVAL_MAX_STEPS 100000
#define NIX_EVAL_MAX_DEPTH 200

struct nix_eval;
struct nix_value;

/* An evaluation context over @t (borrowed: it must outlive the context). Every value it
 * returns belongs to the context and lives until nix_eval_free(). -ENOMEM. */
int nix_eval_new(const struct nix_tree *t, struct nix_eval **ret_ev);
void nix_eval_free(struct nix_eval *ev);

/* Evaluates the expression @n of the tree in the lexical scope of its place in the file
 * (enclosing let, rec and lambda bindings). Returns 0; -ENOEXEC when it cannot be evaluated
 * (unknown or unbound names, unsupported constructs, type errors); -ELOOP when a limit was
 * hit; -ENOMEM. Limits count from the context's creation. */
int nix_eval_node(struct nix_eval *ev, const struct nix_node *n, const struct nix_value **ret_v);

/* Selects attribute @name of an NIX_V_ATTRS value. -ENOENT when absent; otherwise as
 * nix_eval_node(). */
int nix_eval_attr(struct nix_eval *ev, const struct nix_value *set, const char *name,
		  const struct nix_value **ret_v);

/* Evaluates @n and returns its string value (malloc'd) when it is a string. -ENOEXEC when
 * it is not a string or cannot be evaluated. A one-shot convenience. */
int nix_eval_string(const struct nix_tree *t, const struct nix_node *n, char **ret_str);

enum nix_vkind nix_value_kind(const struct nix_value *v);
/* STRING: its contents; PATH: its source text; otherwise NULL. Borrowed from the context. */
const char *nix_value_str(const struct nix_value *v);
int64_t nix_value_int(const struct nix_value *v);
bool nix_value_bool(const struct nix_value *v);
/* ATTRS: the ATTRSET node the set was written as; otherwise NULL. */
const struct nix_node *nix_value_node(const struct nix_value *v);

#endif
