/* SPDX-License-Identifier: MIT */
/* flake: reading entries in every shape, adding entries (byte-exact against the fixtures'
 * expected files and the golden cases in tests/data/nix/edit), setting host keys, and the
 * workspace template. Every file produced goes through nix-instantiate --parse when it is
 * installed. WS_UPDATE_GOLDEN=1 rewrites the golden want.nix files (review the diff). */
#include <stdbool.h>

#include "harness.h"

#include <dirent.h>
#include <json-c/json.h>

#include "flake.h"
#include "ipam.h"
#include "ws_proto.h"

static char *tmp;

static int setup(void **state)
{
	tmp = h_tmpdir();
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(h_sh("rm -rf '%s'", tmp), 0);
	free(tmp);
	return 0;
}

/* nix-instantiate --parse accepts @buf (skipped when Nix is not installed). */
static void nix_parses(const char *buf, size_t len, const char *what)
{
	char path[4096];

	if (!h_have("nix-instantiate"))
		return;
	snprintf(path, sizeof(path), "%s/check.nix", tmp);
	h_write(path, buf, len);
	if (h_sh("nix-instantiate --parse '%s' >/dev/null 2>'%s/check.err'", path, tmp) != 0) {
		char *e = h_sh_out("cat '%s/check.err'", tmp);

		fail_msg("nix-instantiate --parse rejects the result of %s:\n%s\n%s", what, e, buf);
	}
}

/* @out is @in with one span inserted: every other byte is unchanged. */
static void only_spliced(const char *in, size_t in_len, const char *out, size_t out_len)
{
	size_t p = 0, s = 0;

	while (p < in_len && p < out_len && in[p] == out[p])
		p++;
	while (s < in_len - p && s < out_len - p && in[in_len - 1 - s] == out[out_len - 1 - s])
		s++;
	assert_true(out_len > in_len);
	/* an empty set's blank interior is the only thing an insertion may replace */
	for (size_t i = p; i + s < in_len; i++)
		if (!strchr(" \t\r\n", in[i]))
			fail_msg("bytes %zu..%zu of the input changed:\n%s", p, in_len - s, out);
}

static struct flake *parse_fixture(const char *rel, char **ret_buf, size_t *ret_len)
{
	struct ws_err err = {0};
	struct flake *f = NULL;
	size_t len;
	char *buf = h_data(rel, &len);
	int r = flake_parse("machines/host/default.nix", buf, len, &f, &err);

	if (r < 0)
		fail_msg("flake_parse(%s): %s", rel, err.message);
	ws_err_clear(&err);
	if (ret_buf)
		*ret_buf = buf;
	else
		free(buf);
	if (ret_len)
		*ret_len = len;
	return f;
}

static const char *extra(struct ws_entry *e, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(e->extra, key, &v) ? json_object_get_string(v) : NULL;
}

static bool has_problem(struct ws_entry *e, const char *kind)
{
	for (size_t i = 0; i < ws_entry_n_problems(e); i++) {
		struct json_object *k;

		if (json_object_object_get_ex(json_object_array_get_idx(e->problems, i), "kind",
					      &k) &&
		    strcmp(json_object_get_string(k), kind) == 0)
			return true;
	}
	return false;
}

static void test_read_nested(void **state)
{
	struct flake *f = parse_fixture("fixtures/nix/02-nested-block.nix", NULL, NULL);
	struct ws_entry *e = flake_entries(f);

	assert_int_equal(flake_n_entries(f), 2);
	assert_string_equal(e[0].name, "builder");
	assert_string_equal(e[0].type, "incus");
	assert_string_equal(e[0].ip, "192.168.83.90");
	assert_null(e[0].ip_expr);
	assert_string_equal(e[0].config, "./workspaces/builder");
	assert_int_equal(e[0].auto_start, 1);
	assert_null(e[0].host_key);
	assert_int_equal(e[0].line, 16);
	assert_string_equal(extra(&e[0], "passHostGpu"), "true");
	assert_non_null(extra(&e[0], "extraMounts"));
	assert_true(strncmp(extra(&e[0], "extraMounts"), "{\n        builder-state = {", 27) == 0);
	assert_null(extra(&e[0], "type"));
	assert_int_equal(ws_entry_n_problems(&e[0]), 0);
	assert_string_equal(e[1].name, "scratch");
	assert_string_equal(e[1].type, "vm");
	assert_int_equal(e[1].auto_start, 0);
	assert_int_equal(e[1].line, 29);
	assert_string_equal(e[1].host_key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPE2EJWQEhtJTvRqUq"
					   "lRb0x6+oXmb6ctmg9muSbxhNiH");
	assert_null(flake_find(f, "nope"));
	assert_ptr_equal(flake_find(f, "scratch"), &e[1]);
	flake_free(f);
}

static void test_read_shapes(void **state)
{
	static const struct {
		const char *file;
		const char *names; /* in file order */
		int line_of_first;
	} cases[] = {
		{"fixtures/nix/01-no-block.nix", "", 0},
		{"fixtures/nix/03-dotted-top.nix", "docs,api", 6},
		{"fixtures/nix/04-workspaces-set.nix", "web,db", 7},
		{"fixtures/nix/05-with-lib-comments.nix", "notes", 19},
		{"fixtures/nix/06-crlf.nix", "win", 5},
		{"fixtures/nix/07-tabs-no-final-newline.nix", "tabbed", 5},
		{"fixtures/nix/08-one-line.nix", "a", 1},
		{"fixtures/nix/09-mixed-merge.nix", "ml-lab", 8},
		{"fixtures/nix/10-mkmerge-top.nix", "gui", 10},
		{"fixtures/nix/11-computed-ip.nix", "alpha,beta", 10},
		{"fixtures/nix/13-rec-and-inherit.nix", "quoted-name", 10},
		{"fixtures/nix/15-hand-edit-conflicts.nix", "one,two,three", 5},
	};

	for (size_t i = 0; i < WS_ARRAY_SIZE(cases); i++) {
		struct flake *f = parse_fixture(cases[i].file, NULL, NULL);
		char names[512] = "";

		for (size_t k = 0; k < flake_n_entries(f); k++) {
			if (k)
				strcat(names, ",");
			strcat(names, flake_entries(f)[k].name);
			if (!cases[i].line_of_first)
				continue;
			if (ws_entry_n_problems(&flake_entries(f)[k]))
				fail_msg("%s: %s has problems: %s", cases[i].file,
					 flake_entries(f)[k].name,
					 json_object_to_json_string(flake_entries(f)[k].problems));
		}
		if (strcmp(names, cases[i].names) != 0)
			fail_msg("%s: entries '%s', want '%s'", cases[i].file, names, cases[i].names);
		if (cases[i].line_of_first)
			assert_int_equal(flake_entries(f)[0].line, cases[i].line_of_first);
		flake_free(f);
	}
}

static void test_read_computed(void **state)
{
	struct flake *f = parse_fixture("fixtures/nix/11-computed-ip.nix", NULL, NULL);
	struct ws_entry *a = flake_find(f, "alpha");

	assert_non_null(a);
	assert_string_equal(a->type, "container");
	assert_string_equal(a->ip, "192.168.83.50");
	assert_string_equal(a->ip_expr, "\"${subnet}.${toString ip}\"");
	assert_string_equal(a->config, "./workspaces/shared.nix");
	assert_int_equal(a->line, 10);
	flake_free(f);
}

static void test_read_problems(void **state)
{
	struct flake *f = parse_fixture("fixtures/nix/15-hand-edit-conflicts.nix", NULL, NULL);
	struct ipam_cfg c;
	struct ws_err err = {0};
	uint32_t ip;
	char buf[16];

	ipam_cfg_default(&c);
	ipam_annotate(&c, flake_entries(f), flake_n_entries(f));
	assert_true(has_problem(flake_find(f, "one"), "IP_DUPLICATE"));
	assert_true(has_problem(flake_find(f, "two"), "IP_DUPLICATE"));
	assert_false(has_problem(flake_find(f, "three"), "IP_DUPLICATE"));
	assert_true(has_problem(flake_find(f, "three"), "IP_OUT_OF_RANGE"));
	assert_int_equal(ipam_pick(&c, WS_TYPE_CONTAINER, flake_entries(f), flake_n_entries(f),
				   NULL, 0, &ip, &err),
			 0);
	ipam_format(ip, buf);
	assert_string_equal(buf, "192.168.83.51");
	flake_free(f);
}

static void test_unparsable(void **state)
{
	size_t len;
	char *buf = h_data("fixtures/nix/14-unparsable.nix", &len);
	struct flake *f = NULL;
	struct ws_err err = {0};

	assert_int_equal(flake_parse("machines/host/default.nix", buf, len, &f, &err), -EINVAL);
	assert_null(f);
	assert_int_equal(err.code, WS_E_CONFIG_UNPARSABLE);
	assert_int_equal(err.line, 7);
	assert_string_equal(err.file, "machines/host/default.nix");
	ws_err_clear(&err);
	free(buf);
}

/* The README's create requests. */
static void test_fixture_creates(void **state)
{
	static const struct {
		const char *fixture, *name;
		enum ws_type type;
		const char *ip; /* what ipam must pick */
		bool expected_file;
	} cases[] = {
		{"01-no-block", "dev", WS_TYPE_CONTAINER, "192.168.83.50", true},
		{"02-nested-block", "lab", WS_TYPE_VM, "192.168.83.11", true},
		{"03-dotted-top", "web", WS_TYPE_CONTAINER, "192.168.83.52", true},
		{"04-workspaces-set", "cache", WS_TYPE_VM, "192.168.83.11", true},
		{"05-with-lib-comments", "blog", WS_TYPE_CONTAINER, "192.168.83.50", false},
		{"06-crlf", "win2", WS_TYPE_CONTAINER, "192.168.83.51", true},
		{"07-tabs-no-final-newline", "tab2", WS_TYPE_VM, "192.168.83.10", true},
		{"08-one-line", "b", WS_TYPE_CONTAINER, "192.168.83.50", false},
		{"09-mixed-merge", "ml-two", WS_TYPE_INCUS, "192.168.83.90", true},
		{"10-mkmerge-top", "gui2", WS_TYPE_VM, "192.168.83.11", false},
		{"11-computed-ip", "gamma", WS_TYPE_CONTAINER, "192.168.83.51", true},
		{"13-rec-and-inherit", "plain", WS_TYPE_VM, "192.168.83.10", false},
		{"15-hand-edit-conflicts", "four", WS_TYPE_CONTAINER, "192.168.83.51", false},
	};
	struct ipam_cfg c;

	ipam_cfg_default(&c);
	for (size_t i = 0; i < WS_ARRAY_SIZE(cases); i++) {
		char rel[256], config[256], ipbuf[16];
		struct ws_err err = {0};
		char *in, *out = NULL;
		size_t in_len, out_len = 0;
		struct flake *f, *nf = NULL;
		struct ws_entry *ne;
		uint32_t ip;
		int r;

		snprintf(rel, sizeof(rel), "fixtures/nix/%s.nix", cases[i].fixture);
		f = parse_fixture(rel, &in, &in_len);
		r = ipam_pick(&c, cases[i].type, flake_entries(f), flake_n_entries(f), NULL, 0, &ip,
			      &err);
		if (r < 0)
			fail_msg("%s: ipam_pick: %s", cases[i].fixture, err.message);
		ipam_format(ip, ipbuf);
		if (strcmp(ipbuf, cases[i].ip) != 0)
			fail_msg("%s: picked %s, want %s", cases[i].fixture, ipbuf, cases[i].ip);
		snprintf(config, sizeof(config), "./workspaces/%s.nix", cases[i].name);
		struct flake_new_entry e = {.name = cases[i].name, .type = cases[i].type,
					    .ip = ipbuf, .config = config};
		r = flake_add_entry(f, &e, &out, &out_len, &err);
		if (r < 0)
			fail_msg("%s: flake_add_entry: %s", cases[i].fixture, err.message);
		assert_int_equal(strlen(out), out_len);
		if (cases[i].expected_file) {
			char *want;
			size_t want_len;

			snprintf(rel, sizeof(rel), "fixtures/create/%s.expected.nix",
				 cases[i].fixture);
			want = h_data(rel, &want_len);
			if (want_len != out_len || memcmp(want, out, out_len) != 0)
				fail_msg("%s: result differs from %s:\n%s", cases[i].fixture, rel, out);
			free(want);
		}
		only_spliced(in, in_len, out, out_len);
		/* the entry reads back as requested; the others are unchanged */
		assert_int_equal(flake_parse("x.nix", out, out_len, &nf, &err), 0);
		assert_int_equal(flake_n_entries(nf), flake_n_entries(f) + 1);
		ne = flake_find(nf, cases[i].name);
		assert_non_null(ne);
		assert_string_equal(ne->type, ws_type_to_string(cases[i].type));
		assert_string_equal(ne->ip, cases[i].ip);
		assert_string_equal(ne->config, config);
		assert_int_equal(ne->auto_start, 0);
		for (size_t k = 0; k < flake_n_entries(f); k++) {
			struct ws_entry *o = &flake_entries(f)[k], *n2 = flake_find(nf, o->name);

			assert_non_null(n2);
			assert_int_equal(o->line, n2->line);
			assert_true((o->ip == NULL) == (n2->ip == NULL));
			if (o->ip)
				assert_string_equal(o->ip, n2->ip);
		}
		nix_parses(out, out_len, cases[i].fixture);
		/* a second create of the same name is refused */
		{
			char *again = NULL;
			size_t again_len;

			assert_int_equal(flake_add_entry(nf, &e, &again, &again_len, &err), -EEXIST);
			assert_int_equal(err.code, WS_E_EXISTS);
			assert_null(again);
		}
		ws_err_clear(&err);
		flake_free(nf);
		flake_free(f);
		free(in);
		free(out);
	}
}

static void test_range_full(void **state)
{
	struct flake *f = parse_fixture("fixtures/nix/12-container-range-full.nix", NULL, NULL);
	struct ipam_cfg c;
	struct ws_err err = {0};
	uint32_t ip;

	ipam_cfg_default(&c);
	assert_int_equal(flake_n_entries(f), 40);
	assert_int_equal(ipam_pick(&c, WS_TYPE_CONTAINER, flake_entries(f), flake_n_entries(f),
				   NULL, 0, &ip, &err),
			 -ENOSPC);
	assert_int_equal(err.code, WS_E_RANGE_EXHAUSTED);
	ws_err_clear(&err);
	flake_free(f);
}

static void test_hostkey(void **state)
{
	static const char *key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWKEYnewkeyNEWKEYnewkeyNEWKEY";
	static const struct {
		const char *fixture, *name;
		const char *want_line; /* a line of the result */
	} cases[] = {
		/* replaced in place */
		{"02-nested-block", "scratch",
		 "      hostKey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWKEYnewkeyNEWKEYnewkeyNEWKEY\";\n"
		 "    };\n"},
		/* added as the last attribute, after a nested set */
		{"02-nested-block", "builder",
		 "      };\n      hostKey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWKEYnewkeyNEWKEYnewkeyNEWKEY\";\n    };\n"},
		/* one-line entry: inline */
		{"05-with-lib-comments", "notes",
		 "ip = \"192.168.83.52\"; hostKey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWKEYnewkeyNEWKEYnewkeyNEWKEY\"; }; # one-liner entry\n"},
		{"06-crlf", "win",
		 "      ip = \"192.168.83.50\";\r\n      hostKey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWKEYnewkeyNEWKEYnewkeyNEWKEY\";\r\n    };\r\n"},
		{"07-tabs-no-final-newline", "tabbed",
		 "\t\t\thostKey = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINEWKEYnewkeyNEWKEYnewkeyNEWKEY\";\n\t\t};\n\t};\n}"},
		{"08-one-line", "a", "ip = \"192.168.83.10\"; hostKey = \"ssh-ed25519"},
		{"09-mixed-merge", "ml-lab", "    hostKey = \"ssh-ed25519"},
		{"10-mkmerge-top", "gui", "        hostKey = \"ssh-ed25519"},
	};

	for (size_t i = 0; i < WS_ARRAY_SIZE(cases); i++) {
		char rel[256];
		char *in, *out = NULL;
		size_t in_len, out_len;
		struct ws_err err = {0};
		struct flake *f, *nf = NULL;

		snprintf(rel, sizeof(rel), "fixtures/nix/%s.nix", cases[i].fixture);
		f = parse_fixture(rel, &in, &in_len);
		if (flake_set_hostkey(f, cases[i].name, key, &out, &out_len, &err) < 0)
			fail_msg("%s/%s: %s", cases[i].fixture, cases[i].name, err.message);
		if (!strstr(out, cases[i].want_line))
			fail_msg("%s/%s: no '%s' in\n%s", cases[i].fixture, cases[i].name,
				 cases[i].want_line, out);
		assert_int_equal(flake_parse("x.nix", out, out_len, &nf, &err), 0);
		assert_string_equal(flake_find(nf, cases[i].name)->host_key, key);
		if (strcmp(cases[i].name, "scratch") != 0)
			only_spliced(in, in_len, out, out_len);
		assert_int_equal(strchr(in, '\n') == NULL, strchr(out, '\n') == NULL);
		nix_parses(out, out_len, cases[i].fixture);
		flake_free(nf);
		flake_free(f);
		free(in);
		free(out);
	}
}

static void test_hostkey_refused(void **state)
{
	struct flake *f = parse_fixture("fixtures/nix/11-computed-ip.nix", NULL, NULL);
	struct ws_err err = {0};
	char *out = NULL;
	size_t len;

	assert_int_equal(flake_set_hostkey(f, "alpha", "ssh-ed25519 AAAA", &out, &len, &err),
			 -EINVAL);
	assert_int_equal(err.code, WS_E_CONFIG_UNSUPPORTED);
	assert_int_equal(err.line, 10);
	assert_int_equal(flake_set_hostkey(f, "nobody", "ssh-ed25519 AAAA", &out, &len, &err),
			 -ENOENT);
	assert_int_equal(err.code, WS_E_NOT_FOUND);
	assert_null(out);
	ws_err_clear(&err);
	flake_free(f);
}

static void test_template(void **state)
{
	const char *s = flake_workspace_template();

	assert_non_null(strstr(s, "{ config, lib, pkgs, ... }:"));
	assert_non_null(strstr(s, "environment.systemPackages = with pkgs; [ ];"));
	assert_non_null(strstr(s, "host name is its workspace name"));
	assert_non_null(strstr(s, "../default.nix"));
	/* the same bytes every time: every workspace file is one git blob */
	assert_ptr_equal(s, flake_workspace_template());
	nix_parses(s, strlen(s), "the template");
}

/* tests/data/nix/edit/<case>/: in.nix, op.json, want.nix */
static void run_golden(const char *dir, const char *name)
{
	char path[4096];
	WS_AUTO(json_putp) struct json_object *op = NULL;
	struct json_object *v;
	char *in, *out = NULL, *opt;
	size_t in_len, out_len = 0;
	struct flake *f = NULL;
	struct ws_err err = {0};
	const char *kind, *want_err = NULL;
	int r;

	snprintf(path, sizeof(path), "%s/%s/in.nix", dir, name);
	in = h_read(path, &in_len);
	snprintf(path, sizeof(path), "%s/%s/op.json", dir, name);
	opt = h_read(path, NULL);
	op = json_tokener_parse(opt);
	free(opt);
	if (!op)
		fail_msg("%s: op.json is not JSON", name);
	r = flake_parse("machines/host/default.nix", in, in_len, &f, &err);
	if (r < 0)
		fail_msg("%s: in.nix: %s", name, err.message);
	if (json_object_object_get_ex(op, "entries", &v)) {
		char names[1024] = "";

		for (size_t k = 0; k < flake_n_entries(f); k++) {
			struct ws_entry *e = &flake_entries(f)[k];

			if (k)
				strcat(names, ",");
			strcat(names, e->name);
			if (ws_entry_n_problems(e) &&
			    !json_object_object_get_ex(op, "problems", NULL))
				fail_msg("%s: %s: %s", name, e->name,
					 json_object_to_json_string(e->problems));
		}
		if (strcmp(names, json_object_get_string(v)) != 0)
			fail_msg("%s: entries '%s', want '%s'", name, names,
				 json_object_get_string(v));
	}
	if (json_object_object_get_ex(op, "error", &v))
		want_err = json_object_get_string(v);
	kind = json_object_get_string(json_object_object_get(op, "op"));
	if (strcmp(kind, "add") == 0) {
		struct flake_new_entry e = {
			.name = json_object_get_string(json_object_object_get(op, "name")),
			.type = ws_type_from_string(
				json_object_get_string(json_object_object_get(op, "type"))),
			.ip = json_object_get_string(json_object_object_get(op, "ip")),
			.config = json_object_get_string(json_object_object_get(op, "config")),
			.auto_start = json_object_get_boolean(json_object_object_get(op, "autoStart")),
		};
		r = flake_add_entry(f, &e, &out, &out_len, &err);
	} else {
		r = flake_set_hostkey(f, json_object_get_string(json_object_object_get(op, "name")),
				      json_object_get_string(json_object_object_get(op, "key")),
				      &out, &out_len, &err);
	}
	if (want_err) {
		if (r >= 0)
			fail_msg("%s: succeeded, want %s:\n%s", name, want_err, out);
		if (!ws_err_kind(err.code) || strcmp(ws_err_kind(err.code), want_err) != 0)
			fail_msg("%s: error %d (%s), want %s", name, err.code, err.message, want_err);
		assert_true(err.line > 0);
		assert_string_equal(err.file, "machines/host/default.nix");
		assert_null(out);
	} else {
		char *want;
		size_t want_len;

		if (r < 0)
			fail_msg("%s: %s", name, err.message);
		snprintf(path, sizeof(path), "%s/%s/want.nix", dir, name);
		if (getenv("WS_UPDATE_GOLDEN"))
			h_write(path, out, out_len);
		want = h_read(path, &want_len);
		if (want_len != out_len || memcmp(want, out, out_len) != 0)
			fail_msg("%s: result differs from want.nix:\n%s", name, out);
		free(want);
		if (strcmp(kind, "add") == 0)
			only_spliced(in, in_len, out, out_len);
		nix_parses(out, out_len, name);
	}
	ws_err_clear(&err);
	flake_free(f);
	free(in);
	free(out);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_golden(void **state)
{
	const char *dir = WS_TEST_DATA "/nix/edit";
	DIR *d = opendir(dir);
	struct dirent *de;
	char *names[256];
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) && n < WS_ARRAY_SIZE(names))
		if (de->d_name[0] != '.')
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	assert_true(n >= 20);
	for (size_t i = 0; i < n; i++) {
		run_golden(dir, names[i]);
		free(names[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_nested),
		cmocka_unit_test(test_read_shapes),
		cmocka_unit_test(test_read_computed),
		cmocka_unit_test(test_read_problems),
		cmocka_unit_test(test_unparsable),
		cmocka_unit_test(test_fixture_creates),
		cmocka_unit_test(test_range_full),
		cmocka_unit_test(test_hostkey),
		cmocka_unit_test(test_hostkey_refused),
		cmocka_unit_test(test_template),
		cmocka_unit_test(test_golden),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
