/* SPDX-License-Identifier: MIT */
/* fsutil: capped reads and atomic replacement on real files in a temporary directory,
 * including failures that happen after the temporary exists (no leftovers, target kept). */
#include <stdbool.h>

#include "harness.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>

#include <json-c/json.h>

#include "fsutil.h"
#include "ws_proto.h"

/* How many names @dir holds besides "." and ".."; *ret_hidden: how many of them start with
 * '.' (fsutil's temporaries). */
static int count_entries(const char *dir, int *ret_hidden)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0, hidden = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		n++;
		if (de->d_name[0] == '.')
			hidden++;
	}
	closedir(d);
	*ret_hidden = hidden;
	return n;
}

static void assert_file(const char *path, const char *want)
{
	size_t len;
	char *got = h_read(path, &len);

	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	free(got);
}

static void rm_rf(char *dir)
{
	assert_int_equal(h_sh("chmod -R u+rwx '%s' && rm -rf '%s'", dir, dir), 0);
	free(dir);
}

static void test_replace_new_file_uses_umask(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "a.nix");
	struct ws_err err = { 0 };
	struct stat st;
	mode_t old = umask(027);
	int hidden;

	assert_int_equal(fsutil_replace(p, "{ }\n", 4, 0, &err), 0);
	umask(old);
	assert_file(p, "{ }\n");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);
	free(p);
	rm_rf(dir);
}

static void test_replace_keeps_mode_and_swaps_inode(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "run.sh");
	struct ws_err err = { 0 };
	struct stat before, after;
	int hidden;

	h_write(p, "old\n", 4);
	assert_int_equal(chmod(p, 0751), 0);
	assert_int_equal(stat(p, &before), 0);
	assert_int_equal(fsutil_replace(p, "new contents\n", 13, 0, &err), 0);
	assert_file(p, "new contents\n");
	assert_int_equal(stat(p, &after), 0);
	assert_int_equal(after.st_mode & 07777, 0751);
	assert_int_equal(after.st_uid, before.st_uid);
	/* a new inode renamed into place, not a rewrite in place */
	assert_int_not_equal(after.st_ino, before.st_ino);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);

	/* an empty file is a valid content too */
	assert_int_equal(fsutil_replace(p, "", 0, 0, &err), 0);
	assert_file(p, "");
	free(p);
	rm_rf(dir);
}

static void test_replace_private_mode(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "state.json");
	struct ws_err err = { 0 };
	struct stat st;

	h_write(p, "{}", 2);
	assert_int_equal(chmod(p, 0644), 0);
	assert_int_equal(fsutil_replace(p, "{ }", 3, FSUTIL_PRIVATE, &err), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	free(p);
	rm_rf(dir);
}

static void test_replace_keeps_owner_as_root(void **unused)
{
	char *dir, *p;
	struct ws_err err = { 0 };
	struct stat st;

	if (geteuid() != 0)
		skip();
	dir = h_tmpdir();
	p = fsutil_join(dir, "user.nix");
	h_write(p, "x", 1);
	assert_int_equal(chown(p, 65534, 65534), 0);
	assert_int_equal(chmod(p, 0664), 0);
	assert_int_equal(fsutil_replace(p, "y", 1, 0, &err), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(st.st_gid, 65534);
	assert_int_equal(st.st_mode & 07777, 0664);
	assert_file(p, "y");
	free(p);
	rm_rf(dir);
}

static void test_new_never_overwrites(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct ws_err err = { 0 };
	int hidden;

	assert_int_equal(fsutil_replace(p, "first\n", 6, FSUTIL_NEW, &err), 0);
	assert_file(p, "first\n");
	assert_int_equal(fsutil_replace(p, "second\n", 7, FSUTIL_NEW, &err), -EEXIST);
	assert_int_equal(err.code, WS_E_FILE_EXISTS);
	assert_non_null(strstr(err.message, p));
	assert_string_equal(err.file, p);
	ws_err_clear(&err);
	assert_file(p, "first\n");
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);
	free(p);
	rm_rf(dir);
}

/* An unnamed temporary made ahead (O_TMPFILE): invisible until filled, then named next to
 * its target and exchanged into place; a preset one becomes a new file under its final
 * name at once, never over an existing file; one not used leaves nothing behind. */
/* A prefilled temporary (the file as it was, synced ahead) filled with the new version
 * holds exactly the new version, whatever the two share: the same bytes, an insertion, a
 * shorter or longer text, a change in the first byte, an empty one; and it keeps the
 * replaced file's mode. Only the part from the first difference is written: the file's
 * pages before it are the ones written ahead (their bytes were never rewritten, as a
 * canary in the prefilled copy shows: had they been written again, they would hold the
 * new text's bytes). */
/* A file in a set-group-ID directory keeps its own group when replaced: a new file there
 * takes the directory's group, which is not the file's (as root only: a group to give
 * the directory). */
static void test_replace_keeps_group_in_setgid_dir(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct ws_err err = { 0 };
	struct stat st;

	if (geteuid() != 0) {
		free(p);
		rm_rf(dir);
		skip();
	}
	assert_int_equal(fsutil_replace(p, "old\n", 4, 0, &err), 0);
	assert_int_equal(chown(p, 0, 0), 0);
	assert_int_equal(chown(dir, 0, 1), 0);
	assert_int_equal(chmod(dir, 02755), 0);
	assert_int_equal(fsutil_replace(p, "new\n", 4, 0, &err), 0);
	assert_file(p, "new\n");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_gid, 0); /* not the directory's 1 */
	free(p);
	rm_rf(dir);
}

static void test_prefilled_temporary(void **unused)
{
	static const struct {
		const char *pre, *want;
	} cases[] = {
		{"{\n  a = 1;\n}\n", "{\n  a = 1;\n}\n"},
		{"{\n  a = 1;\n}\n", "{\n  a = 1;\n  b = 2;\n}\n"},
		{"{\n  a = 1;\n  b = 2;\n}\n", "{\n  a = 1;\n}\n"},
		{"{ }\n", "{ x = \"a much longer text than before\"; }\n"},
		{"X = 1;\n", "y = 1;\n"},
		{"{ a = 1; }\n", ""},
	};
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct ws_err err = { 0 };
	struct fsutil_tmp t;
	struct stat st;
	int old_fd = -1;

	for (size_t i = 0; i < WS_ARRAY_SIZE(cases); i++) {
		const char *pre = cases[i].pre, *want = cases[i].want;

		assert_int_equal(fsutil_replace(p, pre, strlen(pre), 0, &err), 0);
		assert_int_equal(chmod(p, 0640), 0);
		if (fsutil_tmp_prepare(dir, &t) < 0) {
			free(p);
			rm_rf(dir);
			skip(); /* no O_TMPFILE on this file system */
		}
		assert_int_equal(fsutil_tmp_prefill(&t, strdup(pre), strlen(pre)), 0);
		assert_non_null(t.pre);
		assert_int_equal(fsutil_tmp_fill(p, want, strlen(want), 0, &t, &err), 0);
		assert_null(t.pre);
		assert_int_equal(fsutil_tmp_commit_if(p, &t, pre, strlen(pre), 0, &old_fd, &err),
				 0);
		close(old_fd);
		assert_file(p, want);
		assert_int_equal(stat(p, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0640);
	}

	/* the canary: the prefilled copy says "{ A" where the file has "{ a"; a fill that
	 * differs only after it leaves the file's first bytes alone */
	assert_int_equal(fsutil_replace(p, "{ a = 1; }\n", 11, 0, &err), 0);
	assert_int_equal(fsutil_tmp_prepare(dir, &t), 0);
	assert_int_equal(fsutil_tmp_prefill(&t, strdup("{ a = 1; }\n"), 11), 0);
	assert_int_equal(pwrite(t.fd, "A", 1, 2), 1); /* only the file changes, not t.pre */
	assert_int_equal(fsutil_tmp_fill(p, "{ a = 1; b = 2; }\n", 18, 0, &t, &err), 0);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "{ a = 1; }\n", 11, 0, &old_fd, &err), 0);
	close(old_fd);
	assert_file(p, "{ A = 1; b = 2; }\n");

	/* prefilling takes only a fresh unnamed temporary, and owns the bytes either way */
	assert_int_equal(fsutil_tmp_prepare(dir, &t), 0);
	assert_int_equal(fsutil_tmp_preset(&t, "x", 1), 0);
	assert_int_equal(fsutil_tmp_prefill(&t, strdup("y"), 1), -EINVAL);
	fsutil_tmp_drop(&t);
	free(p);
	rm_rf(dir);
}

static void test_unnamed_temporary(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	char *ws = fsutil_join(dir, "dev.nix");
	struct fsutil_tmp t, u;
	struct ws_err err = { 0 };
	struct stat tmp_st, st;
	mode_t mask = umask(022);
	int hidden, old_fd = -1;
	bool linked;

	assert_int_equal(fsutil_replace(p, "old\n", 4, 0, &err), 0);
	assert_int_equal(chmod(p, 0640), 0);
	if (fsutil_tmp_prepare(dir, &t) < 0) {
		umask(mask);
		free(p);
		free(ws);
		rm_rf(dir);
		skip(); /* no O_TMPFILE on this file system */
	}
	assert_true(t.fd >= 0 && t.unnamed && !t.path);
	assert_int_equal(fstat(t.fd, &tmp_st), 0);
	assert_int_equal(count_entries(dir, &hidden), 1); /* nobody sees it */
	assert_int_equal(fsutil_tmp_fill(p, "new\n", 4, 0, &t, &err), 0);
	assert_non_null(t.path); /* named `.default.nix.XXXXXX` for the exchange */
	assert_int_equal(count_entries(dir, &hidden), 2);
	assert_int_equal(hidden, 1);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "old\n", 4, 0, &old_fd, &err), 0);
	assert_true(old_fd >= 0);
	close(old_fd);
	assert_file(p, "new\n");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_ino, tmp_st.st_ino); /* the very inode made ahead */
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(st.st_mode & 07777, 0640); /* the replaced file's mode */
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);

	/* preset: the content written and synced before it has a name */
	assert_int_equal(fsutil_tmp_prepare(dir, &u), 0);
	assert_int_equal(fsutil_tmp_preset(&u, "{ ... }: { }\n", 13), 0);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(fsutil_tmp_link_new(ws, &u, 0, &linked, &err), 0);
	assert_true(linked);
	assert_int_equal(u.fd, -1);
	assert_file(ws, "{ ... }: { }\n");
	assert_int_equal(stat(ws, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_nlink, 1);
	/* never over a file: the one there stays as it was */
	assert_int_equal(fsutil_tmp_prepare(dir, &u), 0);
	assert_int_equal(fsutil_tmp_preset(&u, "other\n", 6), 0);
	assert_int_equal(fsutil_tmp_link_new(ws, &u, 0, &linked, &err), -EEXIST);
	assert_false(linked);
	assert_int_equal(err.code, WS_E_FILE_EXISTS);
	ws_err_clear(&err);
	assert_int_equal(u.fd, -1);
	assert_file(ws, "{ ... }: { }\n");
	/* a preset one is not filled again (its offset is not 0): a named one is made */
	assert_int_equal(fsutil_tmp_prepare(dir, &u), 0);
	assert_int_equal(fsutil_tmp_preset(&u, "x", 1), 0);
	assert_int_equal(fsutil_tmp_fill(p, "newer\n", 6, 0, &u, &err), 0);
	assert_int_equal(fsutil_tmp_commit(p, &u, 0, &err), 0);
	assert_file(p, "newer\n");
	/* one that cannot be named (no /proc): the data goes to a named temporary instead */
	fsutil_test_no_link = true;
	assert_int_equal(fsutil_tmp_prepare(dir, &u), 0);
	assert_int_equal(fsutil_tmp_fill(p, "named\n", 6, 0, &u, &err), 0);
	assert_false(u.unnamed);
	assert_int_equal(fsutil_tmp_commit(p, &u, 0, &err), 0);
	assert_file(p, "named\n");
	assert_int_equal(fsutil_tmp_prepare(dir, &u), 0);
	assert_int_equal(fsutil_tmp_preset(&u, "x", 1), 0);
	assert_true(fsutil_tmp_link_new(ws, &u, 0, &linked, &err) < 0);
	assert_false(linked); /* ws exists: not ours, whatever the error */
	ws_err_clear(&err);
	fsutil_test_no_link = false;
	/* dropped unused: nothing left */
	assert_int_equal(fsutil_tmp_prepare(dir, &u), 0);
	fsutil_tmp_drop(&u);
	assert_int_equal(count_entries(dir, &hidden), 2);
	assert_int_equal(hidden, 0);
	umask(mask);
	free(p);
	free(ws);
	rm_rf(dir);
}

/* The temporaries of a daemon killed mid-write go at the next start; anything that only
 * looks a bit like one stays. */
static void test_remove_stale_tmps(void **unused)
{
	static const char *const stay[] = {"default.nix", ".default.nix.backup",
					   ".default.nix.Ab12C", ".other.nix.Ab12Cd",
					   ".default.nix.Ab12Cd.x", "default.nix.Ab12Cd"};
	char *dir = h_tmpdir();
	char *sub = fsutil_join(dir, ".default.nix.Zz99Zz");
	int hidden;

	(void)unused;
	for (size_t i = 0; i < sizeof(stay) / sizeof(stay[0]); i++) {
		char *p = fsutil_join(dir, stay[i]);

		h_write(p, "x", 1);
		free(p);
	}
	assert_int_equal(mkdir(sub, 0755), 0); /* not a regular file */
	for (int i = 0; i < 2; i++) {
		char *p = fsutil_join(dir, i ? ".default.nix.q1W2e3" : ".default.nix.Ab12Cd");

		h_write(p, "left behind\n", 12);
		free(p);
	}
	assert_int_equal(count_entries(dir, &hidden), 9);
	assert_int_equal(fsutil_remove_stale_tmps(dir, "default.nix", NULL), 2);
	assert_int_equal(count_entries(dir, &hidden), 7);
	assert_int_equal(fsutil_remove_stale_tmps(dir, "default.nix", NULL), 0);
	assert_int_equal(fsutil_remove_stale_tmps("/nonexistent/dir", "default.nix", NULL), 0);
	free(sub);
	rm_rf(dir);
}

/* The umask read once at start-up serves every later new file, whatever umask another
 * thread sets for a moment (the socket's bind). Last: it changes fsutil for the process. */
static void test_umask_kept(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "new.nix");
	char *q = fsutil_join(dir, "other.nix");
	struct fsutil_tmp t;
	struct ws_err err = { 0 };
	mode_t mask = umask(022);
	struct stat st;
	bool linked;

	(void)unused;
	fsutil_umask_keep();
	umask(0177); /* as while the socket is bound */
	assert_int_equal(fsutil_replace(p, "x\n", 2, FSUTIL_NEW, &err), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	if (fsutil_tmp_prepare(dir, &t) == 0) {
		assert_int_equal(fsutil_tmp_preset(&t, "y\n", 2), 0);
		assert_int_equal(fsutil_tmp_link_new(q, &t, 0, &linked, &err), 0);
		assert_int_equal(stat(q, &st), 0);
		assert_int_equal(st.st_mode & 0777, 0644);
	}
	umask(mask);
	fsutil_umask_keep();
	free(p);
	free(q);
	rm_rf(dir);
}

/* A temporary made ahead is the one renamed into place; one not used is removed. */
static void test_premade_temporary(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct fsutil_tmp t;
	struct ws_err err = { 0 };
	struct stat tmp_st, st;
	int hidden;

	assert_int_equal(fsutil_replace(p, "old\n", 4, 0, &err), 0);
	assert_int_equal(fsutil_tmp_make(p, &t, &err), 0);
	assert_true(t.fd >= 0);
	assert_int_equal(fstat(t.fd, &tmp_st), 0);
	assert_int_equal(count_entries(dir, &hidden), 2);
	assert_int_equal(hidden, 1);
	assert_int_equal(fsutil_tmp_fill(p, "new\n", 4, 0, &t, &err), 0);
	assert_int_equal(fsutil_tmp_commit(p, &t, FSUTIL_NO_DIR_SYNC, &err), 0);
	assert_int_equal(t.fd, -1);
	assert_file(p, "new\n");
	/* the very inode made ahead now is the file */
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_ino, tmp_st.st_ino);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);
	assert_int_equal(fsutil_sync_parent(p), 0);
	fsutil_tmp_drop(&t); /* nothing left to drop */

	/* a refused write leaves the temporary to the caller, who drops it */
	assert_int_equal(fsutil_tmp_make(p, &t, &err), 0);
	assert_int_equal(fsutil_tmp_fill(p, "x\n", 2, FSUTIL_NEW, &t, &err), -EEXIST);
	ws_err_clear(&err);
	fsutil_tmp_drop(&t);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);
	assert_file(p, "new\n");
	free(p);
	rm_rf(dir);
}

/* Fill then commit: filling changes nothing at the target (the temporary holds the bytes,
 * synced, with the old file's mode); a dropped fill leaves nothing; commit renames that
 * very inode into place; a commit that may not replace leaves the target and no temporary. */
static void test_fill_then_commit(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct fsutil_tmp t = {.fd = -1};
	struct ws_err err = { 0 };
	struct stat tmp_st, st;
	int hidden;

	assert_int_equal(fsutil_replace(p, "old\n", 4, 0, &err), 0);
	assert_int_equal(chmod(p, 0640), 0);
	assert_int_equal(fsutil_tmp_fill(p, "new\n", 4, 0, &t, &err), 0);
	assert_int_equal(t.fd, -1);
	assert_non_null(t.path);
	assert_file(p, "old\n");
	assert_file(t.path, "new\n");
	assert_int_equal(stat(t.path, &tmp_st), 0);
	assert_int_equal(tmp_st.st_mode & 07777, 0640);
	assert_int_equal(count_entries(dir, &hidden), 2);
	assert_int_equal(hidden, 1);
	fsutil_tmp_drop(&t);
	assert_null(t.path);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);

	/* filled twice: the second fill starts a new temporary, the first is removed */
	assert_int_equal(fsutil_tmp_fill(p, "first\n", 6, 0, &t, &err), 0);
	assert_int_equal(fsutil_tmp_fill(p, "second\n", 7, 0, &t, &err), 0);
	assert_int_equal(count_entries(dir, &hidden), 2);
	assert_int_equal(stat(t.path, &tmp_st), 0);
	assert_int_equal(fsutil_tmp_commit(p, &t, 0, &err), 0);
	assert_null(t.path);
	assert_file(p, "second\n");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_ino, tmp_st.st_ino);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);

	/* FSUTIL_NEW: a file that appeared between fill and commit is kept */
	free(p);
	p = fsutil_join(dir, "new.nix");
	assert_int_equal(fsutil_tmp_fill(p, "ours\n", 5, FSUTIL_NEW, &t, &err), 0);
	h_write(p, "theirs\n", 7);
	assert_int_equal(fsutil_tmp_commit(p, &t, FSUTIL_NEW, &err), -EEXIST);
	assert_int_equal(err.code, WS_E_FILE_EXISTS);
	ws_err_clear(&err);
	assert_null(t.path);
	assert_file(p, "theirs\n");
	assert_int_equal(count_entries(dir, &hidden), 2);
	assert_int_equal(hidden, 0);
	/* commit without a filled temporary is refused */
	assert_int_equal(fsutil_tmp_commit(p, &t, 0, &err), -EINVAL);
	ws_err_clear(&err);
	assert_file(p, "theirs\n");
	free(p);
	rm_rf(dir);
}

/* Commit only over the expected bytes: the check is made on the very file swapped out, so
 * a file changed after any earlier check is put back untouched (-EAGAIN). */
static void test_commit_if_unchanged(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct fsutil_tmp t = {.fd = -1};
	struct ws_err err = { 0 };
	struct stat st;
	char buf[16];
	int hidden, old_fd = -1;

	assert_int_equal(fsutil_replace(p, "old\n", 4, 0, &err), 0);
	/* unchanged: replaced; the replaced file comes back open, its name gone */
	assert_int_equal(fsutil_tmp_fill(p, "new\n", 4, 0, &t, &err), 0);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "old\n", 4, 0, &old_fd, &err), 0);
	assert_null(t.path);
	assert_file(p, "new\n");
	assert_true(old_fd >= 0);
	assert_int_equal(pread(old_fd, buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "old\n", 4);
	assert_int_equal(fstat(old_fd, &st), 0);
	assert_int_equal(st.st_nlink, 0);
	close(old_fd);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);

	/* changed in place since: the changed file stays, ours goes */
	assert_int_equal(fsutil_tmp_fill(p, "ours\n", 5, 0, &t, &err), 0);
	h_write(p, "hand edit\n", 10);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "new\n", 4, 0, NULL, &err), -EAGAIN);
	ws_err_clear(&err);
	assert_null(t.path);
	assert_file(p, "hand edit\n");
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);

	/* replaced by another file with other bytes: the same */
	assert_int_equal(fsutil_tmp_fill(p, "ours\n", 5, 0, &t, &err), 0);
	assert_int_equal(h_sh("printf 'theirs\\n' > '%s/x' && mv '%s/x' '%s'", dir, dir, p), 0);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "hand edit\n", 10, 0, NULL, &err), -EAGAIN);
	ws_err_clear(&err);
	assert_file(p, "theirs\n");

	/* gone: nothing is put there */
	assert_int_equal(fsutil_tmp_fill(p, "ours\n", 5, 0, &t, &err), 0);
	assert_int_equal(unlink(p), 0);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "theirs\n", 7, 0, NULL, &err), -EAGAIN);
	ws_err_clear(&err);
	assert_int_equal(count_entries(dir, &hidden), 0);
	free(p);
	rm_rf(dir);
}

/* A second version saved at the path between the exchange and the swap back lands at the
 * temporary's name: it is kept there and named, never removed. */
static char *exchanged_dir;

static void save_v2(const char *path, const char *tmp)
{
	char *v2 = fsutil_join(exchanged_dir, "v2");

	(void)tmp;
	h_write(v2, "v2\n", 3);
	assert_int_equal(rename(v2, path), 0);
	free(v2);
}

static void test_commit_if_keeps_a_second_version(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct fsutil_tmp t = {.fd = -1};
	struct ws_err err = { 0 };
	struct json_object *at = NULL;
	char *kept;

	assert_int_equal(fsutil_replace(p, "v1\n", 3, 0, &err), 0); /* the first hand edit */
	assert_int_equal(fsutil_tmp_fill(p, "ours\n", 5, 0, &t, &err), 0);
	exchanged_dir = dir;
	fsutil_test_exchanged = save_v2;
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "old\n", 4, 0, NULL, &err), -EAGAIN);
	fsutil_test_exchanged = NULL;
	assert_file(p, "v1\n");
	assert_non_null(err.data);
	assert_true(json_object_object_get_ex(err.data, "keptAt", &at));
	kept = strdup(json_object_get_string(at));
	assert_non_null(strstr(err.message, kept));
	assert_file(kept, "v2\n");
	assert_null(t.path);
	ws_err_clear(&err);
	free(kept);
	free(p);
	rm_rf(dir);
}

/* Where the file system cannot exchange: the comparison just before a plain rename. */
static void test_commit_if_without_exchange(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "default.nix");
	struct fsutil_tmp t = {.fd = -1};
	struct ws_err err = { 0 };
	char buf[16];
	int hidden, old_fd = -1;

	fsutil_test_no_exchange = true;
	assert_int_equal(fsutil_replace(p, "old\n", 4, 0, &err), 0);
	assert_int_equal(fsutil_tmp_fill(p, "new\n", 4, 0, &t, &err), 0);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "old\n", 4, 0, &old_fd, &err), 0);
	assert_file(p, "new\n");
	assert_true(old_fd >= 0);
	assert_int_equal(pread(old_fd, buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "old\n", 4);
	close(old_fd);

	assert_int_equal(fsutil_tmp_fill(p, "ours\n", 5, 0, &t, &err), 0);
	h_write(p, "hand edit\n", 10);
	assert_int_equal(fsutil_tmp_commit_if(p, &t, "new\n", 4, 0, NULL, &err), -EAGAIN);
	ws_err_clear(&err);
	assert_file(p, "hand edit\n");
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);
	fsutil_test_no_exchange = false;
	free(p);
	rm_rf(dir);
}

static void test_failures_leave_no_temporary(void **unused)
{
	char *dir = h_tmpdir();
	char *sub = fsutil_join(dir, "sub");
	char *missing = fsutil_join(dir, "nope/x.nix");
	struct ws_err err = { 0 };
	int hidden;
	int r;

	/* the target is a directory */
	assert_int_equal(mkdir(sub, 0755), 0);
	r = fsutil_replace(sub, "x", 1, 0, &err);
	assert_true(r < 0);
	assert_non_null(strstr(err.message, sub));
	ws_err_clear(&err);
	/* the directory does not exist */
	r = fsutil_replace(missing, "x", 1, 0, &err);
	assert_int_equal(r, -ENOENT);
	ws_err_clear(&err);
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);
	free(sub);
	free(missing);
	rm_rf(dir);
}

/* Runs fsutil_replace() in a child (so rlimits and uid changes stay there); returns its
 * result as the child's exit code (the negated errno). */
static int replace_in_child(const char *path, size_t len, int flags, bool as_nobody,
			    rlim_t fsize)
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ws_err err = { 0 };
		char *buf = calloc(1, len);
		int r;

		if (fsize != RLIM_INFINITY) {
			struct rlimit rl = { fsize, fsize };

			signal(SIGXFSZ, SIG_IGN);
			if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
				_exit(100);
		}
		if (as_nobody && (setresgid(65534, 65534, 65534) < 0 ||
				  setresuid(65534, 65534, 65534) < 0))
			_exit(101);
		r = fsutil_replace(path, buf, len, flags, &err);
		_exit(r < 0 ? -r : 0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	return -WEXITSTATUS(st);
}

static void test_write_failure_removes_temporary(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "big.nix");
	int hidden;

	h_write(p, "keep\n", 5);
	/* The temporary is created, then writing fails past the file size limit. */
	assert_int_equal(replace_in_child(p, 1 << 20, 0, false, 4096), -EFBIG);
	assert_file(p, "keep\n");
	assert_int_equal(count_entries(dir, &hidden), 1);
	assert_int_equal(hidden, 0);
	free(p);
	rm_rf(dir);
}

static void test_unwritable_directory(void **unused)
{
	char *dir = h_tmpdir();
	char *ro = fsutil_join(dir, "ro");
	char *p = fsutil_join(ro, "x.nix");
	struct ws_err err = { 0 };
	int hidden;
	int r;

	assert_int_equal(mkdir(ro, 0755), 0);
	h_write(p, "keep\n", 5);
	assert_int_equal(chmod(ro, 0555), 0);
	if (geteuid() == 0) {
		/* root writes anywhere: try as nobody, who may enter but not write */
		assert_int_equal(chmod(dir, 0755), 0);
		r = replace_in_child(p, 10, 0, true, RLIM_INFINITY);
	} else {
		r = fsutil_replace(p, "0123456789", 10, 0, &err);
		ws_err_clear(&err);
	}
	assert_int_equal(r, -EACCES);
	assert_file(p, "keep\n");
	assert_int_equal(count_entries(ro, &hidden), 1);
	assert_int_equal(hidden, 0);
	free(p);
	free(ro);
	rm_rf(dir);
}

static void test_read_caps(void **unused)
{
	char *dir = h_tmpdir();
	char *p = fsutil_join(dir, "f");
	char *buf = NULL;
	size_t len = 0;
	int fd;

	h_write(p, "0123456789", 10);
	assert_int_equal(fsutil_read(p, 10, &buf, &len), 0);
	assert_int_equal(len, 10);
	assert_string_equal(buf, "0123456789");
	free(buf);
	buf = NULL;
	assert_int_equal(fsutil_read(p, 9, &buf, &len), -EFBIG);
	assert_null(buf);
	assert_int_equal(fsutil_read(p, 0, &buf, &len), -EFBIG);

	/* from the fd's current offset */
	fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(lseek(fd, 4, SEEK_SET), 4);
	assert_int_equal(fsutil_read_fd(fd, 6, &buf, &len), 0);
	assert_int_equal(len, 6);
	assert_string_equal(buf, "456789");
	free(buf);
	close(fd);

	/* an empty file gives an empty, NUL-terminated buffer */
	h_write(p, "", 0);
	assert_int_equal(fsutil_read(p, 0, &buf, &len), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);

	assert_int_equal(fsutil_read("/nonexistent/ws-test", 10, &buf, &len), -ENOENT);
	free(p);
	rm_rf(dir);
}

static void test_read_pipe_cap(void **unused)
{
	char *buf = NULL;
	size_t len = 0;
	int fds[2];

	/* no size to look at up front: the cap applies while reading */
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	assert_int_equal(write(fds[1], "abcdef", 6), 6);
	close(fds[1]);
	assert_int_equal(fsutil_read_fd(fds[0], 5, &buf, &len), -EFBIG);
	close(fds[0]);

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	assert_int_equal(write(fds[1], "abcdef", 6), 6);
	close(fds[1]);
	assert_int_equal(fsutil_read_fd(fds[0], 6, &buf, &len), 0);
	assert_int_equal(len, 6);
	assert_string_equal(buf, "abcdef");
	free(buf);
	close(fds[0]);
}

static void test_mkdir_p_join_remove(void **unused)
{
	char *dir = h_tmpdir();
	char *deep = fsutil_join(dir, "a/b//c/");
	char *file = fsutil_join(dir, "a/f");
	char *under_file = fsutil_join(dir, "a/f/g");
	char *j;
	struct stat st;

	assert_int_equal(fsutil_mkdir_p(deep, 0700), 0);
	assert_int_equal(stat(deep, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	/* again: nothing to do */
	assert_int_equal(fsutil_mkdir_p(deep, 0700), 0);
	h_write(file, "x", 1);
	assert_int_equal(fsutil_mkdir_p(under_file, 0700), -ENOTDIR);
	assert_int_equal(fsutil_mkdir_p(file, 0700), -ENOTDIR);

	assert_int_equal(fsutil_remove(file), 0);
	assert_int_equal(stat(file, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(fsutil_remove(file), 0);

	j = fsutil_join("a", "b");
	assert_string_equal(j, "a/b");
	free(j);
	j = fsutil_join("a/", "/b");
	assert_string_equal(j, "a/b");
	free(j);
	j = fsutil_join("", "b");
	assert_string_equal(j, "b");
	free(j);

	free(deep);
	free(file);
	free(under_file);
	rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replace_new_file_uses_umask),
		cmocka_unit_test(test_replace_keeps_mode_and_swaps_inode),
		cmocka_unit_test(test_replace_private_mode),
		cmocka_unit_test(test_replace_keeps_owner_as_root),
		cmocka_unit_test(test_new_never_overwrites),
		cmocka_unit_test(test_failures_leave_no_temporary),
		cmocka_unit_test(test_premade_temporary),
		cmocka_unit_test(test_fill_then_commit),
		cmocka_unit_test(test_commit_if_unchanged),
		cmocka_unit_test(test_commit_if_keeps_a_second_version),
		cmocka_unit_test(test_commit_if_without_exchange),
		cmocka_unit_test(test_write_failure_removes_temporary),
		cmocka_unit_test(test_unwritable_directory),
		cmocka_unit_test(test_read_caps),
		cmocka_unit_test(test_read_pipe_cap),
		cmocka_unit_test(test_mkdir_p_join_remove),
		cmocka_unit_test(test_unnamed_temporary),
		cmocka_unit_test(test_prefilled_temporary),
		cmocka_unit_test(test_replace_keeps_group_in_setgid_dir),
		cmocka_unit_test(test_remove_stale_tmps),
		cmocka_unit_test(test_umask_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
