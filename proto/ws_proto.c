// SPDX-License-Identifier: MIT
/* Shared protocol helpers: error objects, workspace types and naming rules, line framing.
 * Nothing here does I/O; the daemon and wsctl both link it. */
#include "ws_proto.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

void json_putp(struct json_object **o)
{
	if (*o)
		json_object_put(*o);
	*o = NULL;
}

/* Length of @s cut to at most @max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
		max--;
	return max;
}

static int vfail(struct ws_err *err, int r, int code, const char *file, int line, int column,
		 const char *fmt, va_list ap) __attribute__((format(printf, 7, 0)));
static int vfail(struct ws_err *err, int r, int code, const char *file, int line, int column,
		 const char *fmt, va_list ap)
{
	if (!err)
		return r;
	ws_err_clear(err);
	err->code = code;
	if (vsnprintf(err->message, sizeof(err->message), fmt, ap) >= (int)sizeof(err->message))
		/* truncated: never end in half a character */
		err->message[utf8_cut(err->message, strlen(err->message),
				      sizeof(err->message) - 4)] = '\0';
	if (file)
		snprintf(err->file, sizeof(err->file), "%s", file);
	err->line = line;
	err->column = column;
	return r;
}

int ws_fail(struct ws_err *err, int r, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	r = vfail(err, r, code, NULL, 0, 0, fmt, ap);
	va_end(ap);
	return r;
}

int ws_fail_at(struct ws_err *err, int r, int code, const char *file, int line, int column,
	       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	r = vfail(err, r, code, file, line, column, fmt, ap);
	va_end(ap);
	return r;
}

static struct json_object *err_data(struct ws_err *err)
{
	if (!err->data)
		err->data = json_object_new_object();
	return err->data;
}

void ws_err_set_str(struct ws_err *err, const char *key, const char *value)
{
	if (!err)
		return;
	/* data now owns the new string; user input echoed back is capped */
	json_object_object_add(err_data(err), key,
			       value ? json_object_new_string_len(
					       value, (int)utf8_cut(value, strlen(value),
								    WS_ERR_VALUE_MAX))
				     : NULL);
}

void ws_err_set_int(struct ws_err *err, const char *key, int64_t value)
{
	if (!err)
		return;
	json_object_object_add(err_data(err), key, json_object_new_int64(value));
}

void ws_err_clear(struct ws_err *err)
{
	if (!err)
		return;
	json_putp(&err->data);
	memset(err, 0, sizeof(*err));
}

void ws_err_move(struct ws_err *dst, struct ws_err *src)
{
	ws_err_clear(dst);
	*dst = *src;
	memset(src, 0, sizeof(*src));
}

const char *ws_err_kind(int code)
{
	switch (code) {
#define WS_ERROR(kind, c, text)                                                                    \
	case c:                                                                                    \
		return #kind;
#include "ws_errors.def"
#undef WS_ERROR
	default:
		return NULL;
	}
}

struct json_object *ws_err_to_json(const struct ws_err *err)
{
	struct json_object *o = json_object_new_object();
	struct json_object *data = NULL;
	int code = err->code ? err->code : WS_RPC_INTERNAL_ERROR;
	const char *kind = ws_err_kind(code);

	json_object_object_add(o, "code", json_object_new_int(code));
	json_object_object_add(o, "message",
			       json_object_new_string(err->message[0] ? err->message
								      : "internal error"));
	if (kind || err->file[0] || err->data) {
		data = json_object_new_object();
		if (kind)
			json_object_object_add(data, "kind", json_object_new_string(kind));
		if (err->file[0])
			json_object_object_add(data, "file", json_object_new_string(err->file));
		if (err->line > 0)
			json_object_object_add(data, "line", json_object_new_int(err->line));
		if (err->column > 0)
			json_object_object_add(data, "column", json_object_new_int(err->column));
		if (err->data) {
			json_object_object_foreach(err->data, k, v)
			{
				/* data now owns a new reference to v */
				json_object_object_add(data, k, json_object_get(v));
			}
		}
		json_object_object_add(o, "data", data); /* o now owns data */
	}
	return o;
}

static const char *const type_names[WS_TYPE_COUNT] = {"vm", "container", "incus"};
static const size_t type_name_max[WS_TYPE_COUNT] = {12, 11, 53};
static const char *const type_iface[WS_TYPE_COUNT] = {
	"the tap interface is vm-NAME, at most 15 bytes",
	"the host interface is ve-NAME, at most 15 bytes",
	"the Incus instance is workspace-NAME, at most 63 characters",
};

int ws_type_from_string(const char *s)
{
	for (int i = 0; s && i < WS_TYPE_COUNT; i++)
		if (strcmp(s, type_names[i]) == 0)
			return i;
	return -EINVAL;
}

const char *ws_type_to_string(enum ws_type t)
{
	return t < WS_TYPE_COUNT ? type_names[t] : "unknown";
}

size_t ws_type_name_max(enum ws_type t)
{
	return t < WS_TYPE_COUNT ? type_name_max[t] : 0;
}

char *ws_unit_name(enum ws_type t, const char *name)
{
	char *s = NULL;
	int r;

	switch (t) {
	case WS_TYPE_VM:
		r = asprintf(&s, "microvm@%s.service", name);
		break;
	case WS_TYPE_CONTAINER:
		r = asprintf(&s, "container@%s.service", name);
		break;
	case WS_TYPE_INCUS:
		r = asprintf(&s, "incus-workspace-%s.service", name);
		break;
	default:
		return NULL;
	}
	return r < 0 ? NULL : s;
}

int ws_name_validate(const char *name, enum ws_type type, struct ws_err *err)
{
	size_t len = name ? strlen(name) : 0;
	bool ok = len > 0 && name[0] != '-' && name[len - 1] != '-' &&
		  (type >= WS_TYPE_COUNT || len <= type_name_max[type]);
	char shown[80];

	for (size_t i = 0; ok && i < len; i++)
		ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		     name[i] == '-';
	if (ok)
		return 0; /* the common case: no message to prepare */

	/* a name is echoed in messages, but a name of a megabyte is not */
	snprintf(shown, sizeof(shown), "%.*s%s", (int)utf8_cut(name ? name : "", len, 64),
		 name ? name : "", len > 64 ? "..." : "");

	if (len == 0)
		return ws_fail(err, -EINVAL, WS_E_NAME_INVALID, "the name is empty");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')
			continue;
		if (c == '_')
			return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
				       "name \"%s\" contains '_', which is not allowed; use '-'",
				       shown);
		if (c >= 'A' && c <= 'Z')
			return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
				       "name \"%s\" contains upper case '%c'; names are lower "
				       "case letters, digits and '-'",
				       shown, c);
		if (c == '.')
			return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
				       "name \"%s\" contains '.'; names are lower case letters, "
				       "digits and '-'",
				       shown);
		if (c >= 0x80)
			return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
				       "name contains a non-ASCII character; names are lower case "
				       "letters a-z, digits and '-'");
		return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
			       "name contains the character %s%c%s (byte 0x%02x); names are lower "
			       "case letters, digits and '-'",
			       isprint(c) ? "'" : "", isprint(c) ? c : '?', isprint(c) ? "'" : "", c);
	}
	if (name[0] == '-' || name[len - 1] == '-')
		return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
			       "name \"%s\" must not start or end with '-'", shown);
	if (type < WS_TYPE_COUNT && len > type_name_max[type])
		return ws_fail(err, -EINVAL, WS_E_NAME_INVALID,
			       "name \"%s\" is %zu characters; %s names are limited to %zu (%s)",
			       shown, len, type_names[type], type_name_max[type], type_iface[type]);
	return 0;
}

bool ws_nix_ident_ok(const char *name)
{
	static const char *const keywords[] = {"if",  "then",    "else", "assert", "with",
					       "let", "in",      "rec",  "inherit", "or"};
	if (!name || !(isalpha((unsigned char)name[0]) || name[0] == '_'))
		return false;
	for (const char *p = name; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '\'' || *p == '-'))
			return false;
	for (size_t i = 0; i < WS_ARRAY_SIZE(keywords); i++)
		if (strcmp(name, keywords[i]) == 0)
			return false;
	return true;
}

void ws_linebuf_init(struct ws_linebuf *lb, size_t max)
{
	memset(lb, 0, sizeof(*lb));
	lb->max = max;
}

void ws_linebuf_free(struct ws_linebuf *lb)
{
	free(lb->buf);
	lb->buf = NULL;
	lb->len = lb->cap = 0;
}

int ws_linebuf_feed(struct ws_linebuf *lb, const char *data, size_t len,
		    int (*cb)(void *userdata, char *line, size_t len), void *userdata)
{
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		size_t take = nl ? (size_t)(nl - data) : len;

		if (lb->len + take > lb->max)
			return -EMSGSIZE;
		if (lb->len + take + 1 > lb->cap) {
			size_t cap = lb->cap ? lb->cap : 4096;
			char *b;

			while (cap < lb->len + take + 1)
				cap *= 2;
			b = realloc(lb->buf, cap);
			if (!b)
				return -ENOMEM;
			lb->buf = b;
			lb->cap = cap;
		}
		memcpy(lb->buf + lb->len, data, take);
		lb->len += take;
		data += take;
		len -= take;
		if (!nl)
			break;
		data++; /* the newline */
		len--;
		{
			size_t l = lb->len;
			int r;

			if (l > 0 && lb->buf[l - 1] == '\r')
				l--;
			lb->buf[l] = '\0';
			lb->len = 0;
			r = cb(userdata, lb->buf, l);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

void ws_buf_add(struct ws_buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->s, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

void ws_buf_puts(struct ws_buf *b, const char *s)
{
	ws_buf_add(b, s, strlen(s));
}

void ws_buf_printf(struct ws_buf *b, const char *fmt, ...)
{
	char *s = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = true;
		return;
	}
	ws_buf_add(b, s, (size_t)n);
	free(s);
}

bool ws_sorted_find(const void *base, size_t n, size_t size,
		    const char *(*name_of)(const void *elem), const char *name, size_t *ret_pos)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name_of((const char *)base + mid * size), name);

		if (c == 0) {
			*ret_pos = mid;
			return true;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_pos = lo;
	return false;
}

bool ws_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;

	while (p < end) {
		unsigned char c = *p;
		size_t n;
		unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			if (c == 0xe0)
				lo = 0xa0; /* overlong below */
			else if (c == 0xed)
				hi = 0x9f; /* surrogates above */
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			if (c == 0xf0)
				lo = 0x90; /* overlong below */
			else if (c == 0xf4)
				hi = 0x8f; /* above U+10FFFF */
		} else {
			return false; /* a continuation byte, C0/C1 (overlong) or F5-FF */
		}
		if ((size_t)(end - p) <= n || p[1] < lo || p[1] > hi)
			return false;
		for (size_t i = 2; i <= n; i++)
			if (p[i] < 0x80 || p[i] > 0xbf)
				return false;
		p += n + 1;
	}
	return true;
}
