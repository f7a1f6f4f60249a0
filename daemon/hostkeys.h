/* SPDX-License-Identifier: MIT */
/* Host-key watcher and validation. A raw inotify fd in a uv_poll_t follows
 * SANDBOX_ROOT/NAME/ssh-host-keys/ for every declared workspace as the path comes into
 * existence, reacts to close-after-write and rename-into-place, debounces bursts, and hands
 * the daemon the names whose key file settled, in one batch. Key files are hostile input:
 * opened O_NOFOLLOW, regular files of bounded size, exactly one well-formed ssh-ed25519
 * key whose blob decodes and names the same type; only the canonical "TYPE BASE64" leaves
 * this module. */
#ifndef HOSTKEYS_H
#define HOSTKEYS_H

#include <stddef.h>
#include <uv.h>

struct ws_err;
struct hostkeys;

#define HOSTKEY_FILE "ssh-host-keys/ssh_host_ed25519_key.pub"
#define HOSTKEY_MAX_BYTES 16384

/* Called from the loop with the names whose key file was written, created or renamed into
 * place (debounced), or found by a scan; each name once. @names is borrowed for the call. */
typedef void (*hostkeys_batch_fn)(void *userdata, const char *const *names, size_t n);
/* Called from the loop (with the same userdata) when watching fails after the call that set
 * it up returned: the inotify watch limit reached while following a new directory, a failed
 * inotify read. The directory is retried on the next change above it. Optional. */
typedef void (*hostkeys_error_fn)(void *userdata, const struct ws_err *err);

/* Starts watching @sandbox_root (an absolute path; it need not exist yet) with no names.
 * A first change is reported after 0.3 ms (a timerfd; 1 ms without one); a second one
 * within that time makes a burst, reported once @debounce_ms pass without another change
 * (the daemon uses 10), so a deploy that writes many keys at once ends in one batch.
 * Returns 0, -EINVAL for a relative root, or the errno of inotify_init1()/libuv. */
int hostkeys_new(uv_loop_t *loop, const char *sandbox_root, int debounce_ms,
		 hostkeys_batch_fn cb, void *userdata, struct hostkeys **ret_hk,
		 struct ws_err *err);
/* The watched set follows the declarations: names not watched yet are watched and scanned
 * at once (a key file that exists is reported in the next batch); names no longer declared
 * are dropped. -EINVAL (WS_E_NAME_INVALID) for a name that is not one path component;
 * -ENOSPC when the inotify watch limit is reached (the message names
 * fs.inotify.max_user_watches): the names are kept and retried on the next change. */
int hostkeys_set_names(struct hostkeys *hk, const char *const *names, size_t n,
		       struct ws_err *err);
/* hostkeys_set_names() with the current set plus @name, without sorting the whole set
 * again (a create adds one name): a name already watched is left as it is. */
int hostkeys_add_name(struct hostkeys *hk, const char *name, struct ws_err *err);
void hostkeys_set_error_cb(struct hostkeys *hk, hostkeys_error_fn cb);
/* Closes the poll handle and the timer; @done (may be NULL) once they are closed. */
void hostkeys_close(struct hostkeys *hk, void (*done)(void *ud), void *ud);
/* Frees @hk (NULL is fine). Call it from @done or later; called earlier, it closes the
 * handles and frees the memory once their close callbacks have run. */
void hostkeys_free(struct hostkeys *hk);

/* SANDBOX_ROOT/NAME/ssh-host-keys/ssh_host_ed25519_key.pub (malloc'd). */
char *hostkey_path(const char *sandbox_root, const char *name);
/* Reads and validates a key file: O_NOFOLLOW, regular file, at most HOSTKEY_MAX_BYTES.
 * Only names ending in ".pub" are opened, and the directory holding the file must not be a
 * symbolic link either (the sandbox writes there). Ownership of *ret_canonical passes to
 * the caller.
 * -ENOENT (WS_E_HOSTKEY_MISSING) when absent, -EINVAL (WS_E_HOSTKEY_INVALID) otherwise.
 * An empty file is -EAGAIN (WS_E_HOSTKEY_MISSING): its content may still be coming. */
int hostkey_read(const char *path, char **ret_canonical, struct ws_err *err);
/* Like hostkey_read() for SANDBOX_ROOT/NAME/ssh-host-keys/ssh_host_ed25519_key.pub, with
 * every component below the root opened O_NOFOLLOW: a NAME or ssh-host-keys that is a
 * symbolic link is refused (WS_E_HOSTKEY_INVALID), and so is a NAME with '/' or dots. */
int hostkey_read_under(const char *sandbox_root, const char *name, char **ret_canonical,
		       struct ws_err *err);
/* Validates text: exactly one line "ssh-ed25519 BASE64 [comment]" (CRLF and a missing final
 * newline accepted), base64 decoding to string "ssh-ed25519" + a 32-byte key and nothing
 * else. Returns the canonical "ssh-ed25519 BASE64". */
int hostkey_parse(const char *buf, size_t len, char **ret_canonical, struct ws_err *err);
/* "SHA256:..." as ssh-keygen -l prints it (unpadded base64 of the blob's SHA-256), malloc'd.
 * -EINVAL when @canonical is not a canonical ssh-ed25519 key, -ENOMEM. */
int hostkey_fingerprint(const char *canonical, char **ret_fp);

#endif
