/* SPDX-License-Identifier: MIT */
/* gitstage on real repositories made and inspected with the git CLI: exactly the asked-for
 * paths staged (status without spurious work-tree changes), index.lock respected and never
 * removed, byte-identical index snapshots, one index write per call, clear refusals. */
#include <stdbool.h>

#include "harness.h"

#include <sys/inotify.h>
#include <time.h>

#include <git2.h>
#include <json-c/json.h>

#include "fsutil.h"
#include "gitstage.h"
#include "ws_proto.h"

#define GIT "git -c user.name=t -c user.email=t@t -c init.defaultBranch=main"

static char *home; /* HOME for git and libgit2: no user configuration leaks in */

static void put(const char *dir, const char *rel, const char *text)
{
	char *p = fsutil_join(dir, rel);

	h_write(p, text, strlen(text));
	free(p);
}

/* A repository with a.txt, b.txt and c.nix committed. */
static char *make_repo(void)
{
	char *dir = h_tmpdir();

	assert_int_equal(h_sh("cd '%s' && " GIT " init -q .", dir), 0);
	put(dir, "a.txt", "alpha\n");
	put(dir, "b.txt", "bravo\n");
	put(dir, "c.nix", "line1\nline2\nline3\n");
	assert_int_equal(h_sh("cd '%s' && " GIT " add -A && " GIT " commit -qm init", dir), 0);
	return dir;
}

static void rm_repo(char *dir)
{
	assert_int_equal(h_sh("rm -rf '%s'", dir), 0);
	free(dir);
}

static char *git_out(const char *dir, const char *args)
{
	return h_sh_out("cd '%s' && " GIT " %s", dir, args);
}

static void assert_git(const char *dir, const char *args, const char *want)
{
	char *out = git_out(dir, args);

	if (strcmp(out, want) != 0)
		fail_msg("git %s:\n got: [%s]\nwant: [%s]", args, out, want);
	free(out);
}

static struct gitstage *open_ok(const char *dir)
{
	struct gitstage *g = NULL;
	struct ws_err err = { 0 };
	int r = gitstage_open(dir, &g, &err);

	if (r < 0)
		fail_msg("gitstage_open('%s'): %d %s", dir, r, err.message);
	assert_non_null(g);
	return g;
}

static int stage1(struct gitstage *g, const char *path, const char *text, int wait_ms,
		  struct ws_err *err)
{
	struct gitstage_entry e = { .path = path, .buf = text, .len = strlen(text) };

	return gitstage_stage(g, &e, 1, wait_ms, NULL, err);
}

static int64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_open_paths(void **unused)
{
	char *dir = make_repo();
	struct gitstage *g = open_ok(dir);
	char *want = fsutil_join(dir, ".git/index");
	char *sub = fsutil_join(dir, "sub");

	assert_string_equal(gitstage_workdir(g), dir);
	assert_string_equal(gitstage_index_path(g), want);
	gitstage_free(g);

	/* a subdirectory is not the work tree: no searching upwards */
	{
		struct ws_err err = { 0 };

		g = NULL;
		assert_int_equal(mkdir(sub, 0755), 0);
		assert_true(gitstage_open(sub, &g, &err) < 0);
		assert_null(g);
		assert_int_equal(err.code, WS_E_GIT_ERROR);
		ws_err_clear(&err);
	}
	free(sub);
	free(want);
	rm_repo(dir);
}

static void test_not_a_repository(void **unused)
{
	char *dir = h_tmpdir();
	char *bare = fsutil_join(dir, "bare.git");
	struct gitstage *g = NULL;
	struct ws_err err = { 0 };

	assert_int_equal(gitstage_open(dir, &g, &err), -ENOENT);
	assert_null(g);
	assert_int_equal(err.code, WS_E_GIT_ERROR);
	assert_non_null(strstr(err.message, dir));
	assert_non_null(strstr(err.message, "not a git work tree"));
	ws_err_clear(&err);

	assert_int_equal(h_sh(GIT " init -q --bare '%s'", bare), 0);
	assert_true(gitstage_open(bare, &g, &err) < 0);
	assert_null(g);
	assert_int_equal(err.code, WS_E_GIT_ERROR);
	assert_non_null(strstr(err.message, "bare"));
	ws_err_clear(&err);
	free(bare);
	rm_repo(dir);
}

static void test_owned_by_another_uid(void **unused)
{
	char *dir, *gitdir, *cfg, *want;
	struct gitstage *g = NULL;
	struct ws_err err = { 0 };
	struct json_object *v;

	if (geteuid() != 0)
		skip(); /* only root can give the .git directory to another uid */
	dir = make_repo();
	gitdir = fsutil_join(dir, ".git");
	cfg = fsutil_join(home, ".gitconfig");
	assert_int_equal(chown(gitdir, 65534, 65534), 0);

	assert_int_equal(gitstage_open(dir, &g, &err), -EPERM);
	assert_null(g);
	assert_int_equal(err.code, WS_E_GIT_ERROR);
	assert_non_null(strstr(err.message, "owned by uid 65534"));
	assert_non_null(strstr(err.message, "runs as uid 0"));
	assert_non_null(strstr(err.message, "run workspaced as uid 65534"));
	assert_non_null(strstr(err.message, "safe.directory"));
	assert_true(json_object_object_get_ex(err.data, "ownerUid", &v));
	assert_int_equal(json_object_get_int(v), 65534);
	ws_err_clear(&err);

	/* the same message when libgit2's own ownership check refuses first */
	assert_int_equal(git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 1), 0);
	assert_int_equal(gitstage_open(dir, &g, &err), -EPERM);
	assert_int_equal(git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0), 0);
	assert_null(g);
	assert_int_equal(err.code, WS_E_GIT_ERROR);
	assert_non_null(strstr(err.message, "owned by uid 65534"));
	assert_non_null(strstr(err.message, "runs as uid 0"));
	ws_err_clear(&err);

	/* the fix the message names works */
	assert_true(asprintf(&want, "[safe]\n\tdirectory = %s\n", dir) > 0);
	h_write(cfg, want, strlen(want));
	g = open_ok(dir);
	gitstage_free(g);
	assert_int_equal(unlink(cfg), 0);

	free(want);
	free(cfg);
	free(gitdir);
	rm_repo(dir);
}

static void test_stage_new_and_modified(void **unused)
{
	char *dir = make_repo();
	char *sh = fsutil_join(dir, "run.sh");
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	struct gitstage_entry e[3] = {
		{ .path = "new.txt", .buf = "new file\n", .len = 9 },
		{ .path = "a.txt", .buf = "alpha 2\n", .len = 8 },
		{ .path = "run.sh", .buf = "#!/bin/sh\n", .len = 10 },
	};

	put(dir, "new.txt", "new file\n");
	put(dir, "a.txt", "alpha 2\n");
	put(dir, "b.txt", "bravo, unstaged\n");
	put(dir, "run.sh", "#!/bin/sh\n");
	assert_int_equal(chmod(sh, 0755), 0);

	assert_int_equal(gitstage_stage(g, e, 3, 500, NULL, &err), 0);
	/* the stat data is the file's: plumbing that does not refresh the index sees no
	 * change either (first: `git status` would refresh and rewrite the index) */
	assert_git(dir, "diff-files --name-only", "b.txt\n");
	assert_git(dir, "diff --cached --name-only", "a.txt\nnew.txt\nrun.sh\n");
	assert_git(dir, "status --porcelain", "M  a.txt\n M b.txt\nA  new.txt\nA  run.sh\n");
	/* mode 0 took the work tree's executable bit */
	assert_git(dir, "ls-files -s run.sh | cut -c1-6", "100755\n");
	assert_git(dir, "ls-files -s new.txt | cut -c1-6", "100644\n");
	gitstage_free(g);
	free(sh);
	rm_repo(dir);
}

/* Blobs written first (as the daemon does next to its file write), then only the index. */
static void test_blobs_first_then_index(void **unused)
{
	char *dir = make_repo();
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	struct gitstage_entry e[2] = {
		{ .path = "w.nix", .buf = "{ }\n", .len = 4 },
		{ .path = "a.txt", .buf = "alpha 3\n", .len = 8 },
	};
	char *want, *id;

	put(dir, "w.nix", "{ }\n");
	put(dir, "a.txt", "alpha 3\n");
	assert_int_equal(gitstage_write_blobs(g, e, 2, &err), 0);
	assert_true(e[0].have_id && e[1].have_id);
	/* the ids are git's, and the objects exist before the index names them */
	want = git_out(dir, "hash-object w.nix");
	id = git_out(dir, "cat-file -t $(git hash-object w.nix)");
	assert_string_equal(id, "blob\n");
	free(id);
	assert_git(dir, "diff --cached --name-only", "");
	/* staging now only writes the index: a changed buffer would not be re-hashed */
	e[0].buf = "not what was hashed\n";
	assert_int_equal(gitstage_stage(g, e, 2, 500, NULL, &err), 0);
	id = git_out(dir, "rev-parse :w.nix");
	assert_string_equal(id, want);
	assert_git(dir, "show :a.txt", "alpha 3\n");
	assert_git(dir, "status --porcelain", "M  a.txt\nA  w.nix\n");
	free(id);
	free(want);
	gitstage_free(g);
	rm_repo(dir);
}

static void test_stage_blob_other_than_worktree(void **unused)
{
	char *dir = make_repo();
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	const char *staged = "line1\nline2\nline3\ndaemon\n";
	char *buf = NULL;
	size_t len = 0;

	/* the user's unstaged edit, plus the daemon's edit in the file on disk */
	put(dir, "c.nix", "line1 user\nline2\nline3\ndaemon\n");
	/* the daemon stages its edit applied to the index version only */
	assert_int_equal(gitstage_read_index(g, "c.nix", &buf, &len, &err), 0);
	assert_string_equal(buf, "line1\nline2\nline3\n");
	free(buf);
	assert_int_equal(stage1(g, "c.nix", staged, 500, &err), 0);

	assert_git(dir, "show :c.nix", staged);
	assert_git(dir, "diff --cached -U0 | grep '^[-+][^-+]'", "+daemon\n");
	assert_git(dir, "diff -U0 | grep '^[-+][^-+]'", "-line1\n+line1 user\n");
	assert_git(dir, "status --porcelain", "MM c.nix\n");

	assert_int_equal(gitstage_read_index(g, "c.nix", &buf, &len, &err), 0);
	assert_int_equal(len, strlen(staged));
	assert_string_equal(buf, staged);
	free(buf);
	buf = NULL;
	assert_int_equal(gitstage_read_index(g, "missing.nix", &buf, &len, &err), -ENOENT);
	assert_null(buf);
	ws_err_clear(&err);
	assert_true(stage1(g, "../escape", "x", 500, &err) < 0);
	ws_err_clear(&err);
	gitstage_free(g);
	rm_repo(dir);
}

/* The bytes read back for a path follow the index, whoever changed it: the memo of the last
 * blob read or staged is used only while the index still names that blob. */
static void test_read_index_follows_other_git(void **unused)
{
	char *dir = make_repo();
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	char *buf = NULL;
	size_t len = 0;

	assert_int_equal(stage1(g, "c.nix", "ours\n", 500, &err), 0);
	assert_int_equal(gitstage_read_index(g, "c.nix", &buf, &len, &err), 0);
	assert_string_equal(buf, "ours\n");
	free(buf);
	/* another git stages other bytes for the same path */
	put(dir, "c.nix", "theirs\n");
	assert_int_equal(h_sh("cd '%s' && " GIT " add c.nix", dir), 0);
	assert_int_equal(gitstage_read_index(g, "c.nix", &buf, &len, &err), 0);
	assert_int_equal(len, 7);
	assert_string_equal(buf, "theirs\n");
	free(buf);
	/* and back to the committed version */
	assert_int_equal(h_sh("cd '%s' && " GIT " reset -q c.nix", dir), 0);
	assert_int_equal(gitstage_read_index(g, "c.nix", &buf, &len, &err), 0);
	assert_string_equal(buf, "line1\nline2\nline3\n");
	free(buf);
	/* a staged empty file */
	assert_int_equal(stage1(g, "c.nix", "", 500, &err), 0);
	assert_int_equal(gitstage_read_index(g, "c.nix", &buf, &len, &err), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);
	assert_git(dir, "diff --cached --stat | tail -n1", " 1 file changed, 3 deletions(-)\n");
	gitstage_free(g);
	rm_repo(dir);
}

/* The undo of a staging: byte for byte while nobody else touched the index; otherwise only
 * the staged paths go back (each while it still holds our blob), other work stays. */
static int stage_undoable(struct gitstage *g, const char *path, const char *text,
			  struct gitstage_change **c, struct ws_err *err)
{
	struct gitstage_entry e = { .path = path, .buf = text, .len = strlen(text) };

	return gitstage_stage(g, &e, 1, 500, c, err);
}

static void test_undo_keeps_other_staging(void **unused)
{
	char *dir = make_repo();
	char *index = fsutil_join(dir, ".git/index");
	struct gitstage *g = open_ok(dir);
	struct gitstage_change *c = NULL;
	struct ws_err err = { 0 };
	char *snap = NULL, *now;
	size_t slen = 0, nlen;

	/* nobody in between: the index comes back byte for byte */
	assert_int_equal(gitstage_snapshot_index(g, &snap, &slen, &err), 0);
	assert_int_equal(stage_undoable(g, "new.nix", "new\n", &c, &err), 0);
	assert_non_null(c);
	assert_int_equal(gitstage_undo(g, c, snap, slen, 500, &err), 0);
	now = h_read(index, &nlen);
	assert_int_equal(nlen, slen);
	assert_memory_equal(now, snap, slen);
	free(now);
	gitstage_change_free(c);

	/* another git stages a file after us: only our entries go back */
	put(dir, "notes.txt", "notes\n");
	assert_int_equal(stage_undoable(g, "c.nix", "line1\nours\n", &c, &err), 0);
	assert_int_equal(h_sh("cd '%s' && " GIT " add notes.txt", dir), 0);
	assert_int_equal(gitstage_undo(g, c, snap, slen, 500, &err), 0);
	assert_git(dir, "diff --cached --name-only", "notes.txt\n");
	assert_git(dir, "show :c.nix", "line1\nline2\nline3\n");
	gitstage_change_free(c);

	/* a new path we staged goes; a path another git staged again after us keeps theirs */
	assert_int_equal(h_sh("cd '%s' && " GIT " reset -q notes.txt", dir), 0);
	free(snap);
	assert_int_equal(gitstage_snapshot_index(g, &snap, &slen, &err), 0);
	{
		struct gitstage_entry e[2] = {
			{ .path = "w/new.nix", .buf = "w\n", .len = 2 },
			{ .path = "b.txt", .buf = "ours\n", .len = 5 },
		};

		assert_int_equal(gitstage_stage(g, e, 2, 500, &c, &err), 0);
	}
	put(dir, "b.txt", "theirs\n");
	assert_int_equal(h_sh("cd '%s' && " GIT " add b.txt", dir), 0);
	assert_int_equal(gitstage_undo(g, c, snap, slen, 500, &err), 0);
	assert_git(dir, "ls-files w", "");
	assert_git(dir, "show :b.txt", "theirs\n");
	assert_git(dir, "diff --cached --name-only", "b.txt\n");
	gitstage_change_free(c);

	/* a mode another git gave our entry since stays, with the old blob back */
	free(snap);
	assert_int_equal(gitstage_snapshot_index(g, &snap, &slen, &err), 0);
	assert_int_equal(stage_undoable(g, "c.nix", "line1\nmode\n", &c, &err), 0);
	assert_int_equal(h_sh("cd '%s' && " GIT " update-index --chmod=+x c.nix", dir), 0);
	assert_int_equal(gitstage_undo(g, c, snap, slen, 500, &err), 0);
	assert_git(dir, "ls-files -s c.nix | cut -c1-47",
		   "100755 83db48f84ec878fbfb30b46d16630e944e34f205\n");
	assert_int_equal(h_sh("cd '%s' && " GIT " update-index --chmod=-x c.nix", dir), 0);
	gitstage_change_free(c);

	/* staged over an index changed since the snapshot: that change stays too */
	assert_int_equal(h_sh("cd '%s' && " GIT " reset -q b.txt", dir), 0);
	free(snap);
	assert_int_equal(gitstage_snapshot_index(g, &snap, &slen, &err), 0);
	assert_int_equal(h_sh("cd '%s' && " GIT " add notes.txt", dir), 0);
	assert_int_equal(stage_undoable(g, "a.txt", "alpha 3\n", &c, &err), 0);
	assert_int_equal(gitstage_undo(g, c, snap, slen, 500, &err), 0);
	assert_git(dir, "diff --cached --name-only", "notes.txt\n");
	gitstage_change_free(c);
	assert_int_equal(gitstage_undo(g, NULL, snap, slen, 500, &err), 0);

	free(snap);
	free(index);
	gitstage_free(g);
	rm_repo(dir);
}

/* An object already in the database (here packed) needs no write, so staging it works
 * where the object directory cannot be written; a new object still fails clearly. */
static void test_existing_blob_needs_no_write(void **unused)
{
	char *dir = make_repo();
	struct gitstage *g;
	struct ws_err err = { 0 };
	bool root = geteuid() == 0;
	int r;

	assert_int_equal(h_sh("cd '%s' && " GIT " repack -qad && " GIT " prune-packed", dir), 0);
	if (root)
		r = h_sh("chattr +i '%s/.git/objects' 2>/dev/null", dir);
	else
		r = h_sh("chmod 0555 '%s/.git/objects'", dir);
	if (r != 0) {
		rm_repo(dir);
		skip(); /* no way to make the directory read-only here */
	}
	g = open_ok(dir);
	put(dir, "copy.nix", "line1\nline2\nline3\n");
	r = stage1(g, "copy.nix", "line1\nline2\nline3\n", 500, &err);
	if (r < 0)
		fail_msg("staging a packed blob: %s", err.message);
	assert_git(dir, "ls-files -s copy.nix | cut -c1-47",
		   "100644 83db48f84ec878fbfb30b46d16630e944e34f205\n");
	assert_true(stage1(g, "new.nix", "not in the database\n", 500, &err) < 0);
	assert_int_equal(err.code, WS_E_GIT_ERROR);
	ws_err_clear(&err);
	gitstage_free(g);
	assert_int_equal(h_sh(root ? "chattr -i '%s/.git/objects'" : "chmod 0755 '%s/.git/objects'",
			      dir), 0);
	rm_repo(dir);
}

/* Counts the inotify events in @fd's queue whose mask has one of @mask's bits and, unless
 * @prefix is NULL, whose name begins with @prefix. */
static int events_with(int fd, uint32_t mask, const char *prefix)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	int n = 0;
	ssize_t len;

	while ((len = read(fd, buf, sizeof(buf))) > 0)
		for (char *p = buf; p < buf + len;) {
			struct inotify_event *ev = (struct inotify_event *)(void *)p;

			n += (ev->mask & mask) != 0 &&
			     (!prefix || (ev->len && strncmp(ev->name, prefix, strlen(prefix)) == 0));
			p += sizeof(*ev) + ev->len;
		}
	return n;
}

/* Staging makes no inode it then frees again (on ext4 without a journal, each new inode
 * scans the ones freed in the last seconds): a blob already in the database is not
 * written to a temporary first. The lock held over the index's read and change is a second
 * name of the index itself (link()): afterwards no lock and no extra link remain. */
static void test_no_throwaway_files(void **unused)
{
	char *dir = make_repo();
	char *objects = fsutil_join(dir, ".git/objects");
	char *index = fsutil_join(dir, ".git/index");
	char *lock = fsutil_join(dir, ".git/index.lock");
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	struct stat st;
	int ofd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	assert_true(ofd >= 0);
	/* a.txt's committed bytes: that blob is in the database */
	put(dir, "copy.txt", "alpha\n");
	assert_true(inotify_add_watch(ofd, objects, IN_CREATE) >= 0);
	assert_int_equal(stage1(g, "copy.txt", "alpha\n", 500, &err), 0);
	assert_int_equal(events_with(ofd, IN_CREATE, NULL), 0);
	assert_int_equal(stat(index, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(access(lock, F_OK), -1);
	assert_git(dir, "diff --cached --name-only", "copy.txt\n");
	/* a new blob is written, with no temporary name either (see
	 * test_loose_object_as_git_writes) */
	put(dir, "fresh.txt", "not committed\n");
	assert_int_equal(stage1(g, "fresh.txt", "not committed\n", 500, &err), 0);
	assert_int_equal(events_with(ofd, IN_CREATE, "tmp_"), 0);
	assert_git(dir, "cat-file -p :fresh.txt", "not committed\n");
	assert_int_equal(access(lock, F_OK), -1);
	close(ofd);
	gitstage_free(g);
	free(objects);
	free(index);
	free(lock);
	rm_repo(dir);
}

/* The loose object of @text's blob in @dir: its path (objects/xx/...). */
static char *loose_path(const char *dir, const char *text)
{
	char *id = h_sh_out("cd '%s' && printf '%%s' '%s' | git hash-object --stdin", dir, text);
	char *path = NULL;

	assert_int_equal(strlen(id), 41);
	id[40] = '\0';
	assert_true(asprintf(&path, "%s/.git/objects/%.2s/%s", dir, id, id + 2) > 0);
	free(id);
	return path;
}

/* An inotify fd watching .git/objects for new names: libgit2's writer names each new object
 * tmp_* there first. */
static int watch_objects(const char *dir)
{
	char *objects = fsutil_join(dir, ".git/objects");
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	assert_true(fd >= 0);
	assert_true(inotify_add_watch(fd, objects, IN_CREATE) >= 0);
	free(objects);
	return fd;
}

/* A new blob is a loose object as git writes one (git reads it, fsck finds nothing wrong,
 * mode 0444 under the umask), written to a file made ahead and named once: no temporary
 * name in objects/ and none left; the fan-out directory is made when missing. */
static void test_loose_object_as_git_writes(void **unused)
{
	char *dir = make_repo();
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	int wfd = watch_objects(dir);
	struct stat st;
	char *path, *stray;

	assert_true(gitstage_prepare_wanted(g));
	gitstage_prepare(g);
	assert_false(gitstage_prepare_wanted(g));
	put(dir, "fresh.nix", "{ fresh = true; }\n");
	assert_int_equal(stage1(g, "fresh.nix", "{ fresh = true; }\n", 500, &err), 0);
	assert_true(gitstage_prepare_wanted(g)); /* the prepared file was used */
	assert_int_equal(events_with(wfd, IN_CREATE, "tmp_"), 0);
	path = loose_path(dir, "{ fresh = true; }\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0444 & ~fsutil_umask());
	free(path);
	assert_git(dir, "cat-file -p :fresh.nix", "{ fresh = true; }\n");
	assert_git(dir, "status --porcelain", "A  fresh.nix\n");
	/* without a prepared file, and into an object directory without fan-out directories */
	assert_int_equal(h_sh("cd '%s' && " GIT " repack -qad && " GIT " prune-packed && "
			      "find .git/objects -mindepth 1 -maxdepth 1 -name '[0-9a-f][0-9a-f]' "
			      "-type d -empty -delete", dir), 0);
	put(dir, "second.nix", "{ second = 2; }\n");
	assert_int_equal(stage1(g, "second.nix", "{ second = 2; }\n", 500, &err), 0);
	assert_int_equal(events_with(wfd, IN_CREATE, "tmp_"), 0);
	path = loose_path(dir, "{ second = 2; }\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0444 & ~fsutil_umask());
	free(path);
	path = loose_path(dir, "{ second = 2; }\n");
	path[strlen(path) - 39] = '\0'; /* its fan-out directory */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0777 & ~fsutil_umask());
	free(path);
	assert_git(dir, "cat-file -p :second.nix", "{ second = 2; }\n");
	assert_int_equal(h_sh("cd '%s' && git fsck --strict --no-dangling 2>&1", dir), 0);
	stray = h_sh_out("cd '%s/.git/objects' && find . -type f ! -path './pack/*' "
			 "! -path './info/*' ! -regex './[0-9a-f][0-9a-f]/[0-9a-f]*'", dir);
	assert_string_equal(stray, "");
	free(stray);
	close(wfd);
	gitstage_free(g);
	rm_repo(dir);
}

/* Where the direct write cannot be used, libgit2's writer is (a temporary name in
 * objects/): objects to be synced (core.fsyncObjectFiles, or core.fsync naming them), a
 * core.sharedRepository git would refuse, no way to name an unnamed file (no /proc). The
 * blob is still written, readable by git, and the next one goes the same way. */
static void test_loose_object_fallbacks(void **unused)
{
	const char *setups[] = {"config core.fsyncObjectFiles true",
				"config core.fsync committed,-pack", "config core.fsync all",
				"config core.sharedRepository 0407", NULL};
	struct ws_err err = { 0 };

	for (size_t i = 0; i < WS_ARRAY_SIZE(setups); i++) {
		char *dir = make_repo();
		struct gitstage *g;
		int wfd;

		if (setups[i])
			assert_int_equal(h_sh("cd '%s' && " GIT " %s", dir, setups[i]), 0);
		else
			fsutil_test_no_link = true;
		g = open_ok(dir);
		wfd = watch_objects(dir);
		put(dir, "n.nix", "{ n = 1; }\n");
		if (stage1(g, "n.nix", "{ n = 1; }\n", 500, &err) < 0)
			fail_msg("case %zu: %s", i, err.message);
		assert_git(dir, "cat-file -p :n.nix", "{ n = 1; }\n");
		if (events_with(wfd, IN_CREATE, "tmp_") != 1)
			fail_msg("case %zu: not written by libgit2's writer", i);
		put(dir, "m.nix", "{ m = 1; }\n");
		assert_int_equal(stage1(g, "m.nix", "{ m = 1; }\n", 500, &err), 0);
		assert_git(dir, "cat-file -p :m.nix", "{ m = 1; }\n");
		assert_int_equal(events_with(wfd, IN_CREATE, "tmp_"), 1);
		assert_false(gitstage_prepare_wanted(g));
		fsutil_test_no_link = false;
		close(wfd);
		gitstage_free(g);
		rm_repo(dir);
	}
}

/* In a shared repository the object and a new fan-out directory get exactly the modes
 * git gives them (compared with `git hash-object -w` in a twin repository), for every
 * spelling of core.sharedRepository, under two umasks. */
static void test_loose_object_shared_modes(void **unused)
{
	const char *values[] = {"group", "true", "all", "everybody", "1", "2", "0640", "0600",
				"0664", "umask", "false"};
	const mode_t masks[] = {022, 077};
	struct ws_err err = { 0 };

	for (size_t m = 0; m < WS_ARRAY_SIZE(masks); m++)
		for (size_t i = 0; i < WS_ARRAY_SIZE(values); i++) {
			mode_t old_mask = umask(masks[m]);
			char *ours = make_repo(), *git = make_repo();
			char *text = NULL, *p1 = NULL, *p2 = NULL;
			struct stat s1, s2;
			struct gitstage *g;

			assert_int_equal(h_sh("cd '%s' && " GIT " config core.sharedRepository %s && "
					      "cd '%s' && " GIT " config core.sharedRepository %s",
					      ours, values[i], git, values[i]), 0);
			/* a text whose fan-out directory neither repository has yet */
			for (int k = 0;; k++) {
				free(text);
				free(p1);
				assert_true(asprintf(&text, "{ shared = %d; }\n", k) > 0);
				p1 = loose_path(ours, text);
				p1[strlen(p1) - 39] = '\0';
				if (access(p1, F_OK) < 0)
					break;
			}
			g = open_ok(ours);
			put(ours, "s.nix", text);
			assert_int_equal(stage1(g, "s.nix", text, 500, &err), 0);
			gitstage_free(g);
			put(git, "s.nix", text);
			assert_int_equal(h_sh("cd '%s' && " GIT " hash-object -w s.nix >/dev/null", git),
					 0);
			p2 = loose_path(git, text);
			p2[strlen(p2) - 39] = '\0';
			assert_int_equal(stat(p1, &s1), 0);
			assert_int_equal(stat(p2, &s2), 0);
			if ((s1.st_mode & 07777) != (s2.st_mode & 07777))
				fail_msg("%s, umask %03o: directory %04o, git's %04o", values[i],
					 masks[m], s1.st_mode & 07777, s2.st_mode & 07777);
			free(p1);
			free(p2);
			p1 = loose_path(ours, text);
			p2 = loose_path(git, text);
			assert_int_equal(stat(p1, &s1), 0);
			assert_int_equal(stat(p2, &s2), 0);
			if ((s1.st_mode & 07777) != (s2.st_mode & 07777))
				fail_msg("%s, umask %03o: object %04o, git's %04o", values[i], masks[m],
					 s1.st_mode & 07777, s2.st_mode & 07777);
			umask(old_mask);
			assert_git(ours, "cat-file -p :s.nix", text);
			free(p1);
			free(p2);
			free(text);
			rm_repo(ours);
			rm_repo(git);
		}
}

/* An object that is there already is only freshened (its mtime set to now, as git and
 * libgit2 do, so that a gc running meanwhile does not prune it as old); a dangling
 * symbolic link where the object should be is replaced by the object. */
static void test_loose_object_existing(void **unused)
{
	char *dir = make_repo();
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	char *path = loose_path(dir, "alpha\n"); /* a.txt's blob, committed */
	struct stat st;

	assert_int_equal(h_sh("touch -d '30 days ago' '%s'", path), 0);
	put(dir, "copy.txt", "alpha\n");
	assert_int_equal(stage1(g, "copy.txt", "alpha\n", 500, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_mtime > time(NULL) - 60);
	free(path);

	path = loose_path(dir, "{ linked = true; }\n");
	{
		char *fan = strdup(path);

		fan[strlen(fan) - 39] = '\0';
		(void)mkdir(fan, 0755);
		free(fan);
	}
	assert_int_equal(symlink("/nonexistent/object", path), 0);
	put(dir, "l.nix", "{ linked = true; }\n");
	if (stage1(g, "l.nix", "{ linked = true; }\n", 500, &err) < 0)
		fail_msg("over a dangling link: %s", err.message);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_git(dir, "cat-file -p :l.nix", "{ linked = true; }\n");
	free(path);
	gitstage_free(g);
	rm_repo(dir);
}

static void test_lock_held_is_busy(void **unused)
{
	char *dir = make_repo();
	char *lock = fsutil_join(dir, ".git/index.lock");
	char *index = fsutil_join(dir, ".git/index");
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	struct json_object *v;
	char *before, *after, *lk, *snap = NULL;
	size_t blen, alen, slen = 0;
	struct gitstage_change *c = NULL;
	int64_t t0, dt;

	/* a staging to take back later */
	assert_int_equal(gitstage_snapshot_index(g, &snap, &slen, &err), 0);
	put(dir, "b.txt", "bravo 2\n");
	assert_int_equal(stage_undoable(g, "b.txt", "bravo 2\n", &c, &err), 0);
	put(dir, "a.txt", "alpha 2\n");
	h_write(lock, "someone else's\n", 15);
	before = h_read(index, &blen);

	t0 = ms_now();
	assert_int_equal(stage1(g, "a.txt", "alpha 2\n", 200, &err), -EBUSY);
	dt = ms_now() - t0;
	assert_true(dt >= 150 && dt < 900);
	assert_int_equal(err.code, WS_E_BUSY);
	assert_non_null(strstr(err.message, lock));
	assert_string_equal(err.file, lock);
	assert_true(json_object_object_get_ex(err.data, "lock", &v));
	assert_string_equal(json_object_get_string(v), lock);
	ws_err_clear(&err);

	/* an undo waits for the same lock */
	assert_int_equal(gitstage_undo(g, c, snap, slen, 50, &err), -EBUSY);
	assert_int_equal(err.code, WS_E_BUSY);
	ws_err_clear(&err);
	gitstage_change_free(c);
	free(snap);

	/* the lock is untouched, the index byte-identical */
	lk = h_read(lock, NULL);
	assert_string_equal(lk, "someone else's\n");
	free(lk);
	after = h_read(index, &alen);
	assert_int_equal(alen, blen);
	assert_memory_equal(after, before, blen);
	free(after);

	/* once the other git is done, the same call succeeds */
	assert_int_equal(unlink(lock), 0);
	assert_int_equal(stage1(g, "a.txt", "alpha 2\n", 200, &err), 0);
	assert_git(dir, "status --porcelain", "M  a.txt\nM  b.txt\n");

	free(before);
	free(index);
	free(lock);
	gitstage_free(g);
	rm_repo(dir);
}

static void test_lock_released_while_waiting(void **unused)
{
	char *dir = make_repo();
	char *lock = fsutil_join(dir, ".git/index.lock");
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	struct stat st;
	pid_t pid;
	int status;

	h_write(lock, "", 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct timespec ts = { 0, 100 * 1000000L };

		nanosleep(&ts, NULL);
		_exit(unlink(lock) == 0 ? 0 : 1);
	}
	put(dir, "b.txt", "bravo 2\n");
	assert_int_equal(stage1(g, "b.txt", "bravo 2\n", 2000, &err), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_git(dir, "status --porcelain", "M  b.txt\n");
	assert_int_equal(lstat(lock, &st), -1);
	free(lock);
	gitstage_free(g);
	rm_repo(dir);
}

static void test_snapshot_restore(void **unused)
{
	char *dir = make_repo();
	char *index = fsutil_join(dir, ".git/index");
	char *lock = fsutil_join(dir, ".git/index.lock");
	struct gitstage *g = open_ok(dir);
	struct ws_err err = { 0 };
	char *snap = NULL, *snap2 = NULL, *now;
	size_t slen = 0, slen2 = 0, nlen;
	struct gitstage_change *c1 = NULL, *c2 = NULL;
	struct stat st;

	assert_int_equal(gitstage_snapshot_index(g, &snap, &slen, &err), 0);
	put(dir, "a.txt", "alpha 2\n");
	assert_int_equal(stage_undoable(g, "a.txt", "alpha 2\n", &c1, &err), 0);
	now = h_read(index, &nlen);
	assert_false(nlen == slen && !memcmp(now, snap, slen));
	free(now);

	/* a snapshot taken after staging comes back exactly too */
	assert_int_equal(gitstage_snapshot_index(g, &snap2, &slen2, &err), 0);
	assert_int_equal(stage_undoable(g, "new.txt", "n\n", &c2, &err), 0);
	assert_int_equal(gitstage_undo(g, c2, snap2, slen2, 500, &err), 0);
	now = h_read(index, &nlen);
	assert_int_equal(nlen, slen2);
	assert_memory_equal(now, snap2, slen2);
	free(now);
	assert_git(dir, "diff --cached --name-only", "a.txt\n");

	/* and the first staging's undo, over the index as it left it again */
	assert_int_equal(gitstage_undo(g, c1, snap, slen, 500, &err), 0);
	gitstage_change_free(c1);
	gitstage_change_free(c2);
	now = h_read(index, &nlen);
	assert_int_equal(nlen, slen);
	assert_memory_equal(now, snap, slen);
	free(now);
	assert_git(dir, "diff --cached --name-only", "");
	assert_git(dir, "status --porcelain", " M a.txt\n");
	assert_int_equal(lstat(lock, &st), -1);

	/* the open index follows the restored file */
	{
		char *buf = NULL;

		assert_int_equal(gitstage_read_index(g, "a.txt", &buf, NULL, &err), 0);
		assert_string_equal(buf, "alpha\n");
		free(buf);
		assert_int_equal(gitstage_read_index(g, "new.txt", &buf, NULL, &err), -ENOENT);
		ws_err_clear(&err);
	}
	free(snap);
	free(snap2);
	free(lock);
	free(index);
	gitstage_free(g);
	rm_repo(dir);
}

static void test_restore_absent_index(void **unused)
{
	char *dir = h_tmpdir();
	char *index = fsutil_join(dir, ".git/index");
	char *lock = fsutil_join(dir, ".git/index.lock");
	struct gitstage *g;
	struct ws_err err = { 0 };
	char *snap = NULL;
	size_t slen = 0;
	struct stat st;

	assert_int_equal(h_sh("cd '%s' && " GIT " init -q .", dir), 0);
	g = open_ok(dir);
	assert_int_equal(gitstage_snapshot_index(g, &snap, &slen, &err), -ENOENT);
	ws_err_clear(&err);
	put(dir, "first.nix", "{ }\n");
	{
		struct gitstage_change *c = NULL;

		assert_int_equal(stage_undoable(g, "first.nix", "{ }\n", &c, &err), 0);
		assert_git(dir, "status --porcelain", "A  first.nix\n");
		assert_int_equal(gitstage_undo(g, c, NULL, 0, 500, &err), 0);
		gitstage_change_free(c);
	}
	assert_int_equal(lstat(index, &st), -1);
	assert_int_equal(lstat(lock, &st), -1);
	assert_git(dir, "status --porcelain", "?? first.nix\n");
	free(lock);
	free(index);
	gitstage_free(g);
	rm_repo(dir);
}

static void test_many_entries_one_write(void **unused)
{
	char *dir = make_repo();
	char *gitdir = fsutil_join(dir, ".git");
	struct gitstage *g = open_ok(dir);
	struct gitstage_entry e[10];
	char names[10][32], texts[10][32];
	struct ws_err err = { 0 };
	char evbuf[8192];
	int locks = 0, renames = 0, fd, i;
	ssize_t n;
	char *out;

	for (i = 0; i < 10; i++) {
		snprintf(names[i], sizeof(names[i]), "m/ws%d.nix", i);
		snprintf(texts[i], sizeof(texts[i]), "{ n = %d; }\n", i);
		e[i] = (struct gitstage_entry){ .path = names[i], .buf = texts[i], .len = strlen(texts[i]), .mode = 0100644 };
	}
	/* count index.lock creations and renames onto index while staging */
	fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	assert_true(fd >= 0);
	assert_true(inotify_add_watch(fd, gitdir, IN_CREATE | IN_MOVED_TO) >= 0);
	assert_int_equal(gitstage_stage(g, e, 10, 500, NULL, &err), 0);
	while ((n = read(fd, evbuf, sizeof(evbuf))) > 0) {
		char *p = evbuf;

		while (p < evbuf + n) {
			struct inotify_event *ev = (struct inotify_event *)(void *)p;

			if (ev->len && (ev->mask & IN_CREATE) && !strcmp(ev->name, "index.lock"))
				locks++;
			if (ev->len && (ev->mask & IN_MOVED_TO) && !strcmp(ev->name, "index"))
				renames++;
			p += sizeof(*ev) + ev->len;
		}
	}
	close(fd);
	assert_int_equal(locks, 1);
	assert_int_equal(renames, 1);
	out = git_out(dir, "diff --cached --name-only | wc -l");
	assert_string_equal(out, "10\n");
	free(out);
	/* not in the work tree: staged as new files, deleted on disk */
	assert_git(dir, "status --porcelain m/ws3.nix", "AD m/ws3.nix\n");
	assert_git(dir, "show :m/ws7.nix", "{ n = 7; }\n");
	free(gitdir);
	gitstage_free(g);
	rm_repo(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_paths),
		cmocka_unit_test(test_not_a_repository),
		cmocka_unit_test(test_owned_by_another_uid),
		cmocka_unit_test(test_stage_new_and_modified),
		cmocka_unit_test(test_stage_blob_other_than_worktree),
		cmocka_unit_test(test_blobs_first_then_index),
		cmocka_unit_test(test_read_index_follows_other_git),
		cmocka_unit_test(test_lock_held_is_busy),
		cmocka_unit_test(test_lock_released_while_waiting),
		cmocka_unit_test(test_snapshot_restore),
		cmocka_unit_test(test_restore_absent_index),
		cmocka_unit_test(test_undo_keeps_other_staging),
		cmocka_unit_test(test_existing_blob_needs_no_write),
		cmocka_unit_test(test_no_throwaway_files),
		cmocka_unit_test(test_loose_object_as_git_writes),
		cmocka_unit_test(test_loose_object_fallbacks),
		cmocka_unit_test(test_loose_object_shared_modes),
		cmocka_unit_test(test_loose_object_existing),
		cmocka_unit_test(test_many_entries_one_write),
	};
	int r;

	/* git and libgit2 see only this empty home (and no system configuration) */
	home = h_tmpdir();
	setenv("HOME", home, 1);
	setenv("XDG_CONFIG_HOME", home, 1);
	setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
	unsetenv("GIT_DIR");
	unsetenv("GIT_WORK_TREE");
	unsetenv("GIT_INDEX_FILE");
	r = cmocka_run_group_tests(tests, NULL, NULL);
	(void)h_sh("rm -rf '%s'", home);
	free(home);
	return r;
}
