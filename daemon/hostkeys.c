/* SPDX-License-Identifier: MIT */
/* Host-key watcher and validation. One raw inotify fd, polled by the loop, follows
 * SANDBOX_ROOT/NAME/ssh-host-keys for every declared name as the path comes into existence
 * (watching the deepest existing ancestor), marks a name when its .pub key file is closed
 * after writing, renamed into place or linked, and hands the marked names to the daemon
 * in one debounced batch. Key files are hostile: they are read O_NOFOLLOW, bounded, and
 * only the canonical "ssh-ed25519 BASE64" of a blob that decodes leaves this module. It
 * never writes anything and never opens the private key. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/timerfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostkeys.h"
#include "sha256.h"
#include "ws_macros.h"
#include "ws_proto.h"

#define HK_KEYS_DIR "ssh-host-keys"
#define HK_KEY_NAME "ssh_host_ed25519_key.pub"
#define HK_KEY_TYPE "ssh-ed25519"
#define HK_FIRST_US 300 /* delay before a lone change is reported */
#define HK_ED25519_LEN 32
/* uint32 len + "ssh-ed25519" + uint32 len + 32 bytes */
#define HK_BLOB_LEN (4 + sizeof(HK_KEY_TYPE) - 1 + 4 + HK_ED25519_LEN)

/* Directories on the way down only need to say that a child appeared or they went away. */
#define HK_MASK_DIR                                                                                \
	(IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_MASK_ADD)
/* The key directory is written by the sandbox: never follow a symbolic link to it. */
#define HK_MASK_KEYS (HK_MASK_DIR | IN_CLOSE_WRITE | IN_DONT_FOLLOW)

struct hk_name {
	char *name;       /* owned */
	int wd_dir;       /* SANDBOX_ROOT/NAME, -1 when not watched */
	int wd_keys;      /* SANDBOX_ROOT/NAME/ssh-host-keys, -1 when not watched */
	bool dirty;       /* key file changed since the last batch */
	bool fresh;       /* new in the last hostkeys_set_names(): not watched yet */
};

struct hostkeys {
	uv_poll_t poll;             /* freed with the struct, after every close callback */
	uv_timer_t timer;           /* a burst's quiet time */
	uv_poll_t first;            /* polls @tfd: a lone change's short delay */
	int tfd;                    /* a timerfd (microseconds, where libuv timers count
				     * milliseconds), -1 without one: @timer then serves */
	bool first_open;
	bool first_ok;              /* @first polls @tfd: the short delay can be used */
	uv_loop_t *loop;            /* borrowed */
	char *root;                 /* owned; absolute, no trailing slash */
	char *anc;                  /* owned; what wd_root watches when the root is missing */
	int ifd;                    /* the inotify fd, -1 once closed */
	int wd_root;                /* the root, or its deepest existing ancestor */
	bool root_exists;
	int debounce_ms;
	uint64_t first_pending;     /* loop time of the oldest change not yet reported */
	bool pending;
	hostkeys_batch_fn cb;
	hostkeys_error_fn err_cb;
	void *userdata;             /* borrowed */
	struct hk_name *names;      /* owned array */
	size_t n_names;
	int open_handles;           /* handles initialised and not yet closed */
	bool closing;
	bool free_on_close;
	void (*done)(void *ud);
	void *done_ud;
};

/* ---- base64 (standard alphabet, canonical only) ---- */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Encodes @len bytes; with @pad the output is '='-padded to a multiple of 4. */
static char *b64_encode(const uint8_t *p, size_t len, bool pad)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	size_t i, o = 0;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		out[o++] = b64_alphabet[v >> 18];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = b64_alphabet[(v >> 6) & 63];
		out[o++] = b64_alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;

		out[o++] = b64_alphabet[v >> 18];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		if (pad) {
			out[o++] = '=';
			out[o++] = '=';
		}
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

		out[o++] = b64_alphabet[v >> 18];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = b64_alphabet[(v >> 6) & 63];
		if (pad)
			out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

/* Decodes padded base64 into at most @max bytes. Only the canonical form is accepted: length
 * a multiple of 4, '=' only as the last one or two characters, unused bits zero. Returns
 * the decoded length or -EINVAL. */
static int b64_decode(const char *s, size_t len, uint8_t *out, size_t max)
{
	size_t i, o = 0, pad = 0;

	if (len == 0 || len % 4 != 0)
		return -EINVAL;
	if (s[len - 1] == '=')
		pad = s[len - 2] == '=' ? 2 : 1;
	if ((len / 4) * 3 - pad > max)
		return -EINVAL;
	for (i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int v[4];
		unsigned j;

		for (j = 0; j < 4; j++) {
			if (last && j >= 4 - pad) {
				v[j] = 0;
				continue;
			}
			v[j] = b64_value((unsigned char)s[i + j]);
			if (v[j] < 0)
				return -EINVAL;
		}
		/* The bits a shorter final group does not use must be zero. */
		if (last && pad == 2 && (v[1] & 0x0f))
			return -EINVAL;
		if (last && pad == 1 && (v[2] & 0x03))
			return -EINVAL;
		out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (!last || pad < 2)
			out[o++] = (uint8_t)((v[1] & 0x0f) << 4 | v[2] >> 2);
		if (!last || pad < 1)
			out[o++] = (uint8_t)((v[2] & 0x03) << 6 | v[3]);
	}
	return (int)o;
}

/* ---- validation ---- */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Decodes @b64 (@len chars) and checks it is exactly an ssh-ed25519 public key blob. */
static int blob_decode(const char *b64, size_t len, uint8_t ret_blob[HK_BLOB_LEN])
{
	uint8_t blob[HK_BLOB_LEN + 3];
	const size_t tlen = sizeof(HK_KEY_TYPE) - 1;
	int n;

	n = b64_decode(b64, len, blob, sizeof(blob));
	if (n != (int)HK_BLOB_LEN)
		return -EINVAL;
	if (be32(blob) != tlen || memcmp(blob + 4, HK_KEY_TYPE, tlen) != 0)
		return -EINVAL;
	if (be32(blob + 4 + tlen) != HK_ED25519_LEN)
		return -EINVAL;
	memcpy(ret_blob, blob, HK_BLOB_LEN);
	return 0;
}

int hostkey_parse(const char *buf, size_t len, char **ret_canonical, struct ws_err *err)
{
	const size_t tlen = sizeof(HK_KEY_TYPE) - 1;
	uint8_t blob[HK_BLOB_LEN];
	const char *nl, *b64;
	size_t i, line, b64len;
	char *enc, *canon;
	int r;

	if (len > HOSTKEY_MAX_BYTES)
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "key file is larger than %d bytes", HOSTKEY_MAX_BYTES);

	/* One line: a newline may only be the very last byte (after an optional \r). */
	nl = memchr(buf, '\n', len);
	if (nl && (size_t)(nl - buf) != len - 1)
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "key file holds more than one line");
	line = nl ? (size_t)(nl - buf) : len;
	if (nl && line > 0 && buf[line - 1] == '\r')
		line--;
	if (line == 0)
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID, "key file holds an empty line");
	for (i = 0; i < line; i++) {
		unsigned char c = (unsigned char)buf[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
				       "key file holds a control character");
	}

	if (line < tlen + 1 || memcmp(buf, HK_KEY_TYPE, tlen) != 0 ||
	    (buf[tlen] != ' ' && buf[tlen] != '\t'))
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "not an " HK_KEY_TYPE " public key line");
	i = tlen;
	while (i < line && (buf[i] == ' ' || buf[i] == '\t'))
		i++;
	b64 = buf + i;
	while (i < line && buf[i] != ' ' && buf[i] != '\t')
		i++;
	b64len = (size_t)(buf + i - b64);
	/* Whatever follows the blob after white space is a comment, and dropped. */

	r = blob_decode(b64, b64len, blob);
	if (r < 0)
		return ws_fail(err, r, WS_E_HOSTKEY_INVALID,
			       "the key is not canonical base64 of an " HK_KEY_TYPE " public key");

	/* Re-encode rather than copy, so only base64 characters can leave this function. */
	enc = b64_encode(blob, sizeof(blob), true);
	if (!enc)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	r = asprintf(&canon, HK_KEY_TYPE " %s", enc);
	free(enc);
	if (r < 0)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	*ret_canonical = canon;
	return 0;
}

int hostkey_fingerprint(const char *canonical, char **ret_fp)
{
	const size_t tlen = sizeof(HK_KEY_TYPE) - 1;
	uint8_t blob[HK_BLOB_LEN], digest[SHA256_DIGEST_SIZE];
	WS_AUTOFREE char *enc = NULL;
	char *fp;
	int r;

	if (!canonical || strncmp(canonical, HK_KEY_TYPE " ", tlen + 1) != 0)
		return -EINVAL;
	r = blob_decode(canonical + tlen + 1, strlen(canonical + tlen + 1), blob);
	if (r < 0)
		return r;
	sha256_digest(blob, sizeof(blob), digest);
	enc = b64_encode(digest, sizeof(digest), false);
	if (!enc)
		return -ENOMEM;
	if (asprintf(&fp, "SHA256:%s", enc) < 0)
		return -ENOMEM;
	*ret_fp = fp;
	return 0;
}

char *hostkey_path(const char *sandbox_root, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s/%s", sandbox_root, name, HOSTKEY_FILE) < 0)
		return NULL;
	return p;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Opens a directory the sandbox may control: a symbolic link there would redirect the
 * read, so it is refused. */
static int open_dir_at(int at, const char *name, const char *path, struct ws_err *err)
{
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int r;

	if (fd >= 0)
		return fd;
	r = -errno;
	if (r == -ENOENT)
		return ws_fail(err, r, WS_E_HOSTKEY_MISSING, "'%s' does not exist", path);
	if (r == -ELOOP || r == -ENOTDIR)
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is a symbolic link or not a directory", path);
	return ws_fail(err, r, WS_E_HOSTKEY_INVALID, "cannot open '%s'", path);
}

static int read_key_at(int dfd, const char *base, const char *path, char **ret_canonical,
		       struct ws_err *err);

int hostkey_read(const char *path, char **ret_canonical, struct ws_err *err)
{
	WS_AUTOCLOSE int dfd = -1;
	WS_AUTOFREE char *dir = NULL;
	const char *base, *slash;

	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	/* Only public keys are ever opened: the private key sits next to this file. */
	if (!ends_with(base, ".pub"))
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is not a public key file name", path);
	dir = slash ? strndup(path, (size_t)(slash == path ? 1 : slash - path)) : strdup(".");
	if (!dir)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	dfd = open_dir_at(AT_FDCWD, dir, dir, err);
	if (dfd < 0)
		return dfd == -ENOENT ? ws_fail(err, dfd, WS_E_HOSTKEY_MISSING,
						"'%s' does not exist", path)
				      : dfd;
	return read_key_at(dfd, base, path, ret_canonical, err);
}

int hostkey_read_under(const char *sandbox_root, const char *name, char **ret_canonical,
		       struct ws_err *err)
{
	WS_AUTOCLOSE int root = -1, nfd = -1, dfd = -1;
	WS_AUTOFREE char *path = hostkey_path(sandbox_root, name);
	int r;

	if (!path)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is not a workspace name", name);
	root = open(sandbox_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		r = -errno;
		return ws_fail(err, r, r == -ENOENT ? WS_E_HOSTKEY_MISSING : WS_E_HOSTKEY_INVALID,
			       "'%s' does not exist", path);
	}
	/* below the (configured, trusted) root every component is the sandbox's own */
	nfd = open_dir_at(root, name, path, err);
	if (nfd < 0)
		return nfd;
	dfd = open_dir_at(nfd, "ssh-host-keys", path, err);
	if (dfd < 0)
		return dfd;
	return read_key_at(dfd, "ssh_host_ed25519_key.pub", path, ret_canonical, err);
}

static int read_key_at(int dfd, const char *base, const char *path, char **ret_canonical,
		       struct ws_err *err)
{
	WS_AUTOCLOSE int fd = -1;
	WS_AUTOFREE char *buf = NULL;
	struct stat st, lst;
	size_t len = 0;
	int r;

	/* Look before opening: opening a device or a fifo can have effects of its own. */
	if (fstatat(dfd, base, &lst, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		if (r == -ENOENT)
			return ws_fail(err, r, WS_E_HOSTKEY_MISSING, "'%s' does not exist", path);
		return ws_fail(err, r, WS_E_HOSTKEY_INVALID, "cannot stat '%s'", path);
	}
	if (S_ISLNK(lst.st_mode))
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is a symbolic link", path);
	if (!S_ISREG(lst.st_mode))
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is not a regular file", path);

	fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		if (r == -ENOENT)
			return ws_fail(err, r, WS_E_HOSTKEY_MISSING, "'%s' does not exist", path);
		if (r == -ELOOP)
			return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
				       "'%s' is a symbolic link", path);
		return ws_fail(err, r, WS_E_HOSTKEY_INVALID, "cannot open '%s'", path);
	}
	/* It may have been swapped between the look and the open. */
	if (fstat(fd, &st) < 0)
		return ws_fail(err, -errno, WS_E_HOSTKEY_INVALID, "cannot stat '%s'", path);
	if (!S_ISREG(st.st_mode))
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is not a regular file", path);
	if (st.st_size > HOSTKEY_MAX_BYTES)
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is larger than %d bytes", path, HOSTKEY_MAX_BYTES);

	/* Read one byte more than allowed, to notice a file that grew after the fstat. */
	buf = malloc(HOSTKEY_MAX_BYTES + 1);
	if (!buf)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	while (len < HOSTKEY_MAX_BYTES + 1) {
		ssize_t n = read(fd, buf + len, HOSTKEY_MAX_BYTES + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ws_fail(err, -errno, WS_E_HOSTKEY_INVALID, "cannot read '%s'", path);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > HOSTKEY_MAX_BYTES)
		return ws_fail(err, -EINVAL, WS_E_HOSTKEY_INVALID,
			       "'%s' is larger than %d bytes", path, HOSTKEY_MAX_BYTES);
	if (len == 0)
		return ws_fail(err, -EAGAIN, WS_E_HOSTKEY_MISSING,
			       "'%s' is empty (still being written?)", path);

	r = hostkey_parse(buf, len, ret_canonical, err);
	if (r < 0 && err)
		snprintf(err->file, sizeof(err->file), "%s", path);
	return r;
}

/* ---- the watcher ---- */

static void hk_report(struct hostkeys *hk, struct ws_err *err)
{
	if (hk->err_cb)
		hk->err_cb(hk->userdata, err);
	ws_err_clear(err);
}

static bool hk_wd_in_use(const struct hostkeys *hk, int wd)
{
	size_t i;

	if (hk->wd_root == wd)
		return true;
	for (i = 0; i < hk->n_names; i++)
		if (hk->names[i].wd_dir == wd || hk->names[i].wd_keys == wd)
			return true;
	return false;
}

/* Points @slot at @wd and drops the watch it held if nothing else uses it. Watches of one
 * inode share a descriptor, so the same number may come back for another path. */
static void hk_set_wd(struct hostkeys *hk, int *slot, int wd)
{
	int old = *slot;

	*slot = wd;
	if (old >= 0 && old != wd && !hk_wd_in_use(hk, old))
		(void)inotify_rm_watch(hk->ifd, old);
}

/* Returns the watch descriptor, -ENOENT when @path is missing or not a directory (it will
 * be followed from above), or another negative errno with @err filled. */
static int hk_add_watch(struct hostkeys *hk, const char *path, uint32_t mask, struct ws_err *err)
{
	int wd = inotify_add_watch(hk->ifd, path, mask);

	if (wd >= 0)
		return wd;
	switch (errno) {
	case ENOENT:
	case ENOTDIR:
	case ELOOP:
		return -ENOENT;
	case ENOSPC:
		/* The kernel says "no space left on device"; the real cause is a sysctl. */
		return ws_fail(err, -ENOSPC, 0,
			       "cannot watch '%s': the inotify watch limit "
			       "fs.inotify.max_user_watches was reached; raise it with "
			       "'sysctl fs.inotify.max_user_watches=524288' (and in "
			       "boot.kernel.sysctl to keep it)",
			       path);
	default:
		return ws_fail(err, -errno, 0, "cannot watch '%s': %s", path, strerror(errno));
	}
}

static void hk_timer_cb(uv_timer_t *handle);

/* Arms (@us > 0) or disarms the short first delay; false when there is no timerfd. */
static bool hk_first_arm(struct hostkeys *hk, long us)
{
	struct itimerspec its = {.it_value = {.tv_sec = 0, .tv_nsec = us * 1000}};

	return hk->first_ok && timerfd_settime(hk->tfd, 0, &its, NULL) == 0;
}

static void hk_mark(struct hostkeys *hk, struct hk_name *e)
{
	uint64_t now = uv_now(hk->loop);
	uint64_t max_wait = (uint64_t)hk->debounce_ms * 20 + 1000;

	uint64_t delay = (uint64_t)hk->debounce_ms;

	e->dirty = true;
	if (hk->closing)
		return;
	if (!hk->pending) {
		/* A lone key is handled almost at once; only a second change within that
		 * moment makes it a burst that waits for the quiet time. */
		hk->pending = true;
		hk->first_pending = now;
		if (hk_first_arm(hk, HK_FIRST_US))
			return;
		delay = 1; /* no timerfd: libuv's shortest timer */
	} else if (now - hk->first_pending >= max_wait) {
		/* A file rewritten without pause must not hold the batch back for ever. */
		return;
	} else {
		(void)hk_first_arm(hk, 0); /* a burst: the quiet time decides */
	}
	(void)uv_timer_start(&hk->timer, hk_timer_cb, delay, 0);
}

static void hk_scan_name(struct hostkeys *hk, struct hk_name *e)
{
	WS_AUTOFREE char *path = hostkey_path(hk->root, e->name);
	struct stat st;

	if (path && lstat(path, &st) == 0)
		hk_mark(hk, e);
}

/* Watches the root, or when it is missing its deepest existing ancestor. */
static int hk_sync_root(struct hostkeys *hk, struct ws_err *err)
{
	WS_AUTOFREE char *anc = NULL;
	int wd;

	wd = hk_add_watch(hk, hk->root, HK_MASK_DIR, err);
	if (wd >= 0) {
		hk_set_wd(hk, &hk->wd_root, wd);
		hk->root_exists = true;
		free(hk->anc);
		hk->anc = NULL;
		return 0;
	}
	if (wd != -ENOENT)
		return wd;

	anc = strdup(hk->root);
	if (!anc)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	for (;;) {
		char *slash = strrchr(anc, '/');

		if (!slash)
			return ws_fail(err, -ENOENT, 0, "no ancestor of '%s' exists", hk->root);
		if (slash == anc)
			slash[1] = '\0';
		else
			*slash = '\0';
		wd = hk_add_watch(hk, anc, HK_MASK_DIR, err);
		if (wd >= 0)
			break;
		if (wd != -ENOENT)
			return wd;
		if (strcmp(anc, "/") == 0)
			return ws_fail(err, -ENOENT, 0, "no ancestor of '%s' exists", hk->root);
	}
	hk_set_wd(hk, &hk->wd_root, wd);
	hk->root_exists = false;
	free(hk->anc);
	hk->anc = ws_steal(&anc);
	return 0;
}

static int hk_sync_name(struct hostkeys *hk, struct hk_name *e, bool rescan, struct ws_err *err)
{
	WS_AUTOFREE char *dir = NULL;
	WS_AUTOFREE char *keys = NULL;
	int wd, old;

	if (!hk->root_exists) {
		hk_set_wd(hk, &e->wd_keys, -1);
		hk_set_wd(hk, &e->wd_dir, -1);
		return 0;
	}
	if (asprintf(&dir, "%s/%s", hk->root, e->name) < 0) {
		dir = NULL;
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	wd = hk_add_watch(hk, dir, HK_MASK_DIR, err);
	if (wd < 0) {
		hk_set_wd(hk, &e->wd_keys, -1);
		hk_set_wd(hk, &e->wd_dir, -1);
		return wd == -ENOENT ? 0 : wd;
	}
	hk_set_wd(hk, &e->wd_dir, wd);

	if (asprintf(&keys, "%s/" HK_KEYS_DIR, dir) < 0) {
		keys = NULL;
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	wd = hk_add_watch(hk, keys, HK_MASK_KEYS, err);
	if (wd < 0) {
		hk_set_wd(hk, &e->wd_keys, -1);
		return wd == -ENOENT ? 0 : wd;
	}
	old = e->wd_keys;
	hk_set_wd(hk, &e->wd_keys, wd);
	/* A directory watched just now may already hold the key: it can have been written
	 * between mkdir and inotify_add_watch, and no event will ever say so. */
	if (old != wd || rescan)
		hk_scan_name(hk, e);
	return 0;
}

/* Brings every watch in line with what exists now. Keeps going after a failure so that one
 * name over the watch limit does not blind the others; returns the first error. */
static int hk_sync_ex(struct hostkeys *hk, bool rescan, bool only_fresh, struct ws_err *err)
{
	bool had_root = hk->root_exists;
	int r, first = 0;
	size_t i;

	if (hk->ifd < 0 || hk->closing)
		return 0;
	r = hk_sync_root(hk, err);
	if (r < 0)
		return r;
	/* names already watched under a root that stays are kept in step by events */
	if (!had_root || !hk->root_exists)
		only_fresh = false;
	for (i = 0; i < hk->n_names; i++) {
		if (only_fresh && !hk->names[i].fresh)
			continue;
		r = hk_sync_name(hk, &hk->names[i], rescan, first < 0 ? NULL : err);
		hk->names[i].fresh = r < 0; /* over the watch limit, say: try again next time */
		if (r < 0 && first == 0)
			first = r;
	}
	return first;
}

static int hk_sync(struct hostkeys *hk, bool rescan, struct ws_err *err)
{
	return hk_sync_ex(hk, rescan, false, err);
}

static const char *hk_name_of(const void *elem)
{
	return ((const struct hk_name *)elem)->name;
}

/* Where @name is in the sorted set, or would go (*ret_pos); true when it is there. */
static bool hk_pos(const struct hostkeys *hk, const char *name, size_t *ret_pos)
{
	return ws_sorted_find(hk->names, hk->n_names, sizeof(*hk->names), hk_name_of, name,
			      ret_pos);
}

static struct hk_name *hk_find(struct hostkeys *hk, const char *name)
{
	size_t pos;

	return hk_pos(hk, name, &pos) ? &hk->names[pos] : NULL;
}

/* The path component below hk->anc on the way to the root. */
static bool hk_is_next_component(const struct hostkeys *hk, const char *name)
{
	size_t alen = strlen(hk->anc), nlen = strlen(name);
	const char *next;

	if (strcmp(hk->anc, "/") == 0)
		alen = 0;
	next = hk->root + alen + 1;
	return strncmp(next, name, nlen) == 0 && (next[nlen] == '/' || next[nlen] == '\0');
}

/* Handles one event; returns true when the watched directories must be brought in line. */
static bool hk_event(struct hostkeys *hk, const struct inotify_event *ev)
{
	const char *name = ev->len > 0 ? ev->name : "";
	bool sync = false;
	size_t i;

	if (ev->mask & IN_IGNORED) {
		/* The kernel dropped the watch (its directory is gone): the number is dead. */
		if (hk->wd_root == ev->wd)
			hk->wd_root = -1;
		for (i = 0; i < hk->n_names; i++) {
			if (hk->names[i].wd_dir == ev->wd)
				hk->names[i].wd_dir = -1;
			if (hk->names[i].wd_keys == ev->wd)
				hk->names[i].wd_keys = -1;
		}
		return true;
	}
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT))
		return true;

	if (ev->wd == hk->wd_root && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
		if (hk->root_exists ? hk_find(hk, name) != NULL : hk_is_next_component(hk, name))
			sync = true;
	}
	for (i = 0; i < hk->n_names; i++) {
		struct hk_name *e = &hk->names[i];

		if (ev->wd == e->wd_dir && (ev->mask & (IN_CREATE | IN_MOVED_TO)) &&
		    strcmp(name, HK_KEYS_DIR) == 0)
			sync = true;
		if (ev->wd != e->wd_keys || strcmp(name, HK_KEY_NAME) != 0)
			continue;
		if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
			hk_mark(hk, e);
		} else if (ev->mask & IN_CREATE) {
			/* A new regular file reports itself when closed; a symbolic link, a hard
			 * link or anything else never will, so report it now. */
			WS_AUTOFREE char *path = hostkey_path(hk->root, e->name);
			struct stat st;

			if (path && lstat(path, &st) == 0 &&
			    (!S_ISREG(st.st_mode) || st.st_nlink > 1))
				hk_mark(hk, e);
		}
	}
	return sync;
}

/* Takes in the events the kernel has queued (never waits for more). */
static void hk_drain(struct hostkeys *hk)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct ws_err err = { 0 };
	bool sync = false, rescan = false;
	int rounds, r;

	if (hk->ifd < 0 || !uv_is_active((uv_handle_t *)&hk->poll))
		return;
	/* Bounded, so that a flood of events cannot keep the loop from everything else. */
	for (rounds = 0; rounds < 16; rounds++) {
		ssize_t n = read(hk->ifd, buf, sizeof(buf));
		char *p;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			(void)ws_fail(&err, r, 0, "cannot read inotify events: %s; "
				      "host keys are no longer watched", strerror(-r));
			/* Level-triggered: polling on would report this on every turn. */
			(void)uv_poll_stop(&hk->poll);
			hk_report(hk, &err);
			return;
		}
		for (p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			if (ev->mask & IN_Q_OVERFLOW) {
				/* Events were lost: look at everything again. */
				sync = rescan = true;
			} else if (hk_event(hk, ev)) {
				sync = true;
			}
			p += sizeof(struct inotify_event) + ev->len;
		}
	}
	if (sync) {
		r = hk_sync(hk, rescan, &err);
		if (r < 0)
			hk_report(hk, &err);
	}
}

static void hk_poll_cb(uv_poll_t *handle, int status, int events)
{
	struct hostkeys *hk = handle->data;
	struct ws_err err = { 0 };

	(void)events;
	if (status < 0) {
		(void)ws_fail(&err, status, 0, "inotify poll failed: %s", uv_strerror(status));
		hk_report(hk, &err);
		return;
	}
	hk_drain(hk);
}

static void hk_fire(struct hostkeys *hk)
{
	WS_AUTOFREE char **names = NULL;
	size_t i, n = 0;

	hk->pending = false;
	if (hk->n_names == 0)
		return;
	names = calloc(hk->n_names, sizeof(*names));
	if (!names)
		return;
	/* Copies: the callback may change the declared names while it runs. */
	for (i = 0; i < hk->n_names; i++) {
		if (!hk->names[i].dirty)
			continue;
		names[n] = strdup(hk->names[i].name);
		if (!names[n])
			break;
		hk->names[i].dirty = false;
		n++;
	}
	if (n > 0 && hk->cb)
		hk->cb(hk->userdata, (const char *const *)names, n);
	for (i = 0; i < n; i++)
		free(names[i]);
}

/* A delay ran out. The loop runs timers before it polls, so changes may be queued in the
 * kernel already: taken in first, they make a burst (which restarts the quiet time) rather
 * than a batch of their own right after this one. */
static void hk_timer_cb(uv_timer_t *handle)
{
	struct hostkeys *hk = handle->data;

	hk_drain(hk);
	if (!uv_is_active((uv_handle_t *)&hk->timer))
		hk_fire(hk);
}

static void hk_first_cb(uv_poll_t *handle, int status, int events)
{
	struct hostkeys *hk = handle->data;
	uint64_t expirations;

	(void)status;
	(void)events;
	if (read(hk->tfd, &expirations, sizeof(expirations)) < 0)
		return; /* not expired after all (disarmed meanwhile) */
	hk_drain(hk); /* as in hk_timer_cb: queued changes first */
	/* a burst that began meanwhile waits for its quiet time instead */
	if (hk->pending && !uv_is_active((uv_handle_t *)&hk->timer) && !hk->closing)
		hk_fire(hk);
}

static void hk_names_free(struct hk_name *names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(names[i].name);
	free(names);
}

static void hk_release(struct hostkeys *hk)
{
	hk_names_free(hk->names, hk->n_names);
	free(hk->root);
	free(hk->anc);
	free(hk);
}

static void hk_close_cb(uv_handle_t *handle)
{
	struct hostkeys *hk = handle->data;

	if (--hk->open_handles > 0)
		return;
	if (hk->ifd >= 0) {
		(void)close(hk->ifd);
		hk->ifd = -1;
	}
	if (hk->tfd >= 0) {
		(void)close(hk->tfd);
		hk->tfd = -1;
	}
	if (hk->done)
		hk->done(hk->done_ud);
	if (hk->free_on_close)
		hk_release(hk);
}

void hostkeys_close(struct hostkeys *hk, void (*done)(void *ud), void *ud)
{
	if (!hk || hk->closing)
		return;
	hk->closing = true;
	hk->done = done;
	hk->done_ud = ud;
	if (hk->open_handles == 0) {
		if (hk->ifd >= 0) {
			(void)close(hk->ifd);
			hk->ifd = -1;
		}
		if (hk->tfd >= 0) {
			(void)close(hk->tfd);
			hk->tfd = -1;
		}
		if (done)
			done(ud);
		return;
	}
	uv_close((uv_handle_t *)&hk->poll, hk_close_cb);
	uv_close((uv_handle_t *)&hk->timer, hk_close_cb);
	if (hk->first_open)
		uv_close((uv_handle_t *)&hk->first, hk_close_cb);
}

void hostkeys_free(struct hostkeys *hk)
{
	if (!hk)
		return;
	if (hk->open_handles > 0) {
		/* Handles still open: their close callbacks free the memory. */
		hk->free_on_close = true;
		hostkeys_close(hk, NULL, NULL);
		return;
	}
	if (hk->ifd >= 0)
		(void)close(hk->ifd);
	if (hk->tfd >= 0)
		(void)close(hk->tfd);
	hk_release(hk);
}

void hostkeys_set_error_cb(struct hostkeys *hk, hostkeys_error_fn cb)
{
	hk->err_cb = cb;
}

int hostkeys_new(uv_loop_t *loop, const char *sandbox_root, int debounce_ms,
		 hostkeys_batch_fn cb, void *userdata, struct hostkeys **ret_hk,
		 struct ws_err *err)
{
	struct hostkeys *hk;
	size_t len;
	int r;

	if (!sandbox_root || sandbox_root[0] != '/')
		return ws_fail(err, -EINVAL, 0, "sandbox root '%s' is not an absolute path",
			       sandbox_root ? sandbox_root : "");
	hk = calloc(1, sizeof(*hk));
	if (!hk)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	hk->loop = loop;
	hk->ifd = -1;
	hk->tfd = -1;
	hk->wd_root = -1;
	hk->debounce_ms = debounce_ms > 0 ? debounce_ms : 1;
	hk->cb = cb;
	hk->userdata = userdata;
	hk->root = strdup(sandbox_root);
	if (!hk->root) {
		hk_release(hk);
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	len = strlen(hk->root);
	while (len > 1 && hk->root[len - 1] == '/')
		hk->root[--len] = '\0';

	hk->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (hk->ifd < 0) {
		r = -errno;
		hk_release(hk);
		if (r == -EMFILE)
			return ws_fail(err, r, 0,
				       "the inotify instance limit fs.inotify.max_user_instances "
				       "was reached; raise it with sysctl");
		return ws_fail(err, r, 0, "cannot create an inotify instance: %s", strerror(-r));
	}

	r = uv_poll_init(loop, &hk->poll, hk->ifd);
	if (r < 0) {
		(void)close(hk->ifd);
		hk_release(hk);
		return ws_fail(err, r, 0, "cannot poll the inotify fd: %s", uv_strerror(r));
	}
	hk->poll.data = hk;
	hk->open_handles++;
	(void)uv_timer_init(loop, &hk->timer);
	hk->timer.data = hk;
	hk->open_handles++;
	/* the short first delay; without a timerfd, libuv's 1 ms timer does */
	hk->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (hk->tfd >= 0 && uv_poll_init(loop, &hk->first, hk->tfd) == 0) {
		hk->first.data = hk;
		hk->first_open = true;
		hk->open_handles++;
		/* on failure the fd stays open with its handle (closed together), unused */
		hk->first_ok = uv_poll_start(&hk->first, UV_READABLE, hk_first_cb) == 0;
	} else if (hk->tfd >= 0) {
		(void)close(hk->tfd);
		hk->tfd = -1;
	}

	r = uv_poll_start(&hk->poll, UV_READABLE, hk_poll_cb);
	if (r < 0) {
		hostkeys_free(hk);
		return ws_fail(err, r, 0, "cannot poll the inotify fd: %s", uv_strerror(r));
	}
	r = hk_sync(hk, false, err);
	if (r < 0) {
		hostkeys_free(hk);
		return r;
	}
	*ret_hk = hk;
	return 0;
}

static bool hk_name_ok(const char *name)
{
	return name && name[0] != '\0' && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
	       !strchr(name, '/');
}

static int cmp_name_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int hostkeys_set_names(struct hostkeys *hk, const char *const *names, size_t n,
		       struct ws_err *err)
{
	const char **sorted;
	struct hk_name *old = hk->names, *next;
	size_t n_old = hk->n_names, n_next = 0, i, j;

	for (i = 0; i < n; i++)
		if (!hk_name_ok(names[i]))
			return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
				       "'%s' cannot name a directory under the sandbox root",
				       names[i] ? names[i] : "");

	/* The set is kept sorted by name, so that a deploy's thousand names cost a sort and
	 * a merge, not a thousand scans. */
	sorted = malloc((n > 0 ? n : 1) * sizeof(*sorted));
	next = calloc(n > 0 ? n : 1, sizeof(*next));
	if (!next || !sorted) {
		free(sorted);
		free(next);
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	memcpy(sorted, names, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_name_ptr);
	for (i = 0; i < n; i++) {
		if (i > 0 && strcmp(sorted[i - 1], sorted[i]) == 0)
			continue; /* listed twice */
		next[n_next].name = strdup(sorted[i]);
		if (!next[n_next].name) {
			/* Nothing changed yet: the old set stays in force. */
			free(sorted);
			hk_names_free(next, n_next);
			return ws_fail(err, -ENOMEM, 0, "out of memory");
		}
		next[n_next].wd_dir = next[n_next].wd_keys = -1;
		next[n_next].fresh = true;
		n_next++;
	}
	free(sorted);
	/* Names that stay keep their watches and their pending change (both lists sorted). */
	for (i = 0, j = 0; i < n_next && j < n_old;) {
		int c = strcmp(old[j].name, next[i].name);

		if (c < 0) {
			j++;
			continue;
		}
		if (c > 0) {
			i++;
			continue;
		}
		next[i].wd_dir = old[j].wd_dir;
		next[i].wd_keys = old[j].wd_keys;
		next[i].dirty = old[j].dirty;
		next[i].fresh = old[j].fresh;
		old[j].wd_dir = old[j].wd_keys = -1;
		i++;
		j++;
	}

	hk->names = next;
	hk->n_names = n_next;
	/* Watches of names no longer declared go, unless a remaining path shares them. */
	for (j = 0; j < n_old; j++) {
		hk_set_wd(hk, &old[j].wd_keys, -1);
		hk_set_wd(hk, &old[j].wd_dir, -1);
	}
	hk_names_free(old, n_old);
	return hk_sync_ex(hk, false, true, err);
}

int hostkeys_add_name(struct hostkeys *hk, const char *name, struct ws_err *err)
{
	struct hk_name *grown;
	size_t lo;
	char *copy;

	if (!hk_name_ok(name))
		return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
			       "'%s' cannot name a directory under the sandbox root",
			       name ? name : "");
	if (hk_pos(hk, name, &lo))
		return 0;
	copy = strdup(name);
	grown = copy ? realloc(hk->names, (hk->n_names + 1) * sizeof(*grown)) : NULL;
	if (!grown) {
		free(copy);
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	hk->names = grown;
	memmove(&grown[lo + 1], &grown[lo], (hk->n_names - lo) * sizeof(*grown));
	grown[lo] = (struct hk_name){.name = copy, .wd_dir = -1, .wd_keys = -1, .fresh = true};
	hk->n_names++;
	return hk_sync_ex(hk, false, true, err);
}
