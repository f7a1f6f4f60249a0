/* SPDX-License-Identifier: MIT */
/* nix_eval: what it evaluates, what it refuses, and that its work is bounded. */
#include <stdbool.h>

#include "harness.h"

#include "nix_eval.h"
#include "nix_tree.h"
#include "ws_proto.h"

static struct nix_tree *parse(const char *src)
{
	struct nix_tree *t = NULL;
	struct ws_err err = {0};
	int r = nix_tree_parse(src, strlen(src), "test.nix", &t, &err);

	if (r < 0)
		fail_msg("cannot parse '%s': %s", src, err.message);
	ws_err_clear(&err);
	return t;
}

/* Evaluates the file's expression; returns its string form ("s:..", "i:..", "b:..") or
 * "E<errno>". */
static char *eval_text(const char *src)
{
	struct nix_tree *t = parse(src);
	struct nix_eval *ev = NULL;
	const struct nix_value *v;
	char *out = NULL;
	int r;

	assert_int_equal(nix_eval_new(t, &ev), 0);
	r = nix_eval_node(ev, nix_tree_expr(t), &v);
	if (r < 0)
		assert_true(asprintf(&out, "E%d", -r) > 0);
	else if (nix_value_kind(v) == NIX_V_STRING)
		assert_true(asprintf(&out, "s:%s", nix_value_str(v)) > 0);
	else if (nix_value_kind(v) == NIX_V_PATH)
		assert_true(asprintf(&out, "p:%s", nix_value_str(v)) > 0);
	else if (nix_value_kind(v) == NIX_V_INT)
		assert_true(asprintf(&out, "i:%lld", (long long)nix_value_int(v)) > 0);
	else if (nix_value_kind(v) == NIX_V_BOOL)
		assert_true(asprintf(&out, "b:%d", nix_value_bool(v)) > 0);
	else
		assert_true(asprintf(&out, "k:%d", (int)nix_value_kind(v)) > 0);
	nix_eval_free(ev);
	nix_tree_free(t);
	return out;
}

#define EXPECT(src, want)                                                                          \
	do {                                                                                       \
		char *got_ = eval_text(src);                                                       \
		if (strcmp(got_, want) != 0)                                                       \
			fail_msg("%s\n  got  %s\n  want %s", src, got_, want);                     \
		free(got_);                                                                        \
	} while (0)

static void test_values(void **state)
{
	EXPECT("\"a\" + \"b\"", "s:ab");
	EXPECT("1 + 2 * 3 - 4", "i:3");
	EXPECT("-5", "i:-5");
	EXPECT("\"x\\ty\\\"\\${z}\"", "s:x\ty\"${z}");
	EXPECT("toString 42", "s:42");
	EXPECT("builtins.toString 7", "s:7");
	EXPECT("toString true + toString null", "s:1");
	EXPECT("./a/b.nix", "p:./a/b.nix");
	EXPECT("''\n  indented\n''", "s:indented\n");
	EXPECT("let x = 1; in if x == 1 then \"y\" else \"n\"", "s:y");
	EXPECT("let x = \"a\"; in if x != \"a\" || false then 1 else 2", "i:2");
	EXPECT("!(1 == 2) && true", "b:1");
	EXPECT("rec { a = \"x\"; b = a + \"y\"; }.b", "s:xy");
	EXPECT("{ a = { b = \"deep\"; }; }.a.b", "s:deep");
	EXPECT("{ a = 1; }.b or \"default\"", "s:default");
	EXPECT("let s = { x = \"X\"; }; in { inherit (s) x; }.x", "s:X");
	EXPECT("let y = \"Y\"; in { inherit y; }.y", "s:Y");
	EXPECT("let k = \"b\"; in { b = 3; }.${k}", "i:3");
}

static void test_functions(void **state)
{
	EXPECT("(x: x + 1) 41", "i:42");
	EXPECT("({ a ? \"d\", b }: a + b) { b = \"B\"; }", "s:dB");
	EXPECT("({ a ? \"d\", b }: a + b) { a = \"A\"; b = \"B\"; }", "s:AB");
	EXPECT("({ a, ... }@args: a + args.z) { a = \"A\"; z = \"Z\"; }", "s:AZ");
	EXPECT("(args@{ a, ... }: args.a) { a = 1; }", "i:1");
	/* fixture 11's helper */
	EXPECT("let subnet = \"192.168.83\"; mkWs = type: ip: { inherit type; "
	       "ip = \"${subnet}.${toString ip}\"; }; in (mkWs \"container\" 50).ip",
	       "s:192.168.83.50");
	EXPECT("let subnet = \"192.168.83\"; mkWs = type: ip: { inherit type; "
	       "ip = \"${subnet}.${toString ip}\"; }; in (mkWs \"container\" 50).type",
	       "s:container");
	/* laziness: an argument that cannot be evaluated is fine when unused */
	EXPECT("let f = a: b: b; in f (import ./x.nix) \"ok\"", "s:ok");
	/* lexical scope wins over `with` */
	EXPECT("with { x = 1; }; let x = \"lex\"; in x", "s:lex");
}

static void test_refusals(void **state)
{
	char want[16];

	snprintf(want, sizeof(want), "E%d", ENOEXEC);
	EXPECT("with { x = 1; }; x", want);
	EXPECT("import ./x.nix", want);
	EXPECT("builtins.readFile ./x", want);
	EXPECT("\"${1}\"", want);
	EXPECT("\"a\" + 1", want);
	EXPECT("if 1 then 2 else 3", want);
	EXPECT("{ a.b = 1; }.a", want);
	EXPECT("[ 1 ] == [ 1 ]", want);
	EXPECT("9223372036854775807 + 1", want);
	snprintf(want, sizeof(want), "E%d", ELOOP);
	EXPECT("let x = x; in x", want);
	EXPECT("let f = n: f (n + 1); in f 0", want);
	EXPECT("let f = n: if n == 100000000 then n else f (n + 1); in f 0", want);
}

/* nix_eval_node evaluates a node where it stands: enclosing let/rec bindings are visible,
 * function arguments are not. */
static void test_in_place(void **state)
{
	const char *src = "{ config, lib, ... }:\nlet\n  subnet = \"10.0.0\";\nin\n"
			  "{\n  a = \"${subnet}.5\";\n  b = config.foo;\n}\n";
	struct nix_tree *t = parse(src);
	struct nix_node *lam = nix_tree_expr(t), *let, *set;
	char *s = NULL;

	assert_int_equal(lam->kind, NIX_NODE_LAMBDA);
	let = nix_node_child(lam, 1);
	assert_int_equal(let->kind, NIX_NODE_LET_IN);
	set = nix_node_child(let, nix_node_n_children(let) - 1);
	assert_int_equal(set->kind, NIX_NODE_ATTRSET);
	assert_int_equal(nix_eval_string(t, nix_node_child(nix_node_child(set, 0), 1), &s), 0);
	assert_string_equal(s, "10.0.0.5");
	free(s);
	s = NULL;
	assert_int_equal(nix_eval_string(t, nix_node_child(nix_node_child(set, 1), 1), &s),
			 -ENOEXEC);
	assert_null(s);
	nix_tree_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_functions),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_in_place),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
