/* SPDX-License-Identifier: MIT */
/* The daemon's own state file ($XDG_STATE_HOME/workspaced/state.json): what the repository
 * cannot hold. The host key first seen per workspace (trust on first use), addresses
 * released recently (not handed out again at once), and a journal of operations in
 * flight. Written atomically through fsutil. */
#ifndef STATE_H
#define STATE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct ws_err;
struct state;

#define STATE_MAX_BYTES (16 * 1024 * 1024)

/* Loads @path; a missing file is an empty state. Corrupt JSON fails with a message naming
 * the file. The path is kept for state_save(). */
int state_load(const char *path, struct state **ret_st, struct ws_err *err);
void state_free(struct state *st);
/* Writes the state atomically (mode 0600). */
int state_save(struct state *st, struct ws_err *err);
/* Serialized bytes, for comparing states in tests and for rollback. malloc'd. */
char *state_dump(const struct state *st);
/* Replaces the in-memory state by a dump (rollback). */
int state_restore(struct state *st, const char *dump, struct ws_err *err);

/* Trust on first use: the registered canonical key of @name, or NULL. */
const char *state_hostkey(const struct state *st, const char *name);
/* Registers (or replaces) the key of @name; @key NULL forgets it. 0, -EINVAL (empty name)
 * or -ENOMEM. */
int state_set_hostkey(struct state *st, const char *name, const char *key);

/* Released addresses are held back for @hold_seconds after release. @ip is in host order;
 * releasing an address again restarts its hold. 0 or -ENOMEM. */
int state_release_ip(struct state *st, uint32_t ip, time_t now);
/* Addresses still held back at @now (now < release + hold), ascending: malloc'd array in
 * *ret (NULL when n is 0, and when out of memory). */
size_t state_held_ips(const struct state *st, time_t now, time_t hold_seconds, uint32_t **ret);
/* Forgets releases whose hold has ended; returns how many. */
size_t state_prune_released(struct state *st, time_t now, time_t hold_seconds);

/* Journal of an operation in flight: set before the first write, cleared when it ends.
 * @op_json must be a JSON object (else -EINVAL); it replaces any previous journal.
 * state_journal() gives it back in canonical form (sorted keys, compact). */
int state_journal_begin(struct state *st, const char *op_json);
void state_journal_end(struct state *st);
const char *state_journal(const struct state *st); /* NULL when none */

#endif
