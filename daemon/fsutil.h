/* SPDX-License-Identifier: MIT */
/* File helpers: capped reads, atomic replacement (temp file in the same directory, fsync,
 * rename, fsync of the directory), create-never-overwrite. The only place that renames.
 * Blocking calls: run them off the loop thread for anything large or on slow disks. */
#ifndef FSUTIL_H
#define FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct ws_err;

#define FSUTIL_NEW 0x1     /* fail with -EEXIST (WS_E_FILE_EXISTS) rather than replace */
#define FSUTIL_PRIVATE 0x2 /* mode 0600 whatever the old file's mode (the state file) */
#define FSUTIL_NO_DIR_SYNC 0x4 /* the caller fsyncs the directory (fsutil_sync_parent) */

/* Reads at most @max bytes of the regular file @path; -EFBIG if it is larger, -EISDIR for a
 * directory, -EINVAL for anything else that is not a regular file (a FIFO is never waited
 * on). The buffer is NUL-terminated (not counted in *ret_len). Returns 0 or a negative
 * errno (-ENOENT, ...). */
int fsutil_read(const char *path, size_t max, char **ret_buf, size_t *ret_len);
/* Like fsutil_read() on an already-open fd (read from its current offset). */
int fsutil_read_fd(int fd, size_t max, char **ret_buf, size_t *ret_len);

/* Atomically replaces (or with FSUTIL_NEW creates) @path with @len bytes of @buf: a
 * `.<name>.XXXXXX` temporary in the same directory, written, fsync'd, given the old file's
 * mode and owner (0644 for a new file, less the umask), renamed over the target
 * (renameat2 RENAME_NOREPLACE for FSUTIL_NEW), then the directory fsync'd. On failure the
 * temporary is removed and the target is untouched. Fills @err (FILE_EXISTS for an existing
 * file under FSUTIL_NEW). Returns 0 or a negative errno. */
int fsutil_replace(const char *path, const void *buf, size_t len, int flags,
		   struct ws_err *err);

/* A temporary for fsutil_tmp_fill(), which may be made beforehand, so that creating it (an
 * inode to allocate) can happen off the write's critical path. */
struct fsutil_tmp {
	char *path; /* owned; NULL when none (or while unnamed) */
	int fd;     /* -1 when none */
	bool unnamed; /* fd is an O_TMPFILE (fsutil_tmp_prepare()): no name yet */
	char *pre;  /* owned; what an unnamed one holds, synced (fsutil_tmp_prefill()) */
	size_t pre_len;
};
/* Creates the `.<name>.XXXXXX` temporary next to @path (fd -1 and path NULL on failure). */
int fsutil_tmp_make(const char *path, struct fsutil_tmp *t, struct ws_err *err);
/* An unnamed temporary (O_TMPFILE) on @dir's file system, made ahead of a write: nobody
 * sees it, it vanishes with the process, and the inode it needs is allocated before the
 * write instead of during it. fsutil_tmp_fill() writes it, names it (`.<name>.XXXXXX`
 * next to its target) and syncs it; fsutil_tmp_link_new() gives it its final name. Returns
 * 0, or a negative errno (the file system has no O_TMPFILE, say: then @t stays empty and
 * the write makes a named temporary as usual). */
int fsutil_tmp_prepare(const char *dir, struct fsutil_tmp *t);
/* Writes @len bytes of @buf into a prepared temporary (fsutil_tmp_prepare()), gives it the
 * mode a new file gets (0644 less the umask) and fsyncs it: a new file's content, ready to
 * be named at once with fsutil_tmp_link_new(). */
int fsutil_tmp_preset(struct fsutil_tmp *t, const void *buf, size_t len);
/* Writes @len bytes of @buf (owned from now on, also on failure) into a prepared temporary
 * and syncs them: a likely version of the file, such as the one it replaces. Its
 * fsutil_tmp_fill() then writes only from the first byte that differs (and truncates), so
 * the sync in the fill has little left to write. The file is never named with these bytes. */
int fsutil_tmp_prefill(struct fsutil_tmp *t, char *buf, size_t len);
/* How many bytes @a and @b (@n each) have in common from the start. */
size_t fsutil_common_prefix(const char *a, const char *b, size_t n);
/* Names a preset temporary @path (linkat), never replacing a file (-EEXIST,
 * WS_E_FILE_EXISTS), and, unless FSUTIL_NO_DIR_SYNC, fsyncs the directory. Its content was
 * synced before it had a name, so no reader ever sees it half written: the steps of
 * fsutil_replace() with a link for the rename. *ret_linked tells whether @path is now the
 * file (also when the directory's sync failed). @t is used up either way. */
int fsutil_tmp_link_new(const char *path, struct fsutil_tmp *t, int flags, bool *ret_linked,
			struct ws_err *err);
/* Removes the temporary (made or filled) unless it was renamed into place. */
void fsutil_tmp_drop(struct fsutil_tmp *t);
/* fsutil_replace() in two halves, so that the slow first one can run before the caller
 * has decided to go on. Fill: @t (made now unless it holds an open temporary) gets @buf,
 * the old file's mode and owner, is fsync'd and closed; it keeps its path. Nothing at @path
 * changes; on failure the temporary is removed. Commit: renames the filled temporary over
 * @path (never replacing a file under FSUTIL_NEW) and fsyncs the directory unless
 * FSUTIL_NO_DIR_SYNC; @t is used up either way. Drop a filled temporary that is not wanted
 * with fsutil_tmp_drop(). */
int fsutil_tmp_fill(const char *path, const void *buf, size_t len, int flags,
		    struct fsutil_tmp *t, struct ws_err *err);
int fsutil_tmp_commit(const char *path, struct fsutil_tmp *t, int flags, struct ws_err *err);
/* fsutil_tmp_commit() of a replacement, only while @path holds exactly @old (@old_len
 * bytes): the temporary and the file are exchanged in one step (renameat2
 * RENAME_EXCHANGE), the file swapped out is compared with @old, and on a difference
 * swapped back (-EAGAIN; the file in place is the changed one, untouched; should yet
 * another version have been saved at @path in between, it is left at the temporary's name,
 * which @err's data gives as "keptAt", never removed). A file system
 * that cannot exchange gets the comparison just before a plain rename. On success
 * *ret_old_fd (unless NULL) holds the replaced file open, its name already removed. */
int fsutil_tmp_commit_if(const char *path, struct fsutil_tmp *t, const void *old,
			 size_t old_len, int flags, int *ret_old_fd, struct ws_err *err);
/* Tests only (NULL otherwise): called by fsutil_tmp_commit_if() right after its exchange,
 * to change the files in the moment the check guards. */
extern void (*fsutil_test_exchanged)(const char *path, const char *tmp);
/* Tests only (false otherwise): behave as on a file system that cannot exchange. */
extern bool fsutil_test_no_exchange;
/* Tests only (false otherwise): unnamed temporaries cannot be named (as without /proc). */
extern bool fsutil_test_no_link;

/* Reads the umask once, while the process has one thread, for every later new file: code
 * that sets a umask for a moment (the socket's bind) cannot then leak it into a file made
 * on another thread in that moment. */
void fsutil_umask_keep(void);
/* The umask new files get (the kept one, after fsutil_umask_keep()). */
mode_t fsutil_umask(void);
/* Gives the unnamed file @fd (O_TMPFILE) the name @path; -EEXIST when it is taken. */
int fsutil_link_unnamed(int fd, const char *path);
/* Whether fsutil_link_unnamed() can work here (/proc is mounted). */
bool fsutil_can_link_unnamed(void);
/* Removes the temporaries a process that died mid-write left in @dir: regular files of
 * ours named `.<base>.XXXXXX` as fsutil_tmp_make() names them (the six characters not all
 * small letters). Only for a directory nobody else writes such files into (the daemon
 * holds the repository's lock). @removed (may be NULL) is told each path. Returns how
 * many, or a negative errno. */
int fsutil_remove_stale_tmps(const char *dir, const char *base, void (*removed)(const char *path));
/* write() until all of @buf is written (EINTR retried). Returns 0 or a negative errno. */
int fsutil_write_all(int fd, const void *buf, size_t len);
/* Removes @path (a file we created) and fsyncs its directory. -ENOENT is not an error. */
int fsutil_remove(const char *path);
/* fsync()s the directory holding @path (after FSUTIL_NO_DIR_SYNC). */
int fsutil_sync_parent(const char *path);
/* mkdir -p with @mode (less the umask) for each created component; existing directories
 * are fine, a non-directory in the way is -ENOTDIR. */
int fsutil_mkdir_p(const char *path, mode_t mode);
/* join "a" "b" -> "a/b" (malloc'd, NULL when out of memory); no doubled '/'. */
char *fsutil_join(const char *a, const char *b);

#endif
