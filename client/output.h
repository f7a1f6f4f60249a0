/* SPDX-License-Identifier: MIT */
/* wsctl's rendering: aligned tables, "key: value" blocks, pretty JSON, event lines, shell
 * quoting, and the `wsctl: ...` error lines on stderr. It knows nothing of sockets or of
 * which method produced the data; text from the daemon is printed with control characters
 * replaced, so a hostile value cannot drive the terminal. */
#ifndef OUTPUT_H
#define OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ws_macros.h"

struct json_object;
struct out_table;

/* A table of @n_cols columns; @headers (copied) names them. Returns 0 or -ENOMEM. */
int out_table_new(size_t n_cols, const char *const *headers, struct out_table **ret_t);
void out_table_free(struct out_table *t);
void out_table_freep(struct out_table **t);
/* Appends one row of n_cols cells (copied; NULL prints as "-"). Returns 0 or -ENOMEM. */
int out_table_add(struct out_table *t, const char *const *cells);
/* Prints the header and the rows, columns padded to their widest cell (counted in UTF-8
 * characters), two spaces apart, no trailing blanks. */
void out_table_print(const struct out_table *t, FILE *f);

/* Writes @s with every control character (and DEL) shown as '?'. NULL writes "-". */
void out_clean(FILE *f, const char *s);
/* "KEY:" padded to @width, then the cleaned value and a newline; an empty @key pads only
 * (a continuation line). */
void out_kv(FILE *f, int width, const char *key, const char *value);
void out_kvf(FILE *f, int width, const char *key, const char *fmt, ...) WS_PRINTF(4, 5);

/* Pretty-printed (two-space indent) JSON and a newline; compact JSON on one line. */
void out_json(FILE *f, struct json_object *o);
void out_json_line(FILE *f, struct json_object *o);

/* The value of @key in object @o when it has the wanted type, else NULL / false. */
const char *out_jstr(struct json_object *o, const char *key);
struct json_object *out_jobj(struct json_object *o, const char *key);
struct json_object *out_jarr(struct json_object *o, const char *key);
/* Returns true and sets *ret when @key holds a boolean / an integer. */
bool out_jbool(struct json_object *o, const char *key, bool *ret);
bool out_jint(struct json_object *o, const char *key, int64_t *ret);
/* Any JSON value as short text: strings as they are, null as "-", others compact JSON.
 * Returns a malloc'd string, or NULL on allocation failure. */
char *out_jtext(struct json_object *v);

/* `wsctl: MESSAGE` on stderr. */
void out_err(const char *fmt, ...) WS_PRINTF(1, 2);
/* Prints a JSON-RPC error object as `wsctl: [FILE[:LINE[:COLUMN]]: ]MESSAGE (KIND)`, then
 * the detail people need (a verification log tail) indented below. Copes with any shape. */
void out_rpc_error(struct json_object *error);

/* One event notification's params as `TYPE NAME key=value...` (NAME "-" when absent;
 * values with blanks or quotes are JSON-quoted; nested objects and arrays are left out). */
void out_event(FILE *f, struct json_object *params);

/* @s quoted for a POSIX shell when it needs quoting, else copied. malloc'd (NULL: ENOMEM). */
char *out_shell_quote(const char *s);

#endif
