/* SPDX-License-Identifier: MIT */
/* Every libgit2 call of the daemon: the repository is opened once and kept open; paths are
 * staged by writing blobs and index entries for exactly those paths, never others. Maps
 * libgit2's codes to our errors (GIT_ELOCKED -> BUSY after a bounded retry). Calls block:
 * run them off the loop thread; calls from several threads wait for each other. */
#ifndef GITSTAGE_H
#define GITSTAGE_H

#include <stdbool.h>
#include <stddef.h>

struct ws_err;
struct gitstage;

/* Opens the repository whose work tree is @workdir. Refuses (GIT_ERROR, clear message) a
 * path that is not a git work tree, and one owned by another uid than ours (naming both
 * uids and the fix: run as the owner, or safe.directory). */
int gitstage_open(const char *workdir, struct gitstage **ret_g, struct ws_err *err);
void gitstage_free(struct gitstage *g);
const char *gitstage_workdir(const struct gitstage *g);   /* absolute, no trailing '/' */
const char *gitstage_index_path(const struct gitstage *g); /* .git/index */

/* The bytes the index holds for @path (relative to the work tree): -ENOENT when the path is
 * not in the index. NUL-terminated, malloc'd. */
int gitstage_read_index(struct gitstage *g, const char *path, char **ret_buf, size_t *ret_len,
			struct ws_err *err);

#define GITSTAGE_ID_LEN 20 /* a SHA-1 object id */

struct gitstage_entry {
	const char *path;  /* relative to the work tree */
	const void *buf;   /* the blob to stage */
	size_t len;
	unsigned mode;     /* 0100644 or 0100755; 0: the mode of the file in the work tree */
	bool have_id;      /* the blob is in the object database already, as @id */
	unsigned char id[GITSTAGE_ID_LEN];
};

/* Writes the blobs of @n entries (those without an id yet) to the object database (no
 * lock needed) and records their ids in the entries, so that a later gitstage_stage() only
 * updates the index. */
int gitstage_write_blobs(struct gitstage *g, struct gitstage_entry *e, size_t n,
			 struct ws_err *err);
/* Makes ahead, off the request's path, the unnamed file the next new blob is written to
 * (best effort; any thread). */
void gitstage_prepare(struct gitstage *g);
/* Whether gitstage_prepare() has something to do. */
bool gitstage_prepare_wanted(const struct gitstage *g);

/* Stages @n entries (a blob each, written unless have_id) in one index write. The index
 * is read again (other git processes may have changed it) and changed under index.lock.
 * While another holds .git/index.lock, retries for up to @lock_wait_ms, then fails with
 * WS_E_BUSY naming the lock file; never removes another's lock. With @ret_change, records
 * what it changed (free with gitstage_change_free(); NULL on failure), so that
 * gitstage_undo() can take back exactly that. Returns 0 or a negative errno. */
struct gitstage_change;
int gitstage_stage(struct gitstage *g, const struct gitstage_entry *e, size_t n,
		   int lock_wait_ms, struct gitstage_change **ret_change, struct ws_err *err);

/* Takes back staging @c (NULL: nothing). When .git/index is still exactly the index that
 * staging wrote, and @snap (gitstage_snapshot_index(); NULL: there was none) is exactly the
 * index it was applied to, @snap goes back byte for byte. Otherwise another git changed the
 * index in between, and only @c's paths are put back as they were, each only while it still
 * holds the blob staged: the other git's work stays. Waits for index.lock like
 * gitstage_stage(). */
int gitstage_undo(struct gitstage *g, const struct gitstage_change *c, const char *snap,
		  size_t snap_len, int lock_wait_ms, struct ws_err *err);
void gitstage_change_free(struct gitstage_change *c);

/* Raw bytes of .git/index (-ENOENT when the repository has no index yet), for
 * gitstage_undo(). */
int gitstage_snapshot_index(struct gitstage *g, char **ret_buf, size_t *ret_len,
			    struct ws_err *err);

#endif
