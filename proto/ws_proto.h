/* SPDX-License-Identifier: MIT */
/* What the daemon and the client share: protocol version, method flags, error codes and
 * kinds, parameter keys, workspace types and naming rules, and line framing. */
#ifndef WS_PROTO_H
#define WS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws_macros.h"

struct json_object;

#define WS_VERSION "0.1.0"
#define WS_PROTO_VERSION 1
#define WS_MAX_MESSAGE_DEFAULT (1024 * 1024) /* bytes in one framed message */
#define WS_SOCKET_NAME "workspaced.sock"
#define WS_SOCKET_PATH_MAX 107 /* sun_path is 108 bytes with the NUL */

/* Method flags (ws_methods.def). */
#define WS_M_WRITE 0x1 /* changes the repository: runs one at a time, in arrival order */

/* JSON-RPC 2.0 standard error codes. */
#define WS_RPC_PARSE_ERROR -32700
#define WS_RPC_INVALID_REQUEST -32600
#define WS_RPC_METHOD_NOT_FOUND -32601
#define WS_RPC_INVALID_PARAMS -32602
#define WS_RPC_INTERNAL_ERROR -32603

enum ws_errcode {
	WS_E_NONE = 0,
#define WS_ERROR(kind, code, text) WS_E_##kind = code,
#include "ws_errors.def"
#undef WS_ERROR
};

/* Parameter and result keys. */
#define WS_KEY_NAME "name"
#define WS_KEY_TYPE "type"
#define WS_KEY_IP "ip"
#define WS_KEY_AUTOSTART "autoStart"
#define WS_KEY_VERIFY "verify"
#define WS_KEY_DRYRUN "dryRun"
#define WS_KEY_REPLACE "replace"

/* A failure that means something to a client. Filled only on failure; travels explicitly
 * (never a global), since git work runs on the thread pool. */
struct ws_err {
	int code;                  /* enum ws_errcode or a JSON-RPC code; 0: none (-32603) */
	char message[1024];        /* for people */
	char file[512];            /* "" when not about a file */
	int line, column;          /* 1-based; 0 when unknown */
	struct json_object *data;  /* owned; extra detail keys (name, ip, ...), may be NULL */
};

/* Fills @err (if not NULL) and returns @r, so that a failure is one statement:
 *   return ws_fail(err, -EINVAL, WS_E_NAME_INVALID, "name \"%s\" ...", name); */
int ws_fail(struct ws_err *err, int r, int code, const char *fmt, ...) WS_PRINTF(4, 5);
int ws_fail_at(struct ws_err *err, int r, int code, const char *file, int line, int column,
	       const char *fmt, ...) WS_PRINTF(7, 8);
#define WS_ERR_VALUE_MAX 256 /* bytes of a string detail kept (user input is echoed) */

/* Adds a detail key to err->data (string / integer). No-op when @err is NULL. Strings are
 * cut to WS_ERR_VALUE_MAX bytes (at a character boundary). */
void ws_err_set_str(struct ws_err *err, const char *key, const char *value);
void ws_err_set_int(struct ws_err *err, const char *key, int64_t value);
void ws_err_clear(struct ws_err *err);
/* Moves @src into @dst (dst cleared first), leaving @src empty. */
void ws_err_move(struct ws_err *dst, struct ws_err *src);
/* "NAME_INVALID" for 1001, ... ; NULL for codes that have no kind. */
const char *ws_err_kind(int code);
/* The JSON-RPC error object: {code, message, data: {kind, file, line, column, ...}}.
 * Returns a new reference. */
struct json_object *ws_err_to_json(const struct ws_err *err);

/* Workspace types. */
enum ws_type { WS_TYPE_VM, WS_TYPE_CONTAINER, WS_TYPE_INCUS, WS_TYPE_COUNT };
/* Returns the type, or -EINVAL. */
int ws_type_from_string(const char *s);
const char *ws_type_to_string(enum ws_type t);
/* Longest allowed name for the type (vm 12, container 11, incus 53). */
size_t ws_type_name_max(enum ws_type t);
/* "container@NAME.service" etc. Returns a new string. */
char *ws_unit_name(enum ws_type t, const char *name);

/* Checks the naming rules for @type; on failure fills @err with WS_E_NAME_INVALID and a
 * message that names the rule (and the limit). Returns 0 or -EINVAL. */
int ws_name_validate(const char *name, enum ws_type type, struct ws_err *err);
/* True when NAME is a plain Nix identifier (no quoting needed in an attribute path). */
bool ws_nix_ident_ok(const char *name);

/* Newline framing: one JSON text per line, with a size cap. */
struct ws_linebuf {
	char *buf;
	size_t len, cap;
	size_t max; /* longest line accepted, without its newline */
};
void ws_linebuf_init(struct ws_linebuf *lb, size_t max);
void ws_linebuf_free(struct ws_linebuf *lb);
/* Appends @data and calls @cb for each complete line (NUL-terminated, without "\n" or a
 * trailing "\r"). A callback returning < 0 stops feeding and that value is returned.
 * Returns 0, or -EMSGSIZE as soon as a line is longer than lb->max. */
int ws_linebuf_feed(struct ws_linebuf *lb, const char *data, size_t len,
		    int (*cb)(void *userdata, char *line, size_t len), void *userdata);

/* A growing string: every call appends; after an allocation failure @oom is set and the
 * buffer stops growing (callers check it once, at the end). @s is NUL-terminated. */
struct ws_buf {
	char *s;      /* owned; NULL until something is added */
	size_t len, cap;
	bool oom;
};
void ws_buf_add(struct ws_buf *b, const char *s, size_t n);
void ws_buf_puts(struct ws_buf *b, const char *s);
void ws_buf_printf(struct ws_buf *b, const char *fmt, ...) WS_PRINTF(2, 3);

/* json-c cleanup for WS_AUTO(json_putp). */
void json_putp(struct json_object **o);

/* Binary search of an array sorted by name (strcmp): @n elements of @size bytes from @base,
 * @name_of giving each one's name. Where @name is, or would go (*ret_pos); true when it is
 * there. */
/* Whether @len bytes of @s are well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
bool ws_utf8_valid(const char *s, size_t len);

bool ws_sorted_find(const void *base, size_t n, size_t size,
		    const char *(*name_of)(const void *elem), const char *name, size_t *ret_pos);

#endif
