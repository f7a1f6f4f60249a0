/* SPDX-License-Identifier: MIT */
/* state: the state file on disk (round trip, canonical bytes, modes, corrupt files named in
 * the error), held addresses over time, journal and rollback from a dump. */
#include <stdbool.h>

#include "harness.h"

#include <dirent.h>

#include "fsutil.h"
#include "state.h"
#include "ws_proto.h"

#define IP(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (d))

static const char empty_dump[] = "{\n"
				 "  \"hostKeys\": {},\n"
				 "  \"journal\": null,\n"
				 "  \"released\": [],\n"
				 "  \"version\": 1\n"
				 "}\n";

static struct state *load_ok(const char *path)
{
	struct state *st = NULL;
	struct ws_err err = { 0 };
	int r = state_load(path, &st, &err);

	if (r < 0)
		fail_msg("state_load('%s'): %d %s", path, r, err.message);
	assert_non_null(st);
	return st;
}

static void save_ok(struct state *st)
{
	struct ws_err err = { 0 };
	int r = state_save(st, &err);

	if (r < 0)
		fail_msg("state_save: %d %s", r, err.message);
}

static void rm_rf(char *dir)
{
	assert_int_equal(h_sh("rm -rf '%s'", dir), 0);
	free(dir);
}

static void test_missing_file_is_empty(void **unused)
{
	char *dir = h_tmpdir();
	char *sdir = fsutil_join(dir, "xdg/workspaced");
	char *path = fsutil_join(sdir, "state.json");
	struct state *st = load_ok(path), *again;
	uint32_t *ips = (uint32_t *)1;
	struct stat s;
	char *dump, *disk;

	assert_null(state_hostkey(st, "web"));
	assert_null(state_journal(st));
	assert_int_equal(state_held_ips(st, 100, 100, &ips), 0);
	assert_null(ips);
	dump = state_dump(st);
	assert_string_equal(dump, empty_dump);
	/* loading did not create anything; saving creates the directory and the file */
	assert_int_equal(stat(sdir, &s), -1);
	save_ok(st);
	assert_int_equal(stat(sdir, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0700);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_mode & 07777, 0600);
	disk = h_read(path, NULL);
	assert_string_equal(disk, empty_dump);
	again = load_ok(path);
	free(dump);
	dump = state_dump(again);
	assert_string_equal(dump, empty_dump);
	free(dump);
	free(disk);
	state_free(again);
	state_free(st);
	free(path);
	free(sdir);
	rm_rf(dir);
}

static void fill(struct state *st, bool reverse)
{
	/* the same content, inserted in two different orders */
	if (!reverse) {
		assert_int_equal(state_set_hostkey(st, "web", "ssh-ed25519 AAAAweb"), 0);
		assert_int_equal(state_set_hostkey(st, "db", "ssh-ed25519 AAAAdb"), 0);
		assert_int_equal(state_release_ip(st, IP(192, 168, 83, 20), 1700000000), 0);
		assert_int_equal(state_release_ip(st, IP(192, 168, 83, 3), 1700000100), 0);
	} else {
		assert_int_equal(state_release_ip(st, IP(192, 168, 83, 3), 1700000100), 0);
		assert_int_equal(state_release_ip(st, IP(192, 168, 83, 20), 1700000000), 0);
		assert_int_equal(state_set_hostkey(st, "db", "ssh-ed25519 AAAAdb"), 0);
		assert_int_equal(state_set_hostkey(st, "web", "ssh-rsa OLD"), 0);
		assert_int_equal(state_set_hostkey(st, "web", "ssh-ed25519 AAAAweb"), 0);
	}
	assert_int_equal(state_journal_begin(st, "{\"op\":\"create\",\"name\":\"web\"}"), 0);
}

static void test_round_trip_and_canonical(void **unused)
{
	char *dir = h_tmpdir();
	char *p1 = fsutil_join(dir, "one.json");
	char *p2 = fsutil_join(dir, "two.json");
	struct state *a = load_ok(p1), *b = load_ok(p2), *c;
	char *da, *db, *dc, *disk;
	const char *want = "{\n"
			   "  \"hostKeys\": {\n"
			   "    \"db\": \"ssh-ed25519 AAAAdb\",\n"
			   "    \"web\": \"ssh-ed25519 AAAAweb\"\n"
			   "  },\n"
			   "  \"journal\": {\n"
			   "    \"name\": \"web\",\n"
			   "    \"op\": \"create\"\n"
			   "  },\n"
			   "  \"released\": [\n"
			   "    {\n"
			   "      \"at\": 1700000100,\n"
			   "      \"ip\": \"192.168.83.3\"\n"
			   "    },\n"
			   "    {\n"
			   "      \"at\": 1700000000,\n"
			   "      \"ip\": \"192.168.83.20\"\n"
			   "    }\n"
			   "  ],\n"
			   "  \"version\": 1\n"
			   "}\n";

	fill(a, false);
	fill(b, true);
	da = state_dump(a);
	db = state_dump(b);
	assert_string_equal(da, want);
	assert_string_equal(db, da);

	save_ok(a);
	disk = h_read(p1, NULL);
	assert_string_equal(disk, want);
	c = load_ok(p1);
	dc = state_dump(c);
	assert_string_equal(dc, da);
	assert_string_equal(state_hostkey(c, "web"), "ssh-ed25519 AAAAweb");
	assert_string_equal(state_hostkey(c, "db"), "ssh-ed25519 AAAAdb");
	assert_null(state_hostkey(c, "dbx"));
	assert_string_equal(state_journal(c), "{\"name\":\"web\",\"op\":\"create\"}");

	/* forgetting a key, ending the journal */
	assert_int_equal(state_set_hostkey(c, "db", NULL), 0);
	assert_null(state_hostkey(c, "db"));
	assert_int_equal(state_set_hostkey(c, "", "k"), -EINVAL);
	state_journal_end(c);
	assert_null(state_journal(c));
	save_ok(c);
	state_free(c);
	c = load_ok(p1);
	assert_null(state_hostkey(c, "db"));
	assert_null(state_journal(c));
	assert_string_equal(state_hostkey(c, "web"), "ssh-ed25519 AAAAweb");

	free(da);
	free(db);
	free(dc);
	free(disk);
	state_free(a);
	state_free(b);
	state_free(c);
	free(p1);
	free(p2);
	rm_rf(dir);
}

static void test_save_replaces_atomically_0600(void **unused)
{
	char *dir = h_tmpdir();
	char *path = fsutil_join(dir, "state.json");
	struct state *st;
	struct stat s;
	DIR *d;
	struct dirent *de;
	int n = 0;

	h_write(path, empty_dump, strlen(empty_dump));
	assert_int_equal(chmod(path, 0644), 0);
	st = load_ok(path);
	assert_int_equal(state_set_hostkey(st, "a", "k"), 0);
	save_ok(st);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_mode & 07777, 0600);
	d = opendir(dir);
	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	assert_int_equal(n, 1);
	state_free(st);
	free(path);
	rm_rf(dir);
}

static void expect_corrupt(const char *dir, const char *text, const char *why, int line)
{
	char *path = fsutil_join(dir, "state.json");
	struct state *st = NULL;
	struct ws_err err = { 0 };

	h_write(path, text, strlen(text));
	assert_int_equal(state_load(path, &st, &err), -EINVAL);
	assert_null(st);
	if (!strstr(err.message, path) || !strstr(err.message, "corrupt") ||
	    !strstr(err.message, why))
		fail_msg("message '%s' lacks '%s'", err.message, why);
	assert_string_equal(err.file, path);
	if (line)
		assert_int_equal(err.line, line);
	ws_err_clear(&err);
	free(path);
}

static void test_corrupt_file_named(void **unused)
{
	char *dir = h_tmpdir();

	expect_corrupt(dir, "{\n  \"version\": 1,\n  \"hostKeys\": {\n", "end of file", 0);
	expect_corrupt(dir, "{\n  \"version\": 1,\n  \"hostKeys\": {] }\n", "", 3);
	expect_corrupt(dir, "", "end of file", 0);
	expect_corrupt(dir, "{\"version\": 1} trailing", "unexpected", 1);
	expect_corrupt(dir, "[1, 2]", "not a JSON object", 0);
	expect_corrupt(dir, "{\"hostKeys\": {}}", "version", 0);
	expect_corrupt(dir, "{\"version\": 2}", "version 2 is not supported", 0);
	expect_corrupt(dir, "{\"version\": 1, \"hostKeys\": {\"a\": 1}}", "\"a\"", 0);
	expect_corrupt(dir, "{\"version\": 1, \"released\": [{\"ip\": \"10.0.0.300\", \"at\": 1}]}",
		       "entry 0", 0);
	expect_corrupt(dir, "{\"version\": 1, \"released\": [{\"ip\": \"10.0.0.3\"}]}", "entry 0",
		       0);
	expect_corrupt(dir, "{\"version\": 1, \"journal\": \"x\"}", "journal", 0);
	rm_rf(dir);
}

static void test_held_ips_expire(void **unused)
{
	struct state *st;
	struct ws_err err = { 0 };
	uint32_t *ips = NULL;
	char *dir = h_tmpdir();
	char *path = fsutil_join(dir, "s.json");

	assert_int_equal(state_load(path, &st, &err), 0);
	assert_int_equal(state_release_ip(st, IP(10, 0, 0, 9), 1000), 0);
	assert_int_equal(state_release_ip(st, IP(10, 0, 0, 5), 1050), 0);

	assert_int_equal(state_held_ips(st, 1060, 100, &ips), 2);
	assert_int_equal(ips[0], IP(10, 0, 0, 5));
	assert_int_equal(ips[1], IP(10, 0, 0, 9));
	free(ips);
	/* the first hold ends at 1100 */
	assert_int_equal(state_held_ips(st, 1099, 100, &ips), 2);
	free(ips);
	assert_int_equal(state_held_ips(st, 1100, 100, &ips), 1);
	assert_int_equal(ips[0], IP(10, 0, 0, 5));
	free(ips);
	assert_int_equal(state_held_ips(st, 1150, 100, &ips), 0);
	assert_null(ips);
	/* a clock that went back still holds */
	assert_int_equal(state_held_ips(st, 900, 100, &ips), 2);
	free(ips);

	/* releasing again restarts the hold; expired ones can be forgotten */
	assert_int_equal(state_release_ip(st, IP(10, 0, 0, 9), 1140), 0);
	assert_int_equal(state_held_ips(st, 1150, 100, &ips), 1);
	assert_int_equal(ips[0], IP(10, 0, 0, 9));
	free(ips);
	assert_int_equal(state_prune_released(st, 1150, 100), 1);
	assert_int_equal(state_prune_released(st, 1150, 100), 0);

	/* the hold survives a save and load */
	save_ok(st);
	state_free(st);
	st = load_ok(path);
	assert_int_equal(state_held_ips(st, 1200, 100, &ips), 1);
	assert_int_equal(ips[0], IP(10, 0, 0, 9));
	free(ips);
	state_free(st);
	free(path);
	rm_rf(dir);
}

static void test_journal_and_restore(void **unused)
{
	char *dir = h_tmpdir();
	char *path = fsutil_join(dir, "s.json");
	struct state *st = load_ok(path);
	struct ws_err err = { 0 };
	char *before, *after;

	assert_int_equal(state_journal_begin(st, "[1]"), -EINVAL);
	assert_int_equal(state_journal_begin(st, "{not json"), -EINVAL);
	assert_null(state_journal(st));
	assert_int_equal(state_journal_begin(st, "{\"b\": 1, \"a\": [true, {\"d\": \"x/y\", "
						 "\"c\": null}]}"),
			 0);
	assert_string_equal(state_journal(st), "{\"a\":[true,{\"c\":null,\"d\":\"x/y\"}],\"b\":1}");
	assert_int_equal(state_set_hostkey(st, "web", "ssh-ed25519 K1"), 0);
	assert_int_equal(state_release_ip(st, IP(10, 1, 2, 3), 5), 0);

	/* an operation changes things, then rolls back from the dump */
	before = state_dump(st);
	assert_int_equal(state_set_hostkey(st, "web", "ssh-ed25519 K2"), 0);
	assert_int_equal(state_set_hostkey(st, "new", "ssh-ed25519 K3"), 0);
	assert_int_equal(state_release_ip(st, IP(10, 1, 2, 4), 6), 0);
	state_journal_end(st);
	after = state_dump(st);
	assert_string_not_equal(after, before);
	free(after);
	assert_int_equal(state_restore(st, before, &err), 0);
	after = state_dump(st);
	assert_string_equal(after, before);
	assert_string_equal(state_hostkey(st, "web"), "ssh-ed25519 K1");
	assert_null(state_hostkey(st, "new"));
	assert_non_null(state_journal(st));
	free(after);

	/* a bad dump changes nothing */
	assert_int_equal(state_restore(st, "{\"version\": 1, \"hostKeys\": 3}", &err), -EINVAL);
	ws_err_clear(&err);
	after = state_dump(st);
	assert_string_equal(after, before);
	free(after);

	/* the restored state is saved to the same file */
	save_ok(st);
	after = h_read(path, NULL);
	assert_string_equal(after, before);
	free(after);
	free(before);
	state_free(st);
	free(path);
	rm_rf(dir);
}

static const char *str_of(const void *elem)
{
	return *(const char *const *)elem;
}

/* The sorted-array search the host keys here (and the watched names) use: the position of
 * a name, or where it would go. */
static void test_sorted_find(void **unused)
{
	static const char *const names[] = {"alpha", "beta", "delta", "gamma"};
	static const struct {
		const char *name;
		bool found;
		size_t pos;
	} cases[] = {{"alpha", true, 0}, {"beta", true, 1}, {"gamma", true, 3},
		     {"a", false, 0},    {"bz", false, 2},  {"zeta", false, 4},
		     {"delta", true, 2}, {"", false, 0}};
	size_t pos = 99;

	(void)unused;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pos = 99;
		assert_int_equal(ws_sorted_find(names, 4, sizeof(names[0]), str_of, cases[i].name,
						&pos),
				 cases[i].found);
		assert_int_equal(pos, cases[i].pos);
	}
	assert_false(ws_sorted_find(names, 0, sizeof(names[0]), str_of, "alpha", &pos));
	assert_int_equal(pos, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_file_is_empty),
		cmocka_unit_test(test_round_trip_and_canonical),
		cmocka_unit_test(test_save_replaces_atomically_0600),
		cmocka_unit_test(test_corrupt_file_named),
		cmocka_unit_test(test_held_ips_expire),
		cmocka_unit_test(test_journal_and_restore),
		cmocka_unit_test(test_sorted_find),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
