/* SPDX-License-Identifier: MIT */
/* libFuzzer entry for the Nix parser: any input must either be refused with a position
 * inside the input, or give a tree whose tokens are contiguous, nest inside their nodes and
 * print back byte for byte. Corpus: tests/data/fixtures/nix. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nix_tree.h"
#include "ws_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tree(const struct nix_tree *t)
{
	const struct nix_node **stack;
	size_t n = 0, cap = 256;
	char *v = NULL;

	if (nix_tree_check(t, NULL) < 0 || !nix_tree_expr(t))
		abort();
	/* the accessors must cope with every node they accept */
	stack = malloc(cap * sizeof(*stack));
	if (!stack)
		abort();
	stack[n++] = t->root;
	while (n) {
		const struct nix_node *nd = stack[--n];
		size_t nc = nix_node_n_children(nd);

		if (nd->kind == NIX_NODE_STRING && nix_string_value(t, nd, &v) == 0)
			free(v);
		if (nd->kind == NIX_NODE_ATTRPATH)
			for (size_t i = 0; i < nc; i++)
				if (nix_attr_name(t, nix_node_child(nd, i), &v) == 0)
					free(v);
		if (n + nc > cap) {
			while (n + nc > cap)
				cap *= 2;
			stack = realloc(stack, cap * sizeof(*stack));
			if (!stack)
				abort();
		}
		for (size_t i = 0; i < nc; i++)
			stack[n++] = nix_node_child(nd, i);
	}
	free(stack);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ws_err err = { 0 };
	struct nix_tree *t = NULL;
	char *out = NULL;
	size_t len = 0;
	int r;

	r = nix_tree_parse((const char *)data, size, "fuzz.nix", &t, &err);
	if (r < 0) {
		if (r != -EINVAL || err.code != WS_E_CONFIG_UNPARSABLE || err.line < 1 ||
		    err.column < 1 || (size_t)err.column > size + 1 || (size_t)err.line > size + 1)
			abort();
		ws_err_clear(&err);
		return 0;
	}
	check_tree(t);
	if (nix_tree_print(t, &out, &len) < 0)
		abort();
	if (len != size || memcmp(out, data, size) != 0) {
		fprintf(stderr, "round trip differs\n");
		abort();
	}
	free(out);
	nix_tree_free(t);
	return 0;
}
