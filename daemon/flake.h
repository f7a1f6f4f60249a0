/* SPDX-License-Identifier: MIT */
/* The machine file model: reads the workspace entries declared under
 * sandboxed-workspace.workspaces in machines/HOST/default.nix, in any shape users write
 * (nested block, dotted paths, a `workspaces` set, mixed, inside lib.mkIf / lib.mkMerge /
 * lib.mkDefault / lib.mkForce, module `config`), and plans edits on the lossless tree:
 * adding an entry, setting hostKey. An edit is a splice of new text that copies the
 * siblings' indentation, line endings and layout; bytes outside it are never touched, and
 * the result is re-parsed before it is returned. Pure module: buffers in, buffers out. */
#ifndef FLAKE_H
#define FLAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "ws_proto.h"

struct json_object;

/* One declared workspace, as read from the file. */
struct ws_entry {
	char *name;
	char *type;        /* the literal type string, or NULL when not a literal */
	char *ip;          /* literal, or evaluated from a computed expression; NULL if unknown */
	char *ip_expr;     /* the ip's source text when it is not a plain string literal */
	char *config;      /* source text of `config` (e.g. "./workspaces/dev.nix"), or NULL */
	int auto_start;    /* 1, 0 (also when absent), -1 when not a literal bool */
	char *host_key;    /* literal hostKey, or NULL */
	int line;          /* 1-based line where the entry's definition starts */
	struct json_object *extra;    /* owned: every other attribute -> its Nix source text;
				       * NULL while there is none */
	struct json_object *problems; /* owned array of {kind, message} (see ipam_annotate());
				       * NULL while there is none */
};

/* How many problems @e has. */
size_t ws_entry_n_problems(const struct ws_entry *e);
/* Appends {kind, message} to e->problems (made if absent). */
void ws_entry_add_problem(struct ws_entry *e, const char *kind, const char *fmt, ...)
	WS_PRINTF(3, 4);

struct flake;

/* Parses @buf (copied) as the machine file @relpath (used in errors: file, line, column).
 * WS_E_CONFIG_UNPARSABLE on a syntax error. Entries whose shape cannot be read are not
 * fatal: they get a problem. Free with flake_free(). */
int flake_parse(const char *relpath, const char *buf, size_t len, struct flake **ret_flake,
		struct ws_err *err);
void flake_free(struct flake *f);
/* Another owner of @f: each flake_ref() needs one more flake_free(). Counting is not
 * atomic: take and drop references on one thread (the loop). A shared model is read-only:
 * other threads may read it while the loop holds it, as long as nobody changes it. */
struct flake *flake_ref(struct flake *f);

const char *flake_bytes(const struct flake *f, size_t *ret_len);
size_t flake_n_entries(const struct flake *f);
/* Entries in file order. The array belongs to @f; ipam_annotate() may add problems. */
struct ws_entry *flake_entries(struct flake *f);
struct ws_entry *flake_find(struct flake *f, const char *name);

/* What a create adds. */
struct flake_new_entry {
	const char *name;
	enum ws_type type;
	const char *ip;         /* dotted quad */
	bool auto_start;        /* written only when true */
	const char *config;     /* Nix path text, e.g. "./workspaces/dev.nix" */
};

/* Plans the new entry and returns the whole new file (malloc'd) in *ret_buf and *ret_len.
 * Placement: after the last existing entry, in the same form (nested `workspaces.X`,
 * inside a `workspaces = { }` set, or top-level dotted), otherwise inside the existing
 * sandboxed-workspace block, otherwise a new block at the end of the top-level set.
 * Errors: WS_E_EXISTS; WS_E_CONFIG_UNSUPPORTED (file, line, reason) when the target set is
 * not a literal set or the shape cannot be edited safely. */
int flake_add_entry(const struct flake *f, const struct flake_new_entry *e, char **ret_buf,
		    size_t *ret_len, struct ws_err *err);

/* Lets the caller start work on an edit's likely result (write it to a temporary file, say)
 * while the editor checks it by parsing it: @candidate is called with each result before
 * its check, @rejected with the same buffer when the check fails, before the buffer is
 * freed. A result handed back is the last candidate's buffer. Called on the editing
 * thread; either callback may be NULL. */
struct flake_edit_hooks {
	void (*candidate)(void *userdata, const char *buf, size_t len);
	void (*rejected)(void *userdata, const char *buf);
	void *userdata;
};

/* Like flake_add_entry(), and hands back the parse of the new file that was checked (free
 * with flake_free()), so the caller need not parse it again. @hooks may be NULL. */
int flake_add_entry_parsed(const struct flake *f, const struct flake_new_entry *e,
			   const struct flake_edit_hooks *hooks, char **ret_buf, size_t *ret_len,
			   struct flake **ret_flake, struct ws_err *err);

/* Sets `hostKey = "KEY";` in entry @name: replaces an existing literal value, or adds the
 * attribute as the entry's last one. WS_E_NOT_FOUND, WS_E_CONFIG_UNSUPPORTED (the entry is
 * not a literal set, e.g. a function call). */
int flake_set_hostkey(const struct flake *f, const char *name, const char *key, char **ret_buf,
		      size_t *ret_len, struct ws_err *err);

/* Like flake_set_hostkey(), and hands back the checked parse of the new file (free with
 * flake_free()). */
int flake_set_hostkey_parsed(const struct flake *f, const char *name, const char *key,
			     char **ret_buf, size_t *ret_len, struct flake **ret_flake,
			     struct ws_err *err);

/* The contents of every new machines/HOST/workspaces/NAME.nix (static). */
const char *flake_workspace_template(void);

#endif
