/* SPDX-License-Identifier: MIT */
/* nix_tree: round trips of the fixtures and of every construct of the language, the tree
 * shapes the editor relies on, accessors, syntax and semantic errors with Nix's line and
 * column (checked against nix-instantiate --parse when it is installed), depth limits. */
#include <stdbool.h>

#include "harness.h"

#include <dirent.h>
#include <pthread.h>

#include "nix_tree.h"
#include "ws_proto.h"

/* The tree's invariants (nix_tree_check); on a violation, where it is. */
static void check_structure(const struct nix_tree *t)
{
	size_t off = 0;
	int r = nix_tree_check(t, &off);

	if (r < 0)
		fail_msg("tree invariant broken at byte %zu (%s)", off, strerror(-r));
}

/* Element @i of @n (a token or a child node), which must exist. */
static struct nix_elem elem_at(const struct nix_tree *t, const struct nix_node *n, size_t i)
{
	struct nix_elem_iter it = { 0 };
	struct nix_elem e;

	for (size_t k = 0; k <= i; k++)
		assert_true(nix_node_next_elem(t, n, &it, &e));
	return e;
}

/* The last element of @n. */
static struct nix_elem elem_last(const struct nix_tree *t, const struct nix_node *n)
{
	struct nix_elem_iter it = { 0 };
	struct nix_elem e, last = { 0 };

	while (nix_node_next_elem(t, n, &it, &e))
		last = e;
	return last;
}

/* Parses, checks structure and the byte-for-byte round trip; returns the tree. */
static struct nix_tree *parse_ok_len(const char *src, size_t len)
{
	struct ws_err err = { 0 };
	struct nix_tree *t = NULL;
	char *out = NULL;
	size_t out_len = 0;
	int r = nix_tree_parse(src, len, "test.nix", &t, &err);

	if (r < 0)
		fail_msg("'%s' did not parse: %d:%d %s", src, err.line, err.column, err.message);
	check_structure(t);
	assert_int_equal(nix_tree_print(t, &out, &out_len), 0);
	assert_int_equal(out_len, len);
	assert_memory_equal(out, src, len);
	free(out);
	return t;
}

static struct nix_tree *parse_ok(const char *src)
{
	return parse_ok_len(src, strlen(src));
}

/* nix_tree_check() finds a tree that breaks its invariants, and where. */
static void test_check_catches_breakage(void **unused)
{
	const char *src = "{ a = 1; b = [ 2 3 ]; }";
	struct nix_tree *t = parse_ok(src);
	struct nix_node *set = nix_tree_expr(t), *b = nix_node_child(set, 1);
	size_t off = 0;
	uint32_t start = b->start;

	assert_int_equal(nix_tree_check(t, &off), 0);
	b->start++; /* a gap before the second binding */
	assert_int_equal(nix_tree_check(t, &off), -EPROTO);
	assert_int_equal(off, start);
	b->start = start;
	b->parent = nix_node_child(set, 0); /* a child that names another parent */
	assert_int_equal(nix_tree_check(t, &off), -EPROTO);
	b->parent = set;
	assert_int_equal(nix_tree_check(t, NULL), 0);
	nix_tree_free(t);
}

/* Parses @src expecting a failure at @line:@col whose message contains @msg. */
static void parse_fail(const char *src, int line, int col, const char *msg)
{
	struct ws_err err = { 0 };
	struct nix_tree *t = NULL;
	int r = nix_tree_parse(src, strlen(src), "bad.nix", &t, &err);

	if (r != -EINVAL)
		fail_msg("'%s' parsed, expected an error at %d:%d", src, line, col);
	assert_null(t);
	assert_int_equal(err.code, WS_E_CONFIG_UNPARSABLE);
	assert_string_equal(err.file, "bad.nix");
	if (err.line != line || err.column != col || !strstr(err.message, msg))
		fail_msg("'%s': got %d:%d \"%s\", want %d:%d \"%s\"", src, err.line, err.column,
			 err.message, line, col, msg);
	ws_err_clear(&err);
}

static void test_fixtures_round_trip(void **state)
{
	DIR *d = opendir(WS_TEST_DATA "/fixtures/nix");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char rel[512];
		size_t len;
		char *src;
		struct nix_tree *t;

		if (!strstr(de->d_name, ".nix") || strstr(de->d_name, "14-unparsable"))
			continue;
		snprintf(rel, sizeof(rel), "fixtures/nix/%s", de->d_name);
		src = h_data(rel, &len);
		t = parse_ok_len(src, len);
		assert_int_equal(nix_check_buffer(src, len, de->d_name, NULL), 0);
		nix_tree_free(t);
		free(src);
		n++;
	}
	closedir(d);
	assert_true(n >= 14);
}

static void test_fixture_unparsable(void **state)
{
	size_t len;
	char *src = h_data("fixtures/nix/14-unparsable.nix", &len);
	struct ws_err err = { 0 };
	struct nix_tree *t = NULL;

	assert_int_equal(nix_tree_parse(src, len, "machines/x/default.nix", &t, &err), -EINVAL);
	assert_null(t);
	assert_int_equal(err.code, WS_E_CONFIG_UNPARSABLE);
	assert_string_equal(err.file, "machines/x/default.nix");
	assert_int_equal(err.line, 7);
	assert_int_equal(err.column, 14);
	assert_string_equal(err.message, "syntax error, unexpected '=', expecting ';'");
	ws_err_clear(&err);
	assert_int_equal(nix_check_buffer(src, len, "f.nix", &err), -EINVAL);
	assert_int_equal(err.line, 7);
	ws_err_clear(&err);
	free(src);
}

/* Constructs across the language, each a whole file Nix accepts. */
static const char *const good[] = {
	"1", "1.5", ".5e3", "1.e-2", "00.5", "9223372036854775807", "1.5e5",
	"\"a\\\"b\\${c}\\n\"", "\"$${x}\"", "\"${\"a\"}b${\"c\"}\"", "\"$\"", "\"a$\"",
	"''\n  a\n  ''$b ''' ''\\n\n''", "''a${\"b\"}''", "''$${x}''", "''a'$''", "''''",
	"./a/b", "a/b", "./a${\"b\"}", "./a/${\"b\"}/c", "~/x", "~/${\"x\"}", "<nixpkgs>",
	"<a/b.c>", "http://example.org/x?y=z&a=b", "a:a", "ssh://git@github.com/a/b.git",
	"[ 1 2 (3) \"x\" ./a ]", "rec { a = 1; b = a; }", "{ a.b.c = 1; a.b.d = 2; }",
	"{ \"a b\" = 1; ${\"c\"} = 2; }", "x: { ${x} = 1; }",
	"let a = 1; inherit (builtins) map; in a", "let { body = x; x = 1; }", "x: with x; y",
	"assert true; 1", "if true then 1 else 2", "x: x", "{ a, b ? 1, ... }: a",
	"{ a, b ? a }@args: args", "args@{ a, ... }: a", "{ }: 1", "{ ... }: 1", "{}",
	"{ a, }: a", "1 + 2 * 3 - 4 / 5", "a: b: a && b || !a -> b", "a: b: a == b",
	"a: b: a != b && a < b || a <= b || a > b || a >= b", "[1] ++ [2] ++ [3]",
	"{} // {} // {}", "- 1", "--1", "!!true", "x: -x.a", "x: x.a.b or 1",
	"x: x.${\"a\"} or x", "x: x ? a", "x: x ? \"a\".b", "x: x ? a ? b", "x: (x).a",
	"builtins.map (x: x) [ 1 ]", "x: x.or", "{ or = 1; }.or", "__curPos",
	"# comment\n1 # trailing", "/* block */ 1 /* trailing */", "1\n# no newline at end",
	"{ inherit; }", "{ inherit (builtins) ; }", "let a = 1; in { inherit a; }",
	"let a = a; in a", "{ a = {}; a.b = 1; }", "{ a.b = 1; a = {}; }",
	"({ a = { b = 1; }; a = { c = 2; }; })", "{ a = rec { b = 1; }; a.c = 2; }",
	"let ${\"a\"} = 1; in a", "let \"a\" = 1; in a", "x: { a.${x} = 1; a.${x} = 2; }",
	"let a.b = 1; a.c = 2; in a", "x: x.a.b.c or x.d or 1", "(x: x) 1 2 3",
	"f: f rec { } let { body = 1; }", "[ (x: x) (-1) ]", "1 -> 2 || 3 && 4 == 5",
	"!1 == 2", "-1 // 2", "1 < 2 == 3 < 4", "with {}; with {}; a", "let in 1",
	"{ a = { c = 1; }; a.d = 1; a = { e = 1; }; }", "rec { a = rec { b = 1; }; a = { c = b; }; }",
	"{ a ? b, b ? a }: a", "{ a ? c }@c: a", "x: x: x", "x:x:x", "x: x - 1", "x: x -1",
	"a'b: a'b", "_a: _a", "./.", "../a", "a/./b", "/a/b", "x: x/2", "1/2", "{}//{}",
	"x: ./a${x}${x}", "./a${\"b\"}.nix", "x: ~/${x}", "\"a\r\nb\"", "1 /**/",
	"/* * / */1", "{ a = 1; } ? a", "1 ++ 2 // 3", "x: x ? a == x ? b",
	"fetchTarball", "__nixVersion", "import ./a.nix", "toString 1", "derivation",
	"{ x = 1; }.x or 2 + 3", "x: x.\"a b\"", "x: x.\"\"",
	"\t1\t", "\n\n1\n\n", "1\r\n", "{ a = 1; }\r\n# c\r\n",
};

static void test_constructs_round_trip(void **state)
{
	for (size_t i = 0; i < WS_ARRAY_SIZE(good); i++)
		nix_tree_free(parse_ok(good[i]));
}

static void test_crlf_and_linecol(void **state)
{
	const char *src = "{\r\n  a = 1;\r\n  b = \"x\";\r\n}\r\n";
	struct nix_tree *t = parse_ok(src);
	int line, col;

	nix_tree_linecol(t, 0, &line, &col);
	assert_int_equal(line, 1);
	assert_int_equal(col, 1);
	nix_tree_linecol(t, (size_t)(strstr(src, "b =") - src), &line, &col);
	assert_int_equal(line, 3);
	assert_int_equal(col, 3);
	nix_tree_free(t);
	parse_fail("{\r\n  a = 1\r\n  b = 2;\r\n}\r\n", 3, 5, "unexpected '='");
}

/* The shapes the editor relies on. */
static void test_shape_module(void **state)
{
	const char *src = "{ config, lib, ... }:\n"
			  "let\n  x = 1;\nin\n"
			  "with lib;\n"
			  "{\n"
			  "  a.b = \"s${config.y}t\"; # c\n"
			  "  c = lib.mkIf config.z { d = 1; };\n"
			  "}\n";
	struct nix_tree *t = parse_ok(src);
	struct nix_node *lam = nix_tree_expr(t), *pat, *let, *with, *set, *b1, *b2, *path, *str,
			*interp, *app, *inner, *sel;
	char *s = NULL;

	assert_int_equal(lam->kind, NIX_NODE_LAMBDA);
	pat = nix_node_child(lam, 0);
	assert_int_equal(pat->kind, NIX_NODE_PATTERN);
	assert_int_equal(nix_node_n_children(pat), 2);
	assert_int_equal(nix_node_child(pat, 0)->kind, NIX_NODE_PAT_ENTRY);
	assert_int_equal(nix_node_child(nix_node_child(pat, 0), 0)->kind, NIX_NODE_IDENT);
	assert_true(nix_node_token(pat, NIX_TOK_ELLIPSIS) > 0);
	assert_int_equal(nix_node_token(lam, NIX_TOK_COLON), strchr(src, ':') - src);

	let = nix_node_child(lam, 1);
	assert_int_equal(let->kind, NIX_NODE_LET_IN);
	assert_int_equal(nix_node_n_children(let), 2);
	assert_int_equal(nix_node_child(let, 0)->kind, NIX_NODE_BINDING);
	with = nix_node_child(let, 1);
	assert_int_equal(with->kind, NIX_NODE_WITH);
	assert_int_equal(nix_node_child(with, 0)->kind, NIX_NODE_IDENT);
	set = nix_node_child(with, 1);
	assert_int_equal(set->kind, NIX_NODE_ATTRSET);
	assert_false(nix_node_is_rec(set));
	assert_int_equal(set->start, strstr(src, "{\n  a") - src);
	assert_int_equal(set->end, strlen(src) - 1); /* the final newline belongs to the root */
	assert_int_equal(nix_node_n_children(set), 2);

	b1 = nix_node_child(set, 0);
	assert_int_equal(b1->kind, NIX_NODE_BINDING);
	path = nix_node_child(b1, 0);
	assert_int_equal(path->kind, NIX_NODE_ATTRPATH);
	assert_int_equal(nix_node_n_children(path), 2);
	assert_int_equal(nix_attr_name(t, nix_node_child(path, 1), &s), 0);
	assert_string_equal(s, "b");
	free(s);
	/* the binding ends at its ';': the comment after it belongs to the set */
	assert_int_equal(t->src[b1->end - 1], ';');
	str = nix_node_child(b1, 1);
	assert_int_equal(str->kind, NIX_NODE_STRING);
	assert_int_equal(nix_string_value(t, str, &s), -EINVAL);
	interp = nix_node_child(str, 0);
	assert_int_equal(interp->kind, NIX_NODE_INTERP);
	assert_int_equal(nix_node_child(interp, 0)->kind, NIX_NODE_SELECT);
	s = nix_node_text(t, interp);
	assert_string_equal(s, "${config.y}");
	free(s);

	b2 = nix_node_child(set, 1);
	app = nix_node_child(b2, 1);
	assert_int_equal(app->kind, NIX_NODE_APPLY);
	inner = nix_node_child(app, 0);
	assert_int_equal(inner->kind, NIX_NODE_APPLY);
	sel = nix_node_child(inner, 0);
	assert_int_equal(sel->kind, NIX_NODE_SELECT);
	s = nix_node_text(t, sel);
	assert_string_equal(s, "lib.mkIf");
	free(s);
	assert_int_equal(nix_node_child(sel, 0)->kind, NIX_NODE_IDENT);
	assert_int_equal(nix_node_child(sel, 1)->kind, NIX_NODE_ATTRPATH);
	assert_int_equal(nix_node_child(inner, 1)->kind, NIX_NODE_SELECT);
	assert_int_equal(nix_node_child(app, 1)->kind, NIX_NODE_ATTRSET);
	s = nix_node_text(t, nix_node_child(app, 1));
	assert_string_equal(s, "{ d = 1; }");
	free(s);
	nix_tree_free(t);
}

static void test_shape_operators(void **state)
{
	struct nix_tree *t = parse_ok("a: b: a + b * 2 - 1 ++ [ ] // { } == a -> !b");
	struct nix_node *e = nix_node_child(nix_node_child(nix_tree_expr(t), 1), 1), *l;

	/* -> is loosest, then ==, then //, then -, +... */
	assert_int_equal(e->kind, NIX_NODE_BINOP);
	assert_int_equal(e->op, NIX_TOK_IMPL);
	assert_int_equal(nix_node_child(e, 1)->kind, NIX_NODE_UNARY);
	assert_int_equal(nix_node_child(e, 1)->op, NIX_TOK_NOT);
	l = nix_node_child(e, 0);
	assert_int_equal(l->op, NIX_TOK_EQ);
	l = nix_node_child(l, 0);
	assert_int_equal(l->op, NIX_TOK_UPDATE);
	l = nix_node_child(l, 0);
	assert_int_equal(l->op, NIX_TOK_MINUS);
	assert_int_equal(nix_node_child(l, 1)->op, NIX_TOK_CONCAT);
	assert_int_equal(nix_node_child(l, 0)->op, NIX_TOK_PLUS);
	assert_int_equal(nix_node_child(nix_node_child(l, 0), 1)->op, NIX_TOK_STAR);
	nix_tree_free(t);

	/* ! takes in + (tighter than !), - does not; ? binds tighter than both */
	t = parse_ok("x: !x + 1");
	e = nix_node_child(nix_tree_expr(t), 1);
	assert_int_equal(e->kind, NIX_NODE_UNARY);
	assert_int_equal(nix_node_child(e, 0)->op, NIX_TOK_PLUS);
	nix_tree_free(t);
	t = parse_ok("x: -x + 1");
	e = nix_node_child(nix_tree_expr(t), 1);
	assert_int_equal(e->op, NIX_TOK_PLUS);
	assert_int_equal(nix_node_child(e, 0)->kind, NIX_NODE_UNARY);
	nix_tree_free(t);
	t = parse_ok("x: !x ? a.b");
	e = nix_node_child(nix_tree_expr(t), 1);
	assert_int_equal(e->kind, NIX_NODE_UNARY);
	assert_int_equal(nix_node_child(e, 0)->kind, NIX_NODE_HAS_ATTR);
	assert_int_equal(nix_node_child(nix_node_child(e, 0), 1)->kind, NIX_NODE_ATTRPATH);
	nix_tree_free(t);

	/* right-associative ++ and //, left-associative - */
	t = parse_ok("[1] ++ [2] ++ [3]");
	e = nix_tree_expr(t);
	assert_int_equal(nix_node_child(e, 1)->op, NIX_TOK_CONCAT);
	nix_tree_free(t);
	t = parse_ok("3 - 2 - 1");
	e = nix_tree_expr(t);
	assert_int_equal(nix_node_child(e, 0)->op, NIX_TOK_MINUS);
	nix_tree_free(t);

	/* select with a default, and `f or` */
	t = parse_ok("x: x.a.\"b\".${\"c\"} or 1");
	e = nix_node_child(nix_tree_expr(t), 1);
	assert_int_equal(e->kind, NIX_NODE_SELECT);
	assert_int_equal(nix_node_n_children(e), 3);
	assert_int_equal(nix_node_n_children(nix_node_child(e, 1)), 3);
	assert_true(nix_node_token(e, NIX_TOK_OR_KW) > 0);
	nix_tree_free(t);
	t = parse_ok("let or = 1; in map or");
	e = nix_node_child(nix_tree_expr(t), 1);
	assert_int_equal(e->kind, NIX_NODE_APPLY);
	assert_int_equal(nix_node_child(e, 1)->kind, NIX_NODE_IDENT);
	nix_tree_free(t);
}

static void test_shape_misc(void **state)
{
	struct nix_tree *t;
	struct nix_node *e, *c;
	char *s = NULL;

	t = parse_ok("x: rec { inherit (builtins) map; inherit \"x\" ; y = 1; }");
	e = nix_node_child(nix_tree_expr(t), 1);
	assert_true(nix_node_is_rec(e));
	c = nix_node_child(e, 0);
	assert_int_equal(c->kind, NIX_NODE_INHERIT);
	assert_int_equal(nix_node_child(c, 0)->kind, NIX_NODE_INHERIT_FROM);
	assert_int_equal(nix_node_child(c, 1)->kind, NIX_NODE_IDENT);
	c = nix_node_child(e, 1);
	assert_int_equal(nix_node_child(c, 0)->kind, NIX_NODE_STRING);
	assert_int_equal(nix_attr_name(t, nix_node_child(c, 0), &s), 0);
	assert_string_equal(s, "x");
	free(s);
	nix_tree_free(t);

	t = parse_ok("x: ./a/${x}.nix");
	e = nix_node_child(nix_tree_expr(t), 1);
	assert_int_equal(e->kind, NIX_NODE_PATH);
	assert_int_equal(nix_node_n_children(e), 1);
	assert_int_equal(nix_node_child(e, 0)->kind, NIX_NODE_INTERP);
	nix_tree_free(t);
	t = parse_ok("[ ./a/b.nix <nixpkgs> 1 2.5 http://x.y/z ]");
	e = nix_tree_expr(t);
	assert_int_equal(nix_node_n_children(e), 5);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(nix_node_child(e, i)->kind, NIX_NODE_LITERAL);
	nix_tree_free(t);

	t = parse_ok("if true then 1 else assert true; 2");
	e = nix_tree_expr(t);
	assert_int_equal(e->kind, NIX_NODE_IF);
	assert_int_equal(nix_node_n_children(e), 3);
	assert_int_equal(nix_node_child(e, 2)->kind, NIX_NODE_ASSERT);
	nix_tree_free(t);

	t = parse_ok("a@{ b ? 1 }: let { body = a; }");
	e = nix_tree_expr(t);
	c = nix_node_child(e, 0);
	assert_int_equal(c->kind, NIX_NODE_PATTERN);
	assert_int_equal(nix_node_child(c, 0)->kind, NIX_NODE_IDENT);
	assert_int_equal(nix_node_child(c, 1)->kind, NIX_NODE_PAT_ENTRY);
	assert_int_equal(nix_node_n_children(nix_node_child(c, 1)), 2);
	assert_int_equal(nix_node_child(e, 1)->kind, NIX_NODE_LEGACY_LET);
	nix_tree_free(t);

	t = parse_ok("(1)");
	assert_int_equal(nix_tree_expr(t)->kind, NIX_NODE_PAREN);
	assert_int_equal(nix_node_token(nix_tree_expr(t), NIX_TOK_RPAREN), 2);
	assert_int_equal(nix_node_token(nix_tree_expr(t), NIX_TOK_SEMI), -1);
	nix_tree_free(t);

	assert_string_equal(nix_kind_name(NIX_NODE_ATTRSET), "ATTRSET");
	assert_string_equal(nix_kind_name(NIX_NODE_UNARY), "UNARY");
	assert_string_equal(nix_tok_name(NIX_TOK_INTERP_OPEN), "INTERP_OPEN");
	assert_string_equal(nix_tok_name(NIX_TOK_GE), "GE");
}

static void test_tokens_cover_trivia(void **state)
{
	const char *src = "  # lead\n{ /* in */ a = 1; } # trail";
	struct nix_tree *t = parse_ok(src);
	const struct nix_node *root = t->root, *set = nix_tree_expr(t);

	assert_int_equal(elem_at(t, root, 0).tok.kind, NIX_TOK_WS);
	assert_int_equal(elem_at(t, root, 1).tok.kind, NIX_TOK_COMMENT);
	assert_int_equal(elem_at(t, root, 1).tok.len, strlen("# lead"));
	assert_int_equal(set->start, strchr(src, '{') - src);
	assert_int_equal(set->end, strchr(src, '}') - src + 1);
	assert_int_equal(elem_at(t, set, 2).tok.kind, NIX_TOK_COMMENT);
	assert_false(elem_last(t, root).is_node);
	assert_int_equal(elem_last(t, root).tok.kind, NIX_TOK_COMMENT);
	nix_tree_free(t);
}

static void test_string_values(void **state)
{
	static const struct {
		const char *src, *want;
	} cases[] = {
		{ "\"a\\nb\\t\\\\c\\\"\\$d\"", "a\nb\t\\c\"$d" },
		{ "\"$${x}\"", "$${x}" },
		{ "\"a\r\nb\"", "a\nb" },
		{ "''\n  a\n    b\n  ''", "a\n  b\n" },
		{ "''  x ''$y ''' ''\\n''", "x $y '' \n" },
		{ "''\n\n  a\n''", "\na\n" },
		{ "''''", "" },
		{ "\"\"", "" },
	};

	for (size_t i = 0; i < WS_ARRAY_SIZE(cases); i++) {
		struct nix_tree *t = parse_ok(cases[i].src);
		char *v = NULL;

		assert_int_equal(nix_string_value(t, nix_tree_expr(t), &v), 0);
		if (strcmp(v, cases[i].want) != 0)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].src, v, cases[i].want);
		free(v);
		nix_tree_free(t);
	}
}

struct bad_case {
	const char *src;
	int line, col;
	const char *msg;
};

/* Expected positions and messages were taken from nix-instantiate 2.8 --parse. */
static const struct bad_case bad[] = {
	{ "{ a = 1 b = 2; }", 1, 11, "syntax error, unexpected '=', expecting ';'" },
	{ "let a = 1; in", 1, 12, "unexpected end of file" },
	{ "", 1, 1, "unexpected end of file" },
	{ "let a = 1; in   \n # c\n", 2, 5, "unexpected end of file" },
	{ "if 1 then 2", 1, 11, "unexpected end of file, expecting ELSE" },
	{ "\"abc", 1, 2, "expecting '\"'" },
	{ "''ab'", 1, 5, "expecting IND_STR or DOLLAR_CURLY or IND_STRING_CLOSE" },
	{ "\"a${1", 1, 5, "expecting '}'" },
	{ "x: x %", 1, 6, "unexpected invalid token" },
	{ "1 < 2 < 3", 1, 7, "unexpected '<'" },
	{ "1 == 2 == 3", 1, 8, "unexpected EQ" },
	{ "x: x.", 1, 5, "expecting ID or OR_KW or DOLLAR_CURLY or '\"'" },
	{ "{ a }", 1, 5, "unexpected end of file" },
	{ "./a/", 1, 1, "path has a trailing slash" },
	{ "./a/ x", 1, 5, "path has a trailing slash" },
	{ "99999999999999999999", 1, 1, "invalid integer '99999999999999999999'" },
	{ "1 /* open", 1, 4, "unexpected '*'" },
	{ "1e5", 1, 2, "undefined variable 'e5'" },
	{ "x", 1, 1, "undefined variable 'x'" },
	{ "let a = 1; in b", 1, 15, "undefined variable 'b'" },
	{ "map or", 1, 1, "undefined variable 'or'" },
	{ "x: { inherit y; }", 1, 5, "undefined variable 'y'" },
	{ "rec { a = b; }", 1, 11, "undefined variable 'b'" },
	{ "{ a = 1; a = 2; }", 1, 10, "attribute 'a' already defined at bad.nix:1:3" },
	{ "{ a.b = 1; a = { b = 2; }; }", 1, 3, "attribute 'b' already defined at bad.nix:1:18" },
	{ "{ a = x: x; a.b = 1; }", 1, 13, "attribute 'a.b' already defined at bad.nix:1:3" },
	{ "{ a.b = 1; a.b.c = 1; }", 1, 12, "attribute 'a.b.c' already defined" },
	{ "{ a = 1; inherit a; }", 1, 17, "attribute 'a' already defined at bad.nix:1:3" },
	{ "{ inherit a b a; }", 1, 10, "attribute 'a' already defined" },
	{ "{ ${\"a\"} = 1; a = 2; }", 1, 15, "attribute 'a' already defined" },
	{ "x: let ${x} = 1; in 1", 1, 4, "dynamic attributes not allowed in let" },
	{ "x: { inherit ${x}; }", 1, 14, "dynamic attributes not allowed in inherit" },
	{ "{ x, y, x }: 1", 1, 9, "duplicate formal function argument 'x'" },
	{ "x@{ x }: 1", 1, 1, "duplicate formal function argument 'x'" },
	{ "\xef\xbb\xbf{ }", 1, 1, "byte-order mark" },
	{ "{ a = { }; b = ( 1; }", 1, 19, "unexpected ';', expecting ')'" },
};

static void test_errors(void **state)
{
	for (size_t i = 0; i < WS_ARRAY_SIZE(bad); i++)
		parse_fail(bad[i].src, bad[i].line, bad[i].col, bad[i].msg);
}

/* When nix-instantiate is installed, it must agree with us on accepting and on where. */
static void test_against_nix(void **state)
{
	char *dir, path[4096];
	int n = 0;

	if (!h_have("nix-instantiate"))
		skip();
	dir = h_tmpdir();
	snprintf(path, sizeof(path), "%s/t.nix", dir);
	for (size_t i = 0; i < WS_ARRAY_SIZE(bad) + WS_ARRAY_SIZE(good); i += 3) {
		bool is_bad = i < WS_ARRAY_SIZE(bad);
		const char *src = is_bad ? bad[i].src : good[i - WS_ARRAY_SIZE(bad)];
		struct ws_err err = { 0 };
		char *out, want[64];
		int r;

		if (is_bad && strncmp(src, "\xef\xbb\xbf", 3) == 0)
			continue; /* Nix says only "invalid token" there */
		h_write(path, src, strlen(src));
		out = h_sh_out("nix-instantiate --parse %s 2>&1 >/dev/null | grep -o ':[0-9]*:[0-9]*:$' "
			       "| tail -1", path);
		r = nix_check_buffer(src, strlen(src), path, &err);
		snprintf(want, sizeof(want), ":%d:%d:\n", err.line, err.column);
		if (r == 0 ? out[0] != '\0' : strcmp(out, want) != 0)
			fail_msg("'%s': nix says '%s', we say %d at %s", src, out, r, want);
		ws_err_clear(&err);
		free(out);
		n++;
	}
	assert_true(n > 10);
	unlink(path);
	rmdir(dir);
	free(dir);
}

static void test_depth_limits(void **state)
{
	size_t n = 200000, len;
	char *src = malloc(4 * n + 16);
	struct ws_err err = { 0 };
	struct nix_tree *t = NULL;

	/* deep nesting is refused with a clear error, never a crash */
	memset(src, '(', n);
	memcpy(src + n, "1", 2);
	assert_int_equal(nix_tree_parse(src, n + 1, "deep.nix", &t, &err), -EINVAL);
	assert_non_null(strstr(err.message, "nested"));
	ws_err_clear(&err);
	memset(src, '[', n);
	assert_int_equal(nix_tree_parse(src, n + 1, "deep.nix", &t, &err), -EINVAL);
	ws_err_clear(&err);
	for (size_t i = 0; i < n; i++)
		memcpy(src + 3 * i, "x: ", 3);
	memcpy(src + 3 * n, "1", 2);
	assert_int_equal(nix_tree_parse(src, 3 * n + 1, "deep.nix", &t, &err), -EINVAL);
	ws_err_clear(&err);

	/* moderately deep input still parses */
	memset(src, '(', 500);
	src[500] = '1';
	memset(src + 501, ')', 500);
	src[1001] = '\0';
	nix_tree_free(parse_ok(src));

	/* long left-associative chains give deep trees but need no recursion */
	for (size_t i = 0; i < n; i++)
		memcpy(src + 2 * i, "1+", 2);
	memcpy(src + 2 * n, "1", 2);
	len = 2 * n + 1;
	nix_tree_free(parse_ok_len(src, len));
	for (size_t i = 0; i < n; i++)
		memcpy(src + 2 * i, "f ", 2);
	memcpy(src + 2 * n, "1", 2);
	memcpy(src, "f: ", 3);
	nix_tree_free(parse_ok_len(src, len));
	free(src);
}

/* The limit keeps the recursion inside a small thread stack (libuv's pool threads). */
static void *deep_thread(void *arg)
{
	size_t n = 1990;
	char *src = malloc(8192);
	struct ws_err err = { 0 };
	struct nix_tree *t = NULL;
	int r;

	memset(src, '[', n);
	src[n] = '1';
	memset(src + n + 1, ']', n);
	r = nix_tree_parse(src, 2 * n + 1, "deep.nix", &t, &err);
	nix_tree_free(t);
	memset(src, '(', 5000);
	(void)nix_tree_parse(src, 5000, "deep.nix", &t, &err);
	ws_err_clear(&err);
	free(src);
	return (void *)(intptr_t)r;
}

static void test_depth_small_stack(void **state)
{
	pthread_attr_t a;
	pthread_t th;
	void *ret;

	assert_int_equal(pthread_attr_init(&a), 0);
	assert_int_equal(pthread_attr_setstacksize(&a, 4 * 1024 * 1024), 0);
	assert_int_equal(pthread_create(&th, &a, deep_thread, NULL), 0);
	assert_int_equal(pthread_join(th, &ret), 0);
	assert_int_equal((intptr_t)ret, 0);
	pthread_attr_destroy(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_catches_breakage),
		cmocka_unit_test(test_fixtures_round_trip),
		cmocka_unit_test(test_fixture_unparsable),
		cmocka_unit_test(test_constructs_round_trip),
		cmocka_unit_test(test_crlf_and_linecol),
		cmocka_unit_test(test_shape_module),
		cmocka_unit_test(test_shape_operators),
		cmocka_unit_test(test_shape_misc),
		cmocka_unit_test(test_tokens_cover_trivia),
		cmocka_unit_test(test_string_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_against_nix),
		cmocka_unit_test(test_depth_limits),
		cmocka_unit_test(test_depth_small_stack),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
