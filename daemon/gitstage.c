/* SPDX-License-Identifier: MIT */
/* Every libgit2 call of the daemon. The repository is opened once, after our own ownership
 * check, and kept open; staging writes blobs and index entries for exactly the paths asked
 * for, in one index write, and waits a bounded time for another git's index.lock but never
 * removes it. Index snapshots are raw bytes put back under git's own lock protocol. It does
 * not commit, touch the work tree, or know what the staged files mean. */
#include "gitstage.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <git2.h>
#include <zlib.h>

_Static_assert(sizeof(((git_oid *)0)->id) == GITSTAGE_ID_LEN, "GITSTAGE_ID_LEN is a git_oid");

#include "fsutil.h"
#include "ws_proto.h"

#define GITSTAGE_INDEX_MAX ((size_t)1 << 30) /* a larger .git/index is not ours to snapshot */
#define LOCK_RETRY_MS 20

struct gitstage {
	git_repository *repo; /* owned */
	git_index *index;     /* owned reference to the repository's index */
	git_odb *odb;         /* owned reference to its object database: libgit2 locks it
			       * itself, so blobs are written without @lock */
	char *objdir;         /* owned; where loose objects go (see loose_write()) */
	bool loose_direct;    /* loose_write() may be used (atomic: any thread clears it) */
	int shared;           /* core.sharedRepository, as shared_parse() reads it */
	int loose_spare;      /* an unnamed file in @objdir for the next object, or -1
			       * (atomic: gitstage_prepare() fills it, a blob write takes it) */
	char *workdir;        /* owned; absolute, no trailing '/' */
	char *gitdir;         /* owned; absolute, no trailing '/' */
	char *index_path;     /* owned; gitdir/index */
	char *lock_path;      /* owned; gitdir/index.lock */
	/* The bytes of one blob, the last read or staged for memo_path: a blob's id names its
	 * contents, so when the index still holds memo_id these are its bytes, and reading
	 * them needs no inflating and re-hashing of the object. */
	char *memo_path, *memo_buf; /* owned */
	size_t memo_len;
	git_oid memo_id;
	/* libgit2's objects are not to be used by two threads at once, and a write runs some
	 * of its steps on threads of their own: every call below holds this, except the blob
	 * writes (gitstage_write_blobs(), through @odb only) */
	pthread_mutex_t lock;
};

/* What one gitstage_stage() changed (see gitstage_undo()). */
struct change_ent {
	char *path;            /* owned */
	bool had_old;          /* the path was in the index (stage 0) before */
	git_index_entry old;   /* ... as this entry (its path points to @path) */
	git_oid id;            /* the blob staged */
	uint32_t mode;         /* ... with this mode */
};
struct gitstage_change {
	struct change_ent *ents;
	size_t n;
	bool pre_missing;      /* there was no .git/index before */
	git_oid pre_sum;       /* the checksum of the index the staging was applied to */
	git_oid post_sum;      /* ... and of the index it wrote */
};

void gitstage_change_free(struct gitstage_change *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		free(c->ents[i].path);
	free(c->ents);
	free(c);
}

static pthread_once_t git_once = PTHREAD_ONCE_INIT;
static int git_init_r;

static void git_init_once(void)
{
	git_init_r = git_libgit2_init();
	if (git_init_r < 0)
		return;
	/* Ownership is checked by gitstage_open() itself, so that the refusal always carries
	 * our message (both uids and the fix) rather than libgit2's. */
	(void)git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0);
}

/* The one translation of libgit2 failures (git's own text goes into data.git). */
static int git_fail(int g, struct ws_err *err)
{
	const git_error *e = git_error_last();
	char why[512];
	int r;

	snprintf(why, sizeof(why), "%s", e && e->message ? e->message : "unknown failure");
	if (g == GIT_ELOCKED)
		r = ws_fail(err, -EBUSY, WS_E_BUSY, "index locked: %s", why);
	else
		r = ws_fail(err, -EIO, WS_E_GIT_ERROR, "%s", why);
	ws_err_set_str(err, "git", why);
	return r;
}

static char *strip_slash(const char *path)
{
	char *s = strdup(path);
	size_t n;

	if (!s)
		return NULL;
	n = strlen(s);
	while (n > 1 && s[n - 1] == '/')
		s[--n] = '\0';
	return s;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits a little for someone else's index.lock to go away. Returns false once
 * @deadline has passed (then the caller reports BUSY). This runs on the thread pool. */
static bool lock_wait(int64_t deadline)
{
	struct timespec ts = { 0, LOCK_RETRY_MS * 1000000L };
	int64_t left = deadline - now_ms();

	if (left <= 0)
		return false;
	if (left < LOCK_RETRY_MS)
		ts.tv_nsec = left * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return true;
}

static int busy_fail(struct gitstage *g, int waited_ms, struct ws_err *err)
{
	int r;

	r = ws_fail_at(err, -EBUSY, WS_E_BUSY, g->lock_path, 0, 0,
		       "the git index is locked: '%s' exists after waiting %d ms (another git "
		       "command is running; if none is, it crashed and the file can be removed)",
		       g->lock_path, waited_ms);
	ws_err_set_str(err, "lock", g->lock_path);
	return r;
}

/* True when git's safe.directory (system and global configuration, as git reads it) allows
 * @workdir although another user owns it. */
static bool safe_directory(const char *workdir)
{
	git_config *cfg = NULL;
	git_config_iterator *it = NULL;
	git_config_entry *ce;
	bool safe = false;

	if (git_config_open_default(&cfg) < 0)
		return false;
	if (git_config_multivar_iterator_new(&it, cfg, "safe.directory", NULL) == 0) {
		while (git_config_next(&ce, it) == 0) {
			WS_AUTOFREE char *v = strip_slash(ce->value ? ce->value : "");

			if (!v)
				break;
			/* an empty value resets the list, as in git */
			if (v[0] == '\0')
				safe = false;
			else if (!strcmp(v, "*") || !strcmp(v, workdir))
				safe = true;
		}
		git_config_iterator_free(it);
	}
	git_config_free(cfg);
	return safe;
}

/* Refuses @gitdir when another uid owns it, unless safe.directory lists @workdir. */
static int check_owner(const char *gitdir, const char *workdir, struct ws_err *err)
{
	struct stat st;
	uid_t me = geteuid();
	int r;

	if (stat(gitdir, &st) < 0) {
		r = -errno;
		return ws_fail(err, r, WS_E_GIT_ERROR, "cannot examine '%s': %s", gitdir,
			       strerror(-r));
	}
	if (st.st_uid == me || safe_directory(workdir))
		return 0;
	r = ws_fail_at(err, -EPERM, WS_E_GIT_ERROR, gitdir, 0, 0,
		       "repository '%s' is owned by uid %u, but workspaced runs as uid %u: run "
		       "workspaced as uid %u, or add the path to git's safe.directory (git config "
		       "--global --add safe.directory '%s')",
		       gitdir, (unsigned)st.st_uid, (unsigned)me, (unsigned)st.st_uid, workdir);
	ws_err_set_int(err, "ownerUid", st.st_uid);
	ws_err_set_int(err, "uid", me);
	return r;
}

/* libgit2 refused to open @workdir. When its own ownership check did it (if that could not
 * be turned off: 1.5 even reports it as GIT_ENOTFOUND, "safe.directory was not found"),
 * give our message naming the uids. */
static int open_fail(const char *workdir, int g, struct ws_err *err)
{
	WS_AUTOFREE char *abs = realpath(workdir, NULL);
	WS_AUTOFREE char *gitdir = fsutil_join(abs ? abs : workdir, ".git");
	struct stat st;
	int r;

	if ((g == GIT_ENOTFOUND || g == GIT_EOWNER) && gitdir && stat(gitdir, &st) == 0 &&
	    st.st_uid != geteuid()) {
		r = check_owner(gitdir, abs ? abs : workdir, err);
		if (r < 0)
			return r;
	}
	if (g == GIT_ENOTFOUND)
		return ws_fail(err, -ENOENT, WS_E_GIT_ERROR,
			       "'%s' is not a git work tree: run 'git init' there, or point "
			       "workspaced at the flake repository",
			       workdir);
	return git_fail(g, err);
}

/* ---- loose objects ---------------------------------------------------------------- */

/* A new blob is written as git writes a loose object (objects/xx/yyyy..., the zlib stream
 * of "blob LEN\0" and the bytes at the fastest level, git's and libgit2's default for loose
 * objects, mode 0444), into an unnamed file made ahead (gitstage_prepare()) and then named
 * with one link(2): no temporary name is made, renamed and freed for each object, as
 * libgit2's writer does, and the file is made off the request's path. Like libgit2's writer
 * (and git's default core.fsync) it does not fsync objects. A shared repository's modes
 * are applied as git applies them (which libgit2's writer does not). What this path does
 * not cover goes to libgit2's writer: core.fsyncObjectFiles or core.fsync naming loose
 * objects, a file system without O_TMPFILE or hard links, no /proc. An object that is
 * there already goes through git_odb_write() too, which only "freshens" it (its mtime, so
 * that a gc running meanwhile does not prune it as old and unreachable). */
#define LOOSE_MODE 0444
#define LOOSE_DIR_MODE 0777

/* core.sharedRepository as git reads it: 0 (umask), SHARED_GROUP, SHARED_EVERYBODY, or
 * minus the exact mode asked for (0xxx: the owner always rw, nobody else write). -1
 * (never a valid mode) where git would refuse the value. */
#define SHARED_GROUP 0660
#define SHARED_EVERYBODY 0664

static int shared_parse(const char *v)
{
	char *end;
	long n;

	if (!v || strcmp(v, "group") == 0)
		return SHARED_GROUP; /* no value: true */
	if (strcmp(v, "umask") == 0)
		return 0;
	if (strcmp(v, "all") == 0 || strcmp(v, "world") == 0 || strcmp(v, "everybody") == 0)
		return SHARED_EVERYBODY;
	errno = 0;
	n = strtol(v, &end, 8);
	if (*v && *end == '\0' && errno == 0) {
		if (n == 0 || n == 1 || n == 2) /* the old spellings of umask, group, all */
			return n == 0 ? 0 : n == 1 ? SHARED_GROUP : SHARED_EVERYBODY;
		if (n < 0 || n > 07777 || (n & 0600) != 0600)
			return -1;
		return -(int)(n & 0666);
	}
	if (strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
	    strcasecmp(v, "on") == 0)
		return SHARED_GROUP;
	if (strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0 ||
	    strcasecmp(v, "off") == 0 || *v == '\0')
		return 0;
	return -1;
}

/* The mode git gives a file or directory of mode @mode (as made under the umask) in a
 * repository shared as @shared: the shared bits added (or, for an exact mode, the
 * permission bits replaced), write only where the owner may write, search on directories
 * for every class that may read, and directories the group may use set-group-ID, so that
 * the group holds. */
static mode_t shared_mode(int shared, mode_t mode, bool dir)
{
	mode_t tweak = (mode_t)(shared < 0 ? -shared : shared);

	if (shared == 0)
		return mode;
	if (!(mode & S_IWUSR))
		tweak &= ~(mode_t)0222;
	if (mode & S_IXUSR)
		tweak |= (tweak & 0444) >> 2;
	mode = shared < 0 ? (mode & ~(mode_t)0777) | tweak : mode | tweak;
	if (dir) {
		mode |= (mode & 0444) >> 2;
		if (mode & 060) /* only worth it where the group gets anything */
			mode |= S_ISGID;
	}
	return mode;
}

static bool config_true(git_config *cfg, const char *key)
{
	int v = 0;

	if (git_config_get_bool(&v, cfg, key) < 0) {
		git_error_clear();
		return false;
	}
	return v != 0;
}

/* Whether core.fsync (what git syncs) takes in loose objects: "loose-object", "objects",
 * "committed", "added" or "all", unless a later "-name" or "none" takes them out again. */
static bool fsync_names_loose(git_config *cfg)
{
	git_buf b = {0};
	bool on = false;

	if (git_config_get_string_buf(&b, cfg, "core.fsync") < 0) {
		git_error_clear();
		return false;
	}
	for (char *save = NULL, *t = strtok_r(b.ptr, ", ", &save); t;
	     t = strtok_r(NULL, ", ", &save)) {
		bool minus = *t == '-';

		if (minus)
			t++;
		if (strcmp(t, "loose-object") == 0 || strcmp(t, "objects") == 0 ||
		    strcmp(t, "all") == 0 || strcmp(t, "committed") == 0 ||
		    strcmp(t, "added") == 0)
			on = !minus;
		else if (strcmp(t, "none") == 0)
			on = false;
	}
	git_buf_dispose(&b);
	return on;
}

static int loose_setup(struct gitstage *g)
{
	git_config *cfg = NULL;
	const char *shared = NULL;

	g->objdir = fsutil_join(git_repository_commondir(g->repo), "objects");
	if (!g->objdir)
		return -ENOMEM;
	if (!fsutil_can_link_unnamed())
		return 0; /* loose_direct stays false: libgit2's writer */
	if (git_repository_config_snapshot(&cfg, g->repo) < 0) {
		git_error_clear();
		return 0;
	}
	if (git_config_get_string(&shared, cfg, "core.sharedRepository") < 0) {
		git_error_clear();
		shared = "umask";
	}
	g->shared = shared_parse(shared);
	g->loose_direct = g->shared != -1 && !config_true(cfg, "core.fsyncObjectFiles") &&
			  !fsync_names_loose(cfg);
	git_config_free(cfg);
	return 0;
}

static bool loose_on(const struct gitstage *g)
{
	return __atomic_load_n(&g->loose_direct, __ATOMIC_RELAXED);
}

bool gitstage_prepare_wanted(const struct gitstage *g)
{
	return loose_on(g) && __atomic_load_n(&g->loose_spare, __ATOMIC_ACQUIRE) < 0;
}

/* An unnamed file in the object directory (its mode is set when it is written). */
static int loose_open(const struct gitstage *g)
{
	struct fsutil_tmp t;
	int r = fsutil_tmp_prepare(g->objdir, &t);

	return r < 0 ? r : t.fd;
}

void gitstage_prepare(struct gitstage *g)
{
	int none = -1;
	int fd;

	if (!gitstage_prepare_wanted(g))
		return;
	fd = loose_open(g);
	if (fd < 0)
		return; /* the write finds out again, and says so to loose_direct */
	if (!__atomic_compare_exchange_n(&g->loose_spare, &none, fd, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		(void)close(fd);
}

/* @len bytes of @buf as a loose blob's zlib stream, in *ret (malloc'd). */
static int loose_deflate(const void *buf, size_t len, unsigned char **ret, size_t *ret_len)
{
	char hdr[32];
	int hlen = snprintf(hdr, sizeof(hdr), "blob %zu", len) + 1; /* with its NUL */
	z_stream z = {0};
	unsigned char *out;
	uLong bound;
	int zr;

	if (len > UINT_MAX / 2 || deflateInit(&z, Z_BEST_SPEED) != Z_OK)
		return -EINVAL;
	bound = deflateBound(&z, (uLong)(len + (size_t)hlen)) + 64;
	out = malloc(bound);
	if (!out) {
		(void)deflateEnd(&z);
		return -ENOMEM;
	}
	z.next_out = out;
	z.avail_out = (uInt)bound;
	z.next_in = (Bytef *)hdr;
	z.avail_in = (uInt)hlen;
	zr = deflate(&z, Z_NO_FLUSH);
	if (zr == Z_OK) {
		z.next_in = (Bytef *)(uintptr_t)buf;
		z.avail_in = (uInt)len;
		zr = deflate(&z, Z_FINISH);
	}
	*ret_len = z.total_out;
	(void)deflateEnd(&z);
	if (zr != Z_STREAM_END) {
		free(out);
		return -EINVAL;
	}
	*ret = out;
	return 0;
}

/* Makes the fan-out directory of the object at @path (objects/xx), with the shared
 * repository's mode when there is one. */
static int fanout_make(const struct gitstage *g, char *path)
{
	size_t cut = strlen(g->objdir) + 3;
	mode_t mode = LOOSE_DIR_MODE & ~fsutil_umask();
	int r = 0;

	path[cut] = '\0';
	if (mkdir(path, mode) < 0)
		r = errno == EEXIST ? 0 : -errno;
	else if (g->shared != 0 && chmod(path, shared_mode(g->shared, mode, true)) < 0)
		r = -errno;
	path[cut] = '/';
	return r;
}

/* Writes blob @id (@len bytes of @buf) as a loose object. An object of that name that
 * appears meanwhile is the same object: fine. */
static int loose_write(struct gitstage *g, const void *buf, size_t len, const git_oid *id)
{
	char hex[GIT_OID_HEXSZ + 1];
	WS_AUTOFREE char *path = NULL;
	WS_AUTOFREE unsigned char *z = NULL;
	size_t zlen = 0;
	int fd, r;

	git_oid_tostr(hex, sizeof(hex), id);
	if (asprintf(&path, "%s/%.2s/%s", g->objdir, hex, hex + 2) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	r = loose_deflate(buf, len, &z, &zlen);
	if (r < 0)
		return r;
	fd = __atomic_exchange_n(&g->loose_spare, -1, __ATOMIC_ACQ_REL);
	if (fd < 0)
		fd = loose_open(g);
	if (fd < 0)
		return fd;
	r = fsutil_write_all(fd, z, zlen);
	/* the mode asked for when it was made went through the umask of that moment */
	if (r == 0 &&
	    fchmod(fd, shared_mode(g->shared, LOOSE_MODE & ~fsutil_umask(), false)) < 0)
		r = -errno;
	/* the fan-out directory objects/xx is made on first use, as git does (a gc may
	 * remove an empty one at any moment: made again) */
	for (int tries = 0; r == 0; tries++) {
		r = fsutil_link_unnamed(fd, path);
		if (r != -ENOENT || tries == 2)
			break;
		r = fanout_make(g, path);
	}
	if (r == -EEXIST) {
		struct stat st;

		/* the same object, written meanwhile; anything but a file there (a dangling
		 * symlink, say) is left to libgit2's writer, which renames over it */
		if (lstat(path, &st) == 0 && S_ISREG(st.st_mode))
			r = 0;
	}
	(void)close(fd);
	return r;
}

int gitstage_open(const char *workdir, struct gitstage **ret_g, struct ws_err *err)
{
	struct gitstage *g;
	int r;

	(void)pthread_once(&git_once, git_init_once);
	if (git_init_r < 0)
		return git_fail(git_init_r, err);

	g = calloc(1, sizeof(*g));
	if (!g)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	g->loose_spare = -1;
	(void)pthread_mutex_init(&g->lock, NULL);
	r = git_repository_open_ext(&g->repo, workdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
	if (r < 0) {
		r = open_fail(workdir, r, err);
		goto fail;
	}
	if (git_repository_is_bare(g->repo) || !git_repository_workdir(g->repo)) {
		r = ws_fail(err, -EINVAL, WS_E_GIT_ERROR,
			    "'%s' is a bare repository: workspaced needs a work tree", workdir);
		goto fail;
	}
	g->workdir = strip_slash(git_repository_workdir(g->repo));
	g->gitdir = strip_slash(git_repository_path(g->repo));
	g->index_path = g->gitdir ? fsutil_join(g->gitdir, "index") : NULL;
	g->lock_path = g->gitdir ? fsutil_join(g->gitdir, "index.lock") : NULL;
	if (!g->workdir || !g->index_path || !g->lock_path) {
		r = ws_fail(err, -ENOMEM, 0, "out of memory");
		goto fail;
	}
	r = check_owner(g->gitdir, g->workdir, err);
	if (r < 0)
		goto fail;
	r = git_repository_index(&g->index, g->repo);
	if (r == 0)
		r = git_repository_odb(&g->odb, g->repo);
	if (r < 0) {
		r = git_fail(r, err);
		goto fail;
	}
	r = loose_setup(g);
	if (r < 0) {
		r = ws_fail(err, r, 0, "out of memory");
		goto fail;
	}
	*ret_g = g;
	return 0;

fail:
	gitstage_free(g);
	return r;
}

void gitstage_free(struct gitstage *g)
{
	if (!g)
		return;
	if (g->loose_spare >= 0)
		(void)close(g->loose_spare);
	free(g->objdir);
	git_index_free(g->index);
	git_odb_free(g->odb);
	git_repository_free(g->repo);
	free(g->workdir);
	free(g->gitdir);
	free(g->index_path);
	free(g->lock_path);
	free(g->memo_path);
	free(g->memo_buf);
	(void)pthread_mutex_destroy(&g->lock);
	free(g);
}

const char *gitstage_workdir(const struct gitstage *g)
{
	return g->workdir;
}

const char *gitstage_index_path(const struct gitstage *g)
{
	return g->index_path;
}

/* Rejects paths that would leave the work tree or name git's own files. */
static int check_path(const char *path, struct ws_err *err)
{
	const char *p = path;

	if (!path || !*path || *path == '/')
		goto bad;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && !strncmp(p, "..", 2)) ||
		    (n == 4 && !strncmp(p, ".git", 4)))
			goto bad;
		p += n;
		if (*p == '/')
			p++;
	}
	if (p[-1] == '/')
		goto bad;
	return 0;
bad:
	return ws_fail(err, -EINVAL, WS_E_GIT_ERROR, "'%s' is not a path inside the work tree",
		       path ? path : "(null)");
}

/* Brings the in-memory index in line with .git/index, parsing it only when it changed on
 * disk (libgit2 compares its stamp and checksum). A missing file is an empty index: without
 * force, libgit2 would keep the entries it read before the file was deleted, and the next
 * write would stage them all again. */
static int index_reload(struct gitstage *g)
{
	struct stat st;

	return git_index_read(g->index, stat(g->index_path, &st) < 0 && errno == ENOENT);
}

/* Remembers @buf as the bytes of blob @id, staged or read for @path. Best effort. */
static void memo_set(struct gitstage *g, const char *path, const git_oid *id, const void *buf,
		     size_t len)
{
	char *b = malloc(len + 1);
	char *p = g->memo_path && strcmp(g->memo_path, path) == 0 ? g->memo_path : strdup(path);

	if (!b || !p) {
		free(b);
		if (p != g->memo_path)
			free(p);
		return;
	}
	if (len > 0)
		memcpy(b, buf, len);
	b[len] = '\0';
	if (p != g->memo_path)
		free(g->memo_path);
	free(g->memo_buf);
	g->memo_path = p;
	g->memo_buf = b;
	g->memo_len = len;
	g->memo_id = *id;
}

static int read_index_locked(struct gitstage *g, const char *path, char **ret_buf,
			     size_t *ret_len, struct ws_err *err)
{
	const git_index_entry *ie;
	git_blob *blob = NULL;
	git_object_size_t size;
	char *buf;
	int r;

	r = check_path(path, err);
	if (r < 0)
		return r;
	/* As on disk now: other git processes (and gitstage_undo) change it. */
	r = index_reload(g);
	if (r < 0)
		return git_fail(r, err);
	ie = git_index_get_bypath(g->index, path, 0);
	if (!ie)
		return ws_fail(err, -ENOENT, WS_E_GIT_ERROR, "'%s' is not in the index", path);
	if (g->memo_buf && git_oid_equal(&ie->id, &g->memo_id)) {
		buf = malloc(g->memo_len + 1);
		if (!buf)
			return ws_fail(err, -ENOMEM, 0, "out of memory");
		memcpy(buf, g->memo_buf, g->memo_len + 1);
		*ret_buf = buf;
		if (ret_len)
			*ret_len = g->memo_len;
		return 0;
	}
	r = git_blob_lookup(&blob, g->repo, &ie->id);
	if (r < 0)
		return git_fail(r, err);
	size = git_blob_rawsize(blob);
	buf = malloc((size_t)size + 1);
	if (!buf) {
		git_blob_free(blob);
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	memcpy(buf, git_blob_rawcontent(blob), (size_t)size);
	buf[size] = '\0';
	git_blob_free(blob);
	memo_set(g, path, &ie->id, buf, (size_t)size);
	*ret_buf = buf;
	if (ret_len)
		*ret_len = (size_t)size;
	return 0;
}

/* Builds the index entry for @e (blob @id). When the work-tree file holds exactly the
 * staged bytes, its stat data goes into the entry, so git sees it unmodified without
 * re-hashing; otherwise the stat data stays zero and git compares contents. */
static int make_entry(struct gitstage *g, const struct gitstage_entry *e, const git_oid *id,
		      git_index_entry *ret_ie, struct ws_err *err)
{
	WS_AUTOFREE char *full = NULL;
	git_index_entry ie = { 0 };
	struct stat st;
	bool have_file;

	full = fsutil_join(g->workdir, e->path);
	if (!full)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	have_file = lstat(full, &st) == 0 && S_ISREG(st.st_mode);

	ie.mode = e->mode;
	if (ie.mode == 0)
		ie.mode = have_file && (st.st_mode & S_IXUSR) ? GIT_FILEMODE_BLOB_EXECUTABLE
							      : GIT_FILEMODE_BLOB;
	if (ie.mode != GIT_FILEMODE_BLOB && ie.mode != GIT_FILEMODE_BLOB_EXECUTABLE)
		return ws_fail(err, -EINVAL, WS_E_GIT_ERROR, "'%s': cannot stage mode %o",
			       e->path, ie.mode);
	ie.id = *id;
	ie.path = e->path;
	ie.file_size = (uint32_t)e->len;

	if (have_file && (uintmax_t)st.st_size == e->len) {
		WS_AUTOFREE char *disk = NULL;
		size_t len = 0;

		if (fsutil_read(full, e->len, &disk, &len) == 0 && len == e->len &&
		    (len == 0 || memcmp(disk, e->buf, len) == 0)) {
			ie.ctime.seconds = (int32_t)st.st_ctim.tv_sec;
			ie.ctime.nanoseconds = (uint32_t)st.st_ctim.tv_nsec;
			ie.mtime.seconds = (int32_t)st.st_mtim.tv_sec;
			ie.mtime.nanoseconds = (uint32_t)st.st_mtim.tv_nsec;
			ie.dev = (uint32_t)st.st_dev;
			ie.ino = (uint32_t)st.st_ino;
			ie.uid = (uint32_t)st.st_uid;
			ie.gid = (uint32_t)st.st_gid;
			ie.file_size = (uint32_t)st.st_size;
		}
	}
	*ret_ie = ie;
	return 0;
}

/* The blob of @e into the object database: hashed first, and nothing is written for an
 * object that is there already (packed, say); otherwise loose_write(), or libgit2's
 * git_odb_write() where that cannot be used (it also hashes first; never
 * git_blob_create_from_buffer(), which opens a temporary file before it knows). A write
 * can still fail where the object database is read-only (a shared or packed repository):
 * an object that is there is then all that was asked. */
static int blob_write(struct gitstage *g, const struct gitstage_entry *e, git_oid *ret_id)
{
	const char *buf = e->len ? e->buf : "";
	int r;

	if (loose_on(g)) {
		r = git_odb_hash(ret_id, buf, e->len, GIT_OBJECT_BLOB);
		if (r < 0)
			return r;
		/* there already: git_odb_write() below only freshens it */
		if (!git_odb_exists_ext(g->odb, ret_id, GIT_ODB_LOOKUP_NO_REFRESH)) {
			r = loose_write(g, buf, e->len, ret_id);
			if (r == 0)
				return 0;
			/* libgit2's writer, which also says what is wrong if anything is; from
			 * now on where this file system cannot do it */
			if (r == -EOPNOTSUPP || r == -EISDIR || r == -EXDEV || r == -EPERM)
				__atomic_store_n(&g->loose_direct, false, __ATOMIC_RELAXED);
		}
	}
	r = git_odb_write(ret_id, g->odb, buf, e->len, GIT_OBJECT_BLOB);
	if (r < 0) {
		/* a read-only database may hold it already; else libgit2's own reason */
		const git_error *ge = git_error_last();
		char *why = ge && ge->message ? strdup(ge->message) : NULL;
		int klass = ge ? ge->klass : GIT_ERROR_ODB;

		if (git_odb_hash(ret_id, buf, e->len, GIT_OBJECT_BLOB) == 0 &&
		    git_odb_exists(g->odb, ret_id)) {
			git_error_clear();
			r = 0;
		} else if (why) {
			(void)git_error_set_str(klass, why);
		}
		free(why);
	}
	return r;
}

/* libgit2 takes index.lock only to write: the index it read may have been changed by
 * another git in between, whose work the write would then undo. So the read and the change
 * happen under a lock of our own, handed to libgit2 just before its write (released, and
 * taken again by it at once): another git that starts in that moment reads our write's
 * predecessor only if it also writes first, and then libgit2 finds the lock taken and the
 * whole step is done again.
 *
 * A lock that is only held (@for_write false) is a second name for the index itself,
 * link(index, index.lock): as exclusive as git's open(O_CREAT|O_EXCL), but no inode is made
 * and freed for it (on ext4 without a journal every allocation scans the inodes freed in
 * the last minute or more). Nothing is ever written through it. Where linking fails for any
 * other reason than a lock that exists (no index yet, a file system without hard links),
 * and for a lock to be written (@for_write), the lock is a new file as git makes it.
 * Returns the lock's fd (LOCK_LINKED for the link), or -EEXIST while another holds it. */
#define LOCK_LINKED INT_MAX

static int own_lock(struct gitstage *g, bool for_write, struct ws_err *err)
{
	int fd, r;

	if (!for_write) {
		if (link(g->index_path, g->lock_path) == 0)
			return LOCK_LINKED;
		if (errno == EEXIST)
			return -EEXIST;
	}
	fd = open(g->lock_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	r = -errno;
	if (fd >= 0)
		return fd;
	if (r == -EEXIST)
		return r;
	return ws_fail_at(err, r, WS_E_GIT_ERROR, g->lock_path, 0, 0, "cannot create '%s': %s",
			  g->lock_path, strerror(-r));
}

static void own_unlock(struct gitstage *g, int *fd)
{
	if (*fd < 0)
		return;
	if (*fd != LOCK_LINKED)
		(void)close(*fd);
	*fd = -1;
	(void)unlink(g->lock_path);
}

/* Takes index.lock (own_lock()), waiting until @deadline while another git holds it; then
 * BUSY, with the time waited since @start. */
static int lock_take(struct gitstage *g, bool for_write, int64_t start, int64_t deadline,
		     int *ret_fd, struct ws_err *err)
{
	for (;;) {
		int fd = own_lock(g, for_write, err);

		if (fd >= 0) {
			*ret_fd = fd;
			return 0;
		}
		if (fd != -EEXIST)
			return fd;
		if (!lock_wait(deadline))
			return busy_fail(g, (int)(now_ms() - start), err);
	}
}

/* Records in @c (n entries allocated) how the index held @e's paths before the staging. */
static int change_record(struct gitstage *g, const struct gitstage_entry *e, const git_oid *ids,
			 size_t n, struct gitstage_change *c)
{
	struct stat st;

	c->pre_missing = stat(g->index_path, &st) < 0 && errno == ENOENT;
	memset(&c->pre_sum, 0, sizeof(c->pre_sum));
	if (!c->pre_missing)
		c->pre_sum = *git_index_checksum(g->index);
	for (size_t i = 0; i < n; i++) {
		struct change_ent *ce = &c->ents[i];
		const git_index_entry *cur = git_index_get_bypath(g->index, e[i].path, 0);

		free(ce->path);
		ce->path = strdup(e[i].path);
		if (!ce->path)
			return -ENOMEM;
		ce->had_old = cur != NULL;
		if (cur) {
			ce->old = *cur;
			ce->old.path = ce->path;
		}
		ce->id = ids[i];
	}
	c->n = n;
	return 0;
}

static int stage_locked(struct gitstage *g, const struct gitstage_entry *e, size_t n,
			int lock_wait_ms, struct gitstage_change **ret_change, struct ws_err *err)
{
	WS_AUTOFREE git_oid *ids = NULL;
	struct gitstage_change *c = NULL;
	int64_t start = now_ms();
	int64_t deadline = start + (lock_wait_ms > 0 ? lock_wait_ms : 0);
	size_t i;
	int r;

	if (n == 0)
		return 0;
	ids = calloc(n, sizeof(*ids));
	if (!ids)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	if (ret_change) {
		c = calloc(1, sizeof(*c));
		if (c)
			c->ents = calloc(n, sizeof(*c->ents));
		if (!c || !c->ents) {
			gitstage_change_free(c);
			return ws_fail(err, -ENOMEM, 0, "out of memory");
		}
	}
	/* Blobs first: they go to the object database, which needs no lock. */
	for (i = 0; i < n; i++) {
		r = check_path(e[i].path, err);
		if (r < 0)
			return r;
		if (e[i].have_id) {
			memcpy(ids[i].id, e[i].id, GITSTAGE_ID_LEN);
			continue;
		}
		r = blob_write(g, &e[i], &ids[i]);
		if (r < 0) {
			gitstage_change_free(c);
			return git_fail(r, err);
		}
	}

	for (;;) {
		int lock = -1;

		r = lock_take(g, false, start, deadline, &lock, err);
		if (r < 0) {
			gitstage_change_free(c);
			return r;
		}
		/* Re-read (when changed on disk) right before changing it, so other git
		 * commands' work is kept. */
		r = index_reload(g);
		if (r < 0) {
			own_unlock(g, &lock);
			gitstage_change_free(c);
			return git_fail(r, err);
		}
		if (c && change_record(g, e, ids, n, c) < 0) {
			own_unlock(g, &lock);
			gitstage_change_free(c);
			return ws_fail(err, -ENOMEM, 0, "out of memory");
		}
		for (i = 0; i < n; i++) {
			git_index_entry ie;

			r = make_entry(g, &e[i], &ids[i], &ie, err);
			if (r < 0) {
				own_unlock(g, &lock);
				goto undo;
			}
			if (c)
				c->ents[i].mode = ie.mode;
			r = git_index_add(g->index, &ie);
			if (r < 0) {
				r = git_fail(r, err);
				own_unlock(g, &lock);
				goto undo;
			}
		}
		own_unlock(g, &lock);
		r = git_index_write(g->index);
		if (r == 0) {
			for (i = 0; i < n; i++)
				if (g->memo_path && strcmp(e[i].path, g->memo_path) == 0)
					memo_set(g, e[i].path, &ids[i], e[i].buf, e[i].len);
			if (c) {
				c->post_sum = *git_index_checksum(g->index);
				*ret_change = c;
			}
			return 0;
		}
		if (r != GIT_ELOCKED) {
			r = git_fail(r, err);
			goto undo;
		}
		/* another git took the lock in the moment it was handed over: again */
		if (!lock_wait(deadline)) {
			gitstage_change_free(c);
			return busy_fail(g, (int)(now_ms() - start), err);
		}
	}

undo:
	/* Drop the half-applied entries from memory; the file on disk was not written. */
	(void)git_index_read(g->index, 1);
	gitstage_change_free(c);
	return r;
}

static int write_blobs(struct gitstage *g, struct gitstage_entry *e, size_t n,
		       struct ws_err *err)
{
	git_oid id;
	int r;

	for (size_t i = 0; i < n; i++) {
		if (e[i].have_id)
			continue;
		r = check_path(e[i].path, err);
		if (r < 0)
			return r;
		r = blob_write(g, &e[i], &id);
		if (r < 0)
			return git_fail(r, err);
		memcpy(e[i].id, id.id, GITSTAGE_ID_LEN);
		e[i].have_id = true;
	}
	return 0;
}

static int snapshot_index_locked(struct gitstage *g, char **ret_buf, size_t *ret_len,
				 struct ws_err *err)
{
	int r;

	r = fsutil_read(g->index_path, GITSTAGE_INDEX_MAX, ret_buf, ret_len);
	if (r == -ENOENT)
		return ws_fail(err, r, WS_E_GIT_ERROR, "the repository has no index yet");
	if (r < 0)
		return ws_fail_at(err, r, WS_E_GIT_ERROR, g->index_path, 0, 0,
				  "cannot read '%s': %s", g->index_path, strerror(-r));
	return 0;
}

/* With the lock taken (@fd), makes .git/index exactly @buf (NULL: no index); the lock is
 * gone afterwards either way. */
static int restore_held(struct gitstage *g, int fd, const char *buf, size_t len,
			struct ws_err *err)
{
	WS_AUTOCLOSE int dfd = -1;
	const char *what;
	int r;

	if (buf) {
		what = "write";
		r = fsutil_write_all(fd, buf, len);
		if (r < 0)
			goto fail;
		if (fsync(fd) < 0) {
			r = -errno;
			goto fail;
		}
		r = close(fd);
		fd = -1;
		if (r < 0) {
			r = -errno;
			goto fail;
		}
		/* The lock becomes the index: the one rename outside fsutil, as git does it. */
		what = "rename into";
		if (rename(g->lock_path, g->index_path) < 0) {
			r = -errno;
			goto fail;
		}
	} else {
		(void)close(fd);
		fd = -1;
		what = "remove";
		if (unlink(g->index_path) < 0 && errno != ENOENT) {
			r = -errno;
			goto fail;
		}
		(void)unlink(g->lock_path);
	}

	dfd = open(g->gitdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0)
		(void)fsync(dfd);
	/* The open git_index re-reads from disk before its next use (every use forces it);
	 * doing it now as well keeps libgit2's view current for anyone else. */
	(void)git_index_read(g->index, 1);
	return 0;

fail:
	if (fd >= 0)
		(void)close(fd);
	(void)unlink(g->lock_path);
	return ws_fail_at(err, r, WS_E_GIT_ERROR, g->index_path, 0, 0, "cannot %s '%s': %s",
			  what, g->index_path, strerror(-r));
}

/* Whether .git/index ends in the checksum @sum (it is the index written with it). */
static bool index_has_sum(struct gitstage *g, const git_oid *sum)
{
	unsigned char tail[GITSTAGE_ID_LEN];
	WS_AUTOCLOSE int fd = open(g->index_path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(tail))
		return false;
	if (pread(fd, tail, sizeof(tail), st.st_size - (off_t)sizeof(tail)) !=
	    (ssize_t)sizeof(tail))
		return false;
	return memcmp(tail, sum->id, sizeof(tail)) == 0;
}

/* Puts each path of @c back as it was, where the index still holds the blob staged for it
 * (another git's later change to that path stays), keeping every other entry. Starts with
 * the lock @lock, taken by the caller; waits for it again until @deadline (own_lock()). */
static int undo_entries(struct gitstage *g, const struct gitstage_change *c, int lock,
			int64_t start, int64_t deadline, struct ws_err *err)
{
	int r;

	for (;;) {
		bool changed = false;

		if (lock < 0) {
			r = lock_take(g, false, start, deadline, &lock, err);
			if (r < 0)
				return r;
		}
		r = git_index_read(g->index, 1);
		if (r < 0) {
			own_unlock(g, &lock);
			return git_fail(r, err);
		}
		for (size_t i = 0; i < c->n; i++) {
			const struct change_ent *ce = &c->ents[i];
			const git_index_entry *cur = git_index_get_bypath(g->index, ce->path, 0);
			git_index_entry back;

			if (!cur || !git_oid_equal(&cur->id, &ce->id))
				continue;
			/* the old blob goes back; a mode another git gave it since stays */
			back = ce->old;
			if (cur->mode != ce->mode)
				back.mode = cur->mode;
			r = ce->had_old ? git_index_add(g->index, &back)
					: git_index_remove(g->index, ce->path, 0);
			if (r < 0) {
				r = git_fail(r, err);
				own_unlock(g, &lock);
				(void)git_index_read(g->index, 1);
				return r;
			}
			changed = true;
		}
		own_unlock(g, &lock);
		if (!changed)
			return 0;
		r = git_index_write(g->index);
		if (r == 0)
			return 0;
		if (r != GIT_ELOCKED) {
			r = git_fail(r, err);
			(void)git_index_read(g->index, 1);
			return r;
		}
		if (!lock_wait(deadline))
			return busy_fail(g, (int)(now_ms() - start), err);
	}
}

static int undo_locked(struct gitstage *g, const struct gitstage_change *c, const char *snap,
		       size_t snap_len, int lock_wait_ms, struct ws_err *err)
{
	int64_t start = now_ms();
	int64_t deadline = start + (lock_wait_ms > 0 ? lock_wait_ms : 0);
	bool snap_is_pre;
	int fd = -1;
	int r;

	if (!c)
		return 0;
	snap_is_pre = c->pre_missing ? snap == NULL
				     : snap && snap_len >= GITSTAGE_ID_LEN &&
					       memcmp(snap + snap_len - GITSTAGE_ID_LEN,
						      c->pre_sum.id, GITSTAGE_ID_LEN) == 0;
	r = lock_take(g, true, start, deadline, &fd, err);
	if (r < 0)
		return r;
	/* Under the lock nobody changes the index. Still exactly what the staging wrote, over
	 * exactly the snapshot: the snapshot goes back, byte for byte. */
	if (snap_is_pre && index_has_sum(g, &c->post_sum))
		return restore_held(g, fd, snap, snap_len, err);
	/* Another git wrote the index since (or before, over the snapshot): keep its work */
	return undo_entries(g, c, fd, start, deadline, err);
}

int gitstage_read_index(struct gitstage *g, const char *path, char **ret_buf, size_t *ret_len,
			struct ws_err *err)
{
	int r;

	(void)pthread_mutex_lock(&g->lock);
	r = read_index_locked(g, path, ret_buf, ret_len, err);
	(void)pthread_mutex_unlock(&g->lock);
	return r;
}

int gitstage_write_blobs(struct gitstage *g, struct gitstage_entry *e, size_t n,
			 struct ws_err *err)
{
	/* only the object database, which locks itself: a blob is written while another
	 * thread reads or writes the index */
	return write_blobs(g, e, n, err);
}

int gitstage_snapshot_index(struct gitstage *g, char **ret_buf, size_t *ret_len,
			    struct ws_err *err)
{
	int r;

	(void)pthread_mutex_lock(&g->lock);
	r = snapshot_index_locked(g, ret_buf, ret_len, err);
	(void)pthread_mutex_unlock(&g->lock);
	return r;
}

int gitstage_stage(struct gitstage *g, const struct gitstage_entry *e, size_t n,
		   int lock_wait_ms, struct gitstage_change **ret_change, struct ws_err *err)
{
	int r;

	if (ret_change)
		*ret_change = NULL;
	(void)pthread_mutex_lock(&g->lock);
	r = stage_locked(g, e, n, lock_wait_ms, ret_change, err);
	(void)pthread_mutex_unlock(&g->lock);
	return r;
}

int gitstage_undo(struct gitstage *g, const struct gitstage_change *c, const char *snap,
		  size_t snap_len, int lock_wait_ms, struct ws_err *err)
{
	int r;

	(void)pthread_mutex_lock(&g->lock);
	r = undo_locked(g, c, snap, snap_len, lock_wait_ms, err);
	(void)pthread_mutex_unlock(&g->lock);
	return r;
}
