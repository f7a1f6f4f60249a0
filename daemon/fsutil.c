/* SPDX-License-Identifier: MIT */
/* File helpers: reads with a size cap, and the one atomic replacement every writer of the
 * daemon goes through (temporary in the same directory, fsync, rename, fsync of the
 * directory). This is the only place that renames a file into place. It does not check
 * that the old bytes are still the ones a caller parsed: callers compare before replacing. */
#include "fsutil.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ws_proto.h"

#define READ_CHUNK 65536

/* Splits @path into its directory ("." when it has none) and base name; malloc'd. */
static int split_path(const char *path, char **ret_dir, char **ret_base)
{
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOFREE char *base = NULL;
	const char *slash = strrchr(path, '/');

	if (!slash) {
		dir = strdup(".");
		base = strdup(path);
	} else {
		dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
		base = strdup(slash + 1);
	}
	if (!dir || !base)
		return -ENOMEM;
	if (base[0] == '\0')
		return -EISDIR;
	*ret_dir = ws_steal(&dir);
	*ret_base = ws_steal(&base);
	return 0;
}

static int fsync_dir(const char *dir)
{
	WS_AUTOCLOSE int fd = -1;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0 && errno != EINVAL)
		return -errno;
	return 0;
}

static mode_t umask_kept;
static bool umask_is_kept;

/* The process umask without changing it (umask(2) would race with other threads):
 * Linux reports it in /proc/self/status; fall back to the usual 022. The one kept by
 * fsutil_umask_keep() when there is one. */
static mode_t current_umask(void)
{
	char line[256];
	unsigned int mask;
	mode_t r = 022;
	FILE *f;

	if (umask_is_kept)
		return umask_kept;
	f = fopen("/proc/self/status", "re");
	if (!f)
		return r;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Umask: %o", &mask) == 1) {
			r = (mode_t)(mask & 0777);
			break;
		}
	}
	fclose(f);
	return r;
}

mode_t fsutil_umask(void)
{
	return current_umask();
}

void fsutil_umask_keep(void)
{
	umask_is_kept = false;
	umask_kept = current_umask();
	umask_is_kept = true;
}

/* Whether @name is `.<base>.XXXXXX`, as fsutil_tmp_make() and name_unnamed() name a
 * temporary: six letters or digits, not all of them small letters (".default.nix.backup"
 * is somebody's file; a random suffix is all small letters once in 200 times, and such a
 * temporary is then left to its owner). */
static bool is_tmp_name(const char *name, const char *base)
{
	size_t n = strlen(name), blen = strlen(base);
	bool mixed = false;

	if (n != blen + 8 || name[0] != '.' || strncmp(name + 1, base, blen) != 0 ||
	    name[n - 7] != '.')
		return false;
	for (size_t i = n - 6; i < n; i++) {
		if (!isalnum((unsigned char)name[i]))
			return false;
		mixed |= !islower((unsigned char)name[i]);
	}
	return mixed;
}

int fsutil_remove_stale_tmps(const char *dir, const char *base, void (*removed)(const char *path))
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		WS_AUTOFREE char *path = NULL;
		struct stat st;

		if (!is_tmp_name(de->d_name, base))
			continue;
		path = fsutil_join(dir, de->d_name);
		if (!path || lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid())
			continue;
		if (unlink(path) == 0) {
			n++;
			if (removed)
				removed(path);
		}
	}
	closedir(d);
	if (n > 0)
		(void)fsync_dir(dir);
	return n;
}

/* write(2) until all @len bytes are out, or pwrite(2) from @off when @off >= 0. */
static int write_whole(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		if (off >= 0)
			off += n;
	}
	return 0;
}

int fsutil_write_all(int fd, const void *buf, size_t len)
{
	return write_whole(fd, buf, len, -1);
}

int fsutil_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len)
{
	WS_AUTOFREE char *buf = NULL;
	size_t len = 0, cap = 0;
	struct stat st;

	if (max > SIZE_MAX / 2)
		max = SIZE_MAX / 2;
	/* A regular file that is already too large fails before any reading. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		off_t pos = lseek(fd, 0, SEEK_CUR);

		if (pos >= 0 && st.st_size > pos && (uintmax_t)(st.st_size - pos) > max)
			return -EFBIG;
	}
	for (;;) {
		ssize_t n;

		if (cap - len < 2) {
			/* Room for one byte past the cap, to notice a file larger than @max. */
			size_t ncap = cap ? cap * 2 : READ_CHUNK;
			char *nbuf;

			if (ncap > max + 2)
				ncap = max + 2;
			if (ncap <= cap)
				ncap = cap + 2;
			nbuf = realloc(buf, ncap);
			if (!nbuf)
				return -ENOMEM;
			buf = nbuf;
			cap = ncap;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max)
			return -EFBIG;
	}
	if (!buf) {
		buf = malloc(1);
		if (!buf)
			return -ENOMEM;
	}
	buf[len] = '\0';
	*ret_buf = ws_steal(&buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

int fsutil_read(const char *path, size_t max, char **ret_buf, size_t *ret_len)
{
	WS_AUTOCLOSE int fd = -1;
	struct stat st;

	/* non-blocking: a FIFO put where a file was expected must not hang the caller */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	return fsutil_read_fd(fd, max, ret_buf, ret_len);
}

/* Puts the temporary @tmp in place of @path without replacing an existing file. */
static int rename_noreplace(const char *tmp, const char *path)
{
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
		return -errno;
	/* The file system cannot rename without replacing: link() never replaces either. */
	if (link(tmp, path) < 0)
		return -errno;
	(void)unlink(tmp);
	return 0;
}

int fsutil_tmp_make(const char *path, struct fsutil_tmp *t, struct ws_err *err)
{
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOFREE char *base = NULL;
	int r;

	*t = (struct fsutil_tmp){.fd = -1};
	r = split_path(path, &dir, &base);
	if (r < 0)
		return ws_fail(err, r, 0, "cannot write '%s': %s", path, strerror(-r));
	if (asprintf(&t->path, "%s/.%s.XXXXXX", dir, base) < 0) {
		t->path = NULL;
		return ws_fail(err, -ENOMEM, 0, "cannot write '%s': out of memory", path);
	}
	t->fd = mkostemp(t->path, O_CLOEXEC);
	if (t->fd < 0) {
		r = -errno;
		free(t->path);
		t->path = NULL;
		return ws_fail(err, r, 0, "cannot create a temporary file in '%s': %s", dir,
			       strerror(-r));
	}
	return 0;
}

static int commit_end(const char *dir, int flags, struct ws_err *err);

int fsutil_tmp_prepare(const char *dir, struct fsutil_tmp *t)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	*t = (struct fsutil_tmp){.fd = -1};
	if (fd < 0)
		return -errno;
	t->fd = fd;
	t->unnamed = true;
	return 0;
}

int fsutil_tmp_preset(struct fsutil_tmp *t, const void *buf, size_t len)
{
	int r;

	if (t->fd < 0 || !t->unnamed)
		return -EINVAL;
	r = fsutil_write_all(t->fd, buf, len);
	if (r == 0 && fchmod(t->fd, 0644 & ~current_umask()) < 0)
		r = -errno;
	if (r == 0 && fsync(t->fd) < 0)
		r = -errno;
	return r;
}

size_t fsutil_common_prefix(const char *a, const char *b, size_t n)
{
	size_t i = 0;

	while (i + 4096 <= n && memcmp(a + i, b + i, 4096) == 0)
		i += 4096;
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

int fsutil_tmp_prefill(struct fsutil_tmp *t, char *buf, size_t len)
{
	int r;

	if (t->fd < 0 || !t->unnamed || t->pre || lseek(t->fd, 0, SEEK_CUR) != 0) {
		free(buf);
		return -EINVAL;
	}
	r = fsutil_write_all(t->fd, buf, len);
	if (r == 0 && fsync(t->fd) < 0)
		r = -errno;
	if (r < 0) {
		free(buf);
		return r;
	}
	t->pre = buf;
	t->pre_len = len;
	return 0;
}

bool fsutil_test_no_link;

/* linkat through /proc/self/fd: an AT_EMPTY_PATH link needs a capability. */
int fsutil_link_unnamed(int fd, const char *path)
{
	char proc[64];

	if (fsutil_test_no_link)
		return -ENOENT; /* as without /proc */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) < 0)
		return -errno;
	return 0;
}

bool fsutil_can_link_unnamed(void)
{
	return !fsutil_test_no_link && access("/proc/self/fd", X_OK) == 0;
}

/* Names the unnamed temporary `.<name>.XXXXXX` next to @path, as fsutil_tmp_make() would
 * have. */
static int name_unnamed(const char *path, struct fsutil_tmp *t)
{
	static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOFREE char *base = NULL;
	WS_AUTOFREE char *name = NULL;
	struct timespec ts;
	uint64_t x;
	int r;

	r = split_path(path, &dir, &base);
	if (r < 0)
		return r;
	if (asprintf(&name, "%s/.%s.XXXXXX", dir, base) < 0) {
		name = NULL;
		return -ENOMEM;
	}
	(void)clock_gettime(CLOCK_REALTIME, &ts);
	x = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15u ^ (uint64_t)getpid() << 32 ^
	    (uint64_t)(uintptr_t)t;
	for (int tries = 0; tries < 100; tries++) {
		char *p = name + strlen(name) - 6;

		for (int i = 0; i < 6; i++) {
			x = x * 6364136223846793005u + 1442695040888963407u;
			p[i] = chars[(x >> 33) % (sizeof(chars) - 1)];
		}
		r = fsutil_link_unnamed(t->fd, name);
		if (r != -EEXIST)
			break;
	}
	if (r < 0)
		return r;
	t->path = ws_steal(&name);
	t->unnamed = false;
	return 0;
}

int fsutil_tmp_link_new(const char *path, struct fsutil_tmp *t, int flags, bool *ret_linked,
			struct ws_err *err)
{
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOFREE char *base = NULL;
	int r;

	*ret_linked = false;
	if (t->fd < 0 || !t->unnamed) {
		fsutil_tmp_drop(t);
		return ws_fail(err, -EINVAL, 0, "cannot write '%s': no preset temporary", path);
	}
	r = split_path(path, &dir, &base);
	if (r == 0)
		r = fsutil_link_unnamed(t->fd, path);
	if (r < 0) {
		fsutil_tmp_drop(t);
		if (r == -EEXIST)
			return ws_fail_at(err, -EEXIST, WS_E_FILE_EXISTS, path, 0, 0,
					  "'%s' already exists", path);
		return ws_fail(err, r, 0, "cannot create '%s': %s", path, strerror(-r));
	}
	/* the name is in place: from here on a failure only weakens durability. The content
	 * was synced before; the new name is made durable by the directory's sync, as after
	 * a rename (the standard pattern; journaling file systems commit the link count with
	 * the entry) */
	*ret_linked = true;
	(void)close(t->fd);
	*t = (struct fsutil_tmp){.fd = -1};
	return commit_end(dir, flags, err);
}

void fsutil_tmp_drop(struct fsutil_tmp *t)
{
	if (t->path)
		(void)unlink(t->path);
	if (t->fd >= 0)
		(void)close(t->fd);
	free(t->path);
	free(t->pre);
	t->path = NULL;
	t->pre = NULL;
	t->pre_len = 0;
	t->fd = -1;
	t->unnamed = false;
}

int fsutil_replace(const char *path, const void *buf, size_t len, int flags,
		   struct ws_err *err)
{
	struct fsutil_tmp t = {.fd = -1};
	int r = fsutil_tmp_fill(path, buf, len, flags, &t, err);

	if (r < 0) {
		fsutil_tmp_drop(&t);
		return r;
	}
	return fsutil_tmp_commit(path, &t, flags, err);
}

int fsutil_tmp_fill(const char *path, const void *buf, size_t len, int flags,
		    struct fsutil_tmp *t, struct ws_err *err)
{
	struct stat old, mine;
	bool have_old;
	const char *what;
	int r;

	if (lstat(path, &old) == 0) {
		if (flags & FSUTIL_NEW)
			return ws_fail_at(err, -EEXIST, WS_E_FILE_EXISTS, path, 0, 0,
					  "'%s' already exists", path);
		if (!S_ISREG(old.st_mode))
			return ws_fail(err, -EISDIR, 0, "cannot replace '%s': not a regular file",
				       path);
		have_old = true;
	} else if (errno == ENOENT) {
		have_old = false;
	} else {
		r = -errno;
		return ws_fail(err, r, 0, "cannot write '%s': %s", path, strerror(-r));
	}
	if (t->fd < 0) {
		/* none made beforehand (or a filled one): now */
		fsutil_tmp_drop(t);
		r = fsutil_tmp_make(path, t, err);
		if (r < 0)
			return r;
	}
	if (t->unnamed && !t->pre && lseek(t->fd, 0, SEEK_CUR) != 0) {
		fsutil_tmp_drop(t); /* written before (preset): not ours to reuse */
		r = fsutil_tmp_make(path, t, err);
		if (r < 0)
			return r;
	}

	what = "write";
	if (t->pre) {
		/* prefilled: the bytes from the first difference on, and no more than @len */
		size_t same = fsutil_common_prefix(t->pre, buf, len < t->pre_len ? len : t->pre_len);

		r = write_whole(t->fd, (const char *)buf + same, len - same, (off_t)same);
		if (r == 0 && len < t->pre_len && ftruncate(t->fd, (off_t)len) < 0)
			r = -errno;
		free(t->pre);
		t->pre = NULL;
		t->pre_len = 0;
	} else {
		r = fsutil_write_all(t->fd, buf, len);
	}
	if (r < 0)
		goto fail;
	what = "set the mode of";
	if (flags & FSUTIL_PRIVATE)
		r = fchmod(t->fd, 0600);
	else if (have_old)
		r = fchmod(t->fd, old.st_mode & 07777);
	else
		r = fchmod(t->fd, 0644 & ~current_umask());
	if (r < 0) {
		r = -errno;
		goto fail;
	}
	what = "keep the owner of";
	if (have_old && fstat(t->fd, &mine) < 0) {
		r = -errno;
		goto fail;
	}
	/* Keep the owner (root editing a user's file) and the group (which may differ from
	 * ours, or come from a set-group-ID directory for a new file). */
	if (have_old && (old.st_uid != mine.st_uid || old.st_gid != mine.st_gid)) {
		if (fchown(t->fd, old.st_uid, old.st_gid) < 0) {
			r = -errno;
			goto fail;
		}
		/* chown clears set-id bits: put the mode back. */
		if (!(flags & FSUTIL_PRIVATE) && fchmod(t->fd, old.st_mode & 07777) < 0) {
			r = -errno;
			goto fail;
		}
	}
	if (t->unnamed) {
		/* a prepared temporary gets its name now, before the sync that makes it (and
		 * the link) durable; where it cannot be named, the data goes to a named one */
		r = name_unnamed(path, t);
		if (r < 0) {
			fsutil_tmp_drop(t);
			r = fsutil_tmp_make(path, t, err);
			if (r < 0)
				return r;
			return fsutil_tmp_fill(path, buf, len, flags, t, err);
		}
	}
	what = "sync";
	if (fsync(t->fd) < 0) {
		r = -errno;
		goto fail;
	}
	what = "close";
	r = close(t->fd);
	t->fd = -1;
	if (r < 0) {
		r = -errno;
		goto fail;
	}
	return 0;

fail:
	fsutil_tmp_drop(t);
	return ws_fail(err, r, 0, "cannot %s '%s': %s", what, path, strerror(-r));
}

/* What both commits begin with: a filled temporary, and @path's directory (*ret_dir). The
 * temporary is dropped when either is missing. */
static int commit_begin(const char *path, struct fsutil_tmp *t, char **ret_dir,
			struct ws_err *err)
{
	WS_AUTOFREE char *base = NULL;
	int r;

	if (!t->path || t->fd >= 0) {
		fsutil_tmp_drop(t);
		return ws_fail(err, -EINVAL, 0, "cannot write '%s': no filled temporary", path);
	}
	r = split_path(path, ret_dir, &base);
	if (r < 0) {
		fsutil_tmp_drop(t);
		return ws_fail(err, r, 0, "cannot write '%s': %s", path, strerror(-r));
	}
	return 0;
}

/* ... and end with: the directory fsync'd, unless the caller does that. The rename is
 * done by then; a failed directory sync only weakens durability. */
static int commit_end(const char *dir, int flags, struct ws_err *err)
{
	int r;

	if (flags & FSUTIL_NO_DIR_SYNC)
		return 0;
	r = fsync_dir(dir);
	if (r < 0)
		return ws_fail(err, r, 0, "cannot sync directory '%s': %s", dir, strerror(-r));
	return 0;
}

int fsutil_tmp_commit(const char *path, struct fsutil_tmp *t, int flags, struct ws_err *err)
{
	WS_AUTOFREE char *dir = NULL;
	int r;

	r = commit_begin(path, t, &dir, err);
	if (r < 0)
		return r;
	if (flags & FSUTIL_NEW)
		r = rename_noreplace(t->path, path);
	else
		r = rename(t->path, path) < 0 ? -errno : 0;
	if (r < 0) {
		fsutil_tmp_drop(t);
		if (r == -EEXIST)
			return ws_fail_at(err, -EEXIST, WS_E_FILE_EXISTS, path, 0, 0,
					  "'%s' already exists", path);
		return ws_fail(err, r, 0, "cannot rename into '%s': %s", path, strerror(-r));
	}
	free(t->path);
	t->path = NULL;

	return commit_end(dir, flags, err);
}

/* Whether the file open as @fd holds exactly @want (@want_len bytes). */
static bool fd_holds(int fd, const void *want, size_t want_len)
{
	WS_AUTOFREE char *now = NULL;
	size_t len = 0;
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uintmax_t)st.st_size != want_len)
		return false;
	if (lseek(fd, 0, SEEK_SET) < 0 || fsutil_read_fd(fd, want_len, &now, &len) < 0)
		return false;
	return len == want_len && (len == 0 || memcmp(now, want, len) == 0);
}

void (*fsutil_test_exchanged)(const char *path, const char *tmp);
bool fsutil_test_no_exchange;

int fsutil_tmp_commit_if(const char *path, struct fsutil_tmp *t, const void *old,
			 size_t old_len, int flags, int *ret_old_fd, struct ws_err *err)
{
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOCLOSE int fd = -1;
	struct stat ours, st;
	int r;

	if (ret_old_fd)
		*ret_old_fd = -1;
	r = commit_begin(path, t, &dir, err);
	if (r < 0)
		return r;
	if (lstat(t->path, &ours) < 0) {
		r = -errno;
		fsutil_tmp_drop(t);
		return ws_fail(err, r, 0, "cannot write '%s': %s", path, strerror(-r));
	}
	/* Swapped in one step, the file that was in place is then at the temporary's name,
	 * where it is checked: a change that came after any earlier check is seen here. */
	if (fsutil_test_no_exchange)
		r = -EINVAL;
	else
		r = renameat2(AT_FDCWD, t->path, AT_FDCWD, path, RENAME_EXCHANGE) < 0 ? -errno : 0;
	if (r < 0) {
		if (r == -EINVAL || r == -ENOSYS || r == -EOPNOTSUPP) {
			/* this file system cannot exchange: check, then rename */
			fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
			if (fd < 0 || !fd_holds(fd, old, old_len)) {
				fsutil_tmp_drop(t);
				return ws_fail(err, -EAGAIN, 0, "'%s' changed", path);
			}
			r = fsutil_tmp_commit(path, t, flags, err);
			if (r == 0 && ret_old_fd) {
				*ret_old_fd = fd;
				fd = -1;
			}
			return r;
		}
		fsutil_tmp_drop(t);
		if (r == -ENOENT)
			return ws_fail(err, -EAGAIN, 0, "'%s' changed (it is gone)", path);
		return ws_fail(err, r, 0, "cannot rename into '%s': %s", path, strerror(-r));
	}
	if (fsutil_test_exchanged)
		fsutil_test_exchanged(path, t->path);
	fd = open(t->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || !fd_holds(fd, old, old_len)) {
		/* not the file checked before: put it back, and ours goes */
		if (renameat2(AT_FDCWD, t->path, AT_FDCWD, path, RENAME_EXCHANGE) < 0) {
			WS_AUTOFREE char *at = t->path;

			r = -errno;
			t->path = NULL; /* the changed file is there now: never remove it */
			return ws_fail(err, r, 0,
				       "'%s' changed while it was replaced, and the changed file "
				       "could not be put back (it is at '%s'): %s",
				       path, at, strerror(-r));
		}
		/* ours is at the temporary's name again, unless yet another version was saved
		 * at @path in between: that one went there, and is kept */
		if (lstat(t->path, &st) == 0 &&
		    (st.st_ino != ours.st_ino || st.st_dev != ours.st_dev)) {
			WS_AUTOFREE char *at = t->path;

			t->path = NULL;
			ws_fail(err, -EAGAIN, 0,
				"'%s' changed twice while it was replaced; the later version is "
				"kept at '%s'", path, at);
			ws_err_set_str(err, "keptAt", at);
			return -EAGAIN;
		}
		fsutil_tmp_drop(t);
		return ws_fail(err, -EAGAIN, 0, "'%s' changed", path);
	}
	(void)unlink(t->path);
	free(t->path);
	t->path = NULL;
	if (ret_old_fd) {
		*ret_old_fd = fd;
		fd = -1;
	}
	return commit_end(dir, flags, err);
}


int fsutil_sync_parent(const char *path)
{
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOFREE char *base = NULL;
	int r = split_path(path, &dir, &base);

	return r < 0 ? r : fsync_dir(dir);
}

int fsutil_remove(const char *path)
{
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOFREE char *base = NULL;
	int r;

	r = split_path(path, &dir, &base);
	if (r < 0)
		return r;
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -errno;
	return fsync_dir(dir);
}

int fsutil_mkdir_p(const char *path, mode_t mode)
{
	WS_AUTOFREE char *p = NULL;
	struct stat st;
	char *s;

	if (!path || !*path)
		return -EINVAL;
	p = strdup(path);
	if (!p)
		return -ENOMEM;
	/* Each prefix ending before a '/', then the whole path. */
	for (s = p + 1;; s++) {
		bool end = *s == '\0';

		if (!end && *s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0) {
			if (errno != EEXIST)
				return -errno;
			if (stat(p, &st) < 0)
				return -errno;
			if (!S_ISDIR(st.st_mode))
				return -ENOTDIR;
		}
		if (end)
			break;
		*s = '/';
		/* Collapse "a//b" and stop at a trailing '/'. */
		while (s[1] == '/')
			s++;
		if (s[1] == '\0')
			break;
	}
	return 0;
}

char *fsutil_join(const char *a, const char *b)
{
	size_t la = strlen(a);
	char *r = NULL;

	while (*b == '/')
		b++;
	if (la == 0)
		return strdup(b);
	if (asprintf(&r, "%s%s%s", a, a[la - 1] == '/' ? "" : "/", b) < 0)
		return NULL;
	return r;
}
