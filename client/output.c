/* SPDX-License-Identifier: MIT */
/* wsctl's rendering of daemon data for people: aligned tables, key/value blocks, event
 * lines and error lines, plus pretty JSON for scripts. Every value that came from the daemon
 * goes through out_clean(), so control characters never reach the terminal. It does no
 * I/O besides writing to the FILE it is given, and decides nothing about exit codes. */
#include "output.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ws_proto.h"

struct out_table {
	size_t n_cols;
	size_t n_rows;       /* including the header row */
	size_t cap_rows;
	char **cells;        /* owned: n_rows * n_cols strings, row-major */
};

static char *xstrdup_or_dash(const char *s)
{
	return strdup(s ? s : "-");
}

int out_table_new(size_t n_cols, const char *const *headers, struct out_table **ret_t)
{
	struct out_table *t;
	int r;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->n_cols = n_cols;
	r = out_table_add(t, headers);
	if (r < 0) {
		out_table_free(t);
		return r;
	}
	*ret_t = t;
	return 0;
}

void out_table_free(struct out_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t);
}

void out_table_freep(struct out_table **t)
{
	out_table_free(*t);
	*t = NULL;
}

int out_table_add(struct out_table *t, const char *const *cells)
{
	char **row;

	if (t->n_rows == t->cap_rows) {
		size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
		char **c = realloc(t->cells, cap * t->n_cols * sizeof(*c));

		if (!c)
			return -ENOMEM;
		t->cells = c;
		t->cap_rows = cap;
	}
	row = t->cells + t->n_rows * t->n_cols;
	for (size_t i = 0; i < t->n_cols; i++) {
		row[i] = xstrdup_or_dash(cells[i]);
		if (!row[i]) {
			while (i-- > 0)
				free(row[i]);
			return -ENOMEM;
		}
	}
	t->n_rows++;
	return 0;
}

/* Display width in characters: UTF-8 continuation bytes do not count. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

void out_table_print(const struct out_table *t, FILE *f)
{
	WS_AUTOFREE size_t *width = calloc(t->n_cols ? t->n_cols : 1, sizeof(*width));

	if (!width)
		return;
	for (size_t r = 0; r < t->n_rows; r++)
		for (size_t c = 0; c < t->n_cols; c++) {
			size_t w = text_width(t->cells[r * t->n_cols + c]);

			if (w > width[c])
				width[c] = w;
		}
	for (size_t r = 0; r < t->n_rows; r++) {
		for (size_t c = 0; c < t->n_cols; c++) {
			const char *cell = t->cells[r * t->n_cols + c];

			out_clean(f, cell);
			if (c + 1 < t->n_cols)
				fprintf(f, "%*s", (int)(width[c] - text_width(cell) + 2), "");
		}
		fputc('\n', f);
	}
}

void out_clean(FILE *f, const char *s)
{
	if (!s) {
		fputc('-', f);
		return;
	}
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
	}
}

void out_kv(FILE *f, int width, const char *key, const char *value)
{
	/* an empty key continues the previous value on a new line */
	int n = key[0] ? fprintf(f, "%s:", key) : 0;

	fprintf(f, "%*s", n < width ? width - n : 1, "");
	out_clean(f, value);
	fputc('\n', f);
}

void out_kvf(FILE *f, int width, const char *key, const char *fmt, ...)
{
	WS_AUTOFREE char *s = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0) {
		s = NULL;
		return;
	}
	out_kv(f, width, key, s);
}

void out_json(FILE *f, struct json_object *o)
{
	fprintf(f, "%s\n",
		json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
							  JSON_C_TO_STRING_SPACED |
							  JSON_C_TO_STRING_NOSLASHESCAPE));
}

void out_json_line(FILE *f, struct json_object *o)
{
	fprintf(f, "%s\n",
		json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							  JSON_C_TO_STRING_NOSLASHESCAPE));
}

static struct json_object *jget(struct json_object *o, const char *key, enum json_type type)
{
	struct json_object *v;

	if (!o || !json_object_is_type(o, json_type_object))
		return NULL;
	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
		return NULL;
	return v;
}

const char *out_jstr(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key, json_type_string);

	return v ? json_object_get_string(v) : NULL;
}

struct json_object *out_jobj(struct json_object *o, const char *key)
{
	return jget(o, key, json_type_object);
}

struct json_object *out_jarr(struct json_object *o, const char *key)
{
	return jget(o, key, json_type_array);
}

bool out_jbool(struct json_object *o, const char *key, bool *ret)
{
	struct json_object *v = jget(o, key, json_type_boolean);

	if (!v)
		return false;
	*ret = json_object_get_boolean(v);
	return true;
}

bool out_jint(struct json_object *o, const char *key, int64_t *ret)
{
	struct json_object *v = jget(o, key, json_type_int);

	if (!v)
		return false;
	*ret = json_object_get_int64(v);
	return true;
}

char *out_jtext(struct json_object *v)
{
	if (!v)
		return strdup("-");
	if (json_object_is_type(v, json_type_string))
		return strdup(json_object_get_string(v));
	return strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
								JSON_C_TO_STRING_NOSLASHESCAPE));
}

void out_err(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("wsctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Names for the JSON-RPC standard errors, which carry no kind of their own. */
static const char *rpc_code_name(int64_t code)
{
	switch (code) {
	case WS_RPC_PARSE_ERROR:
		return "parse error";
	case WS_RPC_INVALID_REQUEST:
		return "invalid request";
	case WS_RPC_METHOD_NOT_FOUND:
		return "method not found";
	case WS_RPC_INVALID_PARAMS:
		return "invalid params";
	case WS_RPC_INTERNAL_ERROR:
		return "internal error";
	default:
		return NULL;
	}
}

void out_rpc_error(struct json_object *error)
{
	struct json_object *data = out_jobj(error, "data");
	const char *msg = out_jstr(error, "message");
	const char *kind = out_jstr(data, "kind");
	const char *file = out_jstr(data, "file");
	const char *log = out_jstr(data, "log");
	int64_t code = 0, line = 0, column = 0, status;
	bool has_code = out_jint(error, "code", &code);

	if (!kind && has_code)
		kind = ws_err_kind((int)code);
	if (!kind && has_code)
		kind = rpc_code_name(code);
	(void)out_jint(data, "line", &line);
	(void)out_jint(data, "column", &column);

	fflush(stdout);
	fputs("wsctl: ", stderr);
	/* a position prefix, unless the message names the file itself (and no position) */
	if (file && file[0] && (line > 0 || !msg || !strstr(msg, file))) {
		out_clean(stderr, file);
		if (line > 0)
			fprintf(stderr, ":%" PRId64, line);
		if (line > 0 && column > 0)
			fprintf(stderr, ":%" PRId64, column);
		fputs(": ", stderr);
	}
	out_clean(stderr, msg ? msg : "the daemon reported an error without a message");
	if (kind) {
		fputs(" (", stderr);
		out_clean(stderr, kind);
		fputc(')', stderr);
	} else if (has_code) {
		fprintf(stderr, " (code %" PRId64 ")", code);
	}
	fputc('\n', stderr);

	if (out_jint(data, "exitStatus", &status))
		fprintf(stderr, "wsctl: the command exited with status %" PRId64 "\n", status);
	if (log && log[0]) {
		/* the log tail keeps its newlines; each line is indented and cleaned */
		const char *p = log;

		fputs("wsctl: log tail:\n", stderr);
		while (*p) {
			const char *nl = strchr(p, '\n');
			size_t n = nl ? (size_t)(nl - p) : strlen(p);
			WS_AUTOFREE char *one = strndup(p, n);

			fputs("    ", stderr);
			out_clean(stderr, one ? one : "");
			fputc('\n', stderr);
			p += n;
			if (*p == '\n')
				p++;
		}
	}
}

static bool needs_json_quote(const char *s)
{
	if (!s[0])
		return true;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch <= ' ' || ch == '"' || ch == '\\' || ch == 0x7f)
			return true;
	}
	return false;
}

void out_event(FILE *f, struct json_object *params)
{
	const char *type = out_jstr(params, "type");
	const char *name = out_jstr(params, "name");

	out_clean(f, type ? type : "?");
	fputc(' ', f);
	out_clean(f, name ? name : "-");
	if (params && json_object_is_type(params, json_type_object)) {
		json_object_object_foreach(params, k, v)
		{
			WS_AUTOFREE char *text = NULL;

			/* nested objects (a whole Workspace) do not fit a line: --json has them */
			if (!strcmp(k, "type") || !strcmp(k, "name") ||
			    json_object_is_type(v, json_type_object) ||
			    json_object_is_type(v, json_type_array))
				continue;
			fputc(' ', f);
			out_clean(f, k);
			fputc('=', f);
			if (json_object_is_type(v, json_type_string) &&
			    needs_json_quote(json_object_get_string(v))) {
				/* a JSON string literal shows blanks and escapes unambiguously */
				out_clean(f, json_object_to_json_string_ext(
						     v, JSON_C_TO_STRING_PLAIN |
								JSON_C_TO_STRING_NOSLASHESCAPE));
				continue;
			}
			text = out_jtext(v);
			out_clean(f, text ? text : "?");
		}
	}
	fputc('\n', f);
}

char *out_shell_quote(const char *s)
{
	static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				   "0123456789@%+=:,./_-#";
	size_t n = 0;
	char *q, *p;

	if (s[0] && s[0] != '#' && strspn(s, safe) == strlen(s))
		return strdup(s);
	for (const char *c = s; *c; c++)
		n += *c == '\'' ? 4 : 1;
	q = malloc(n + 3);
	if (!q)
		return NULL;
	p = q;
	*p++ = '\'';
	for (const char *c = s; *c; c++) {
		if (*c == '\'') {
			memcpy(p, "'\\''", 4);
			p += 4;
		} else {
			*p++ = *c;
		}
	}
	*p++ = '\'';
	*p = '\0';
	return q;
}
