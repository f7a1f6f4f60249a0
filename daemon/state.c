/* SPDX-License-Identifier: MIT */
/* The daemon's own state file: first-seen host keys, recently released addresses and the
 * journal of an operation in flight, kept in plain C structures and written as canonical
 * JSON (sorted keys, fixed layout) so equal states give equal bytes. It does not decide
 * trust or pick addresses: hostkeys and methods do, this module only remembers. */
#include "state.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "fsutil.h"
#include "ws_proto.h"

#define STATE_VERSION 1

struct state_hostkey {
	char *name; /* owned */
	char *key;  /* owned */
};

struct state_released {
	uint32_t ip; /* host order */
	int64_t at;  /* seconds since the epoch */
};

struct state {
	char *path;                  /* owned; NULL for a state made from a dump only */
	struct state_hostkey *keys;  /* owned; sorted by name, unique */
	size_t nkeys;
	struct state_released *rel;  /* owned; sorted by ip, unique */
	size_t nrel;
	struct json_object *journal; /* owned; an object, or NULL */
	char *journal_text;          /* owned; canonical compact form of journal */
};

/* A growing text buffer for the canonical writer. */



static void sb_indent(struct ws_buf *b, int indent)
{
	if (indent < 0)
		return;
	ws_buf_add(b, "\n", 1);
	for (int i = 0; i < indent; i++)
		ws_buf_add(b, "  ", 2);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void sb_string(struct ws_buf *b, const char *s)
{
	struct json_object *o = json_object_new_string(s);

	if (!o) {
		b->oom = true;
		return;
	}
	ws_buf_puts(b, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
						     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* Writes @o with object keys sorted. @indent < 0: compact on one line; otherwise two
 * spaces per level. json-c keeps no key order of its own, hence this writer. */
static void emit(struct ws_buf *b, struct json_object *o, int indent)
{
	int inner = indent < 0 ? -1 : indent + 1;

	switch (json_object_get_type(o)) {
	case json_type_object: {
		size_t n = (size_t)json_object_object_length(o), i = 0;
		WS_AUTOFREE const char **keys = NULL;

		if (n == 0) {
			ws_buf_puts(b, "{}");
			return;
		}
		keys = calloc(n, sizeof(*keys));
		if (!keys) {
			b->oom = true;
			return;
		}
		json_object_object_foreach(o, k, v) {
			(void)v;
			keys[i++] = k;
		}
		qsort(keys, i, sizeof(*keys), cmp_str);
		ws_buf_puts(b, "{");
		for (size_t j = 0; j < i; j++) {
			sb_indent(b, inner);
			sb_string(b, keys[j]);
			ws_buf_puts(b, indent < 0 ? ":" : ": ");
			emit(b, json_object_object_get(o, keys[j]), inner);
			if (j + 1 < i)
				ws_buf_puts(b, ",");
		}
		sb_indent(b, indent);
		ws_buf_puts(b, "}");
		return;
	}
	case json_type_array: {
		size_t n = json_object_array_length(o);

		if (n == 0) {
			ws_buf_puts(b, "[]");
			return;
		}
		ws_buf_puts(b, "[");
		for (size_t j = 0; j < n; j++) {
			sb_indent(b, inner);
			emit(b, json_object_array_get_idx(o, j), inner);
			if (j + 1 < n)
				ws_buf_puts(b, ",");
		}
		sb_indent(b, indent);
		ws_buf_puts(b, "]");
		return;
	}
	case json_type_string:
		sb_string(b, json_object_get_string(o));
		return;
	case json_type_int: {
		char num[32];

		snprintf(num, sizeof(num), "%" PRId64, json_object_get_int64(o));
		ws_buf_puts(b, num);
		return;
	}
	case json_type_null:
		ws_buf_puts(b, "null");
		return;
	default: /* booleans and doubles: json-c's own text is stable */
		ws_buf_puts(b, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		return;
	}
}

static char *canonical(struct json_object *o, int indent)
{
	struct ws_buf b = { 0 };

	emit(&b, o, indent);
	if (indent >= 0)
		ws_buf_add(&b, "\n", 1);
	if (b.oom || !b.s) {
		free(b.s);
		return NULL;
	}
	return b.s;
}

static void format_ip(uint32_t ip, char buf[16])
{
	snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff,
		 ip & 0xff);
}

static int parse_ip(const char *s, uint32_t *ret_ip)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		return -EINVAL;
	*ret_ip = ntohl(a.s_addr);
	return 0;
}

static void state_clear(struct state *st)
{
	for (size_t i = 0; i < st->nkeys; i++) {
		free(st->keys[i].name);
		free(st->keys[i].key);
	}
	free(st->keys);
	st->keys = NULL;
	st->nkeys = 0;
	free(st->rel);
	st->rel = NULL;
	st->nrel = 0;
	json_putp(&st->journal);
	free(st->journal_text);
	st->journal_text = NULL;
}

void state_free(struct state *st)
{
	if (!st)
		return;
	state_clear(st);
	free(st->path);
	free(st);
}

static void state_freep(struct state **st)
{
	state_free(*st);
}

/* Sets the journal to @o (taking the reference) with its canonical text. */
static int journal_set(struct state *st, struct json_object *o)
{
	char *text = NULL;

	if (o) {
		text = canonical(o, -1);
		if (!text) {
			json_object_put(o);
			return -ENOMEM;
		}
	}
	json_putp(&st->journal);
	free(st->journal_text);
	st->journal = o;
	st->journal_text = text;
	return 0;
}

static const char *key_name_of(const void *elem)
{
	return ((const struct state_hostkey *)elem)->name;
}

static size_t key_find(const struct state *st, const char *name, bool *ret_found)
{
	size_t pos;

	*ret_found = ws_sorted_find(st->keys, st->nkeys, sizeof(*st->keys), key_name_of, name,
				    &pos);
	return pos;
}

static size_t rel_find(const struct state *st, uint32_t ip, bool *ret_found)
{
	size_t lo = 0, hi = st->nrel;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (st->rel[mid].ip == ip) {
			*ret_found = true;
			return mid;
		}
		if (st->rel[mid].ip < ip)
			lo = mid + 1;
		else
			hi = mid;
	}
	*ret_found = false;
	return lo;
}

int state_set_hostkey(struct state *st, const char *name, const char *key)
{
	struct state_hostkey *keys;
	char *n, *k;
	bool found;
	size_t i;

	if (!name || !*name)
		return -EINVAL;
	i = key_find(st, name, &found);
	if (!key) {
		if (!found)
			return 0;
		free(st->keys[i].name);
		free(st->keys[i].key);
		memmove(&st->keys[i], &st->keys[i + 1], (st->nkeys - i - 1) * sizeof(*st->keys));
		st->nkeys--;
		return 0;
	}
	k = strdup(key);
	if (!k)
		return -ENOMEM;
	if (found) {
		free(st->keys[i].key);
		st->keys[i].key = k;
		return 0;
	}
	n = strdup(name);
	keys = n ? realloc(st->keys, (st->nkeys + 1) * sizeof(*keys)) : NULL;
	if (!keys) {
		free(n);
		free(k);
		return -ENOMEM;
	}
	st->keys = keys;
	memmove(&keys[i + 1], &keys[i], (st->nkeys - i) * sizeof(*keys));
	keys[i].name = n;
	keys[i].key = k;
	st->nkeys++;
	return 0;
}

const char *state_hostkey(const struct state *st, const char *name)
{
	bool found;
	size_t i;

	if (!name)
		return NULL;
	i = key_find(st, name, &found);
	return found ? st->keys[i].key : NULL;
}

int state_release_ip(struct state *st, uint32_t ip, time_t now)
{
	struct state_released *rel;
	bool found;
	size_t i;

	i = rel_find(st, ip, &found);
	if (found) {
		st->rel[i].at = (int64_t)now;
		return 0;
	}
	rel = realloc(st->rel, (st->nrel + 1) * sizeof(*rel));
	if (!rel)
		return -ENOMEM;
	st->rel = rel;
	memmove(&rel[i + 1], &rel[i], (st->nrel - i) * sizeof(*rel));
	rel[i].ip = ip;
	rel[i].at = (int64_t)now;
	st->nrel++;
	return 0;
}

/* Held while now < at + hold; a release "in the future" (the clock went back) is held. */
static bool rel_held(const struct state_released *r, time_t now, time_t hold_seconds)
{
	return (int64_t)now < r->at + (int64_t)hold_seconds || r->at > (int64_t)now;
}

size_t state_held_ips(const struct state *st, time_t now, time_t hold_seconds, uint32_t **ret)
{
	uint32_t *ips;
	size_t n = 0;

	*ret = NULL;
	for (size_t i = 0; i < st->nrel; i++)
		if (rel_held(&st->rel[i], now, hold_seconds))
			n++;
	if (n == 0)
		return 0;
	ips = malloc(n * sizeof(*ips));
	if (!ips)
		return 0;
	n = 0;
	for (size_t i = 0; i < st->nrel; i++)
		if (rel_held(&st->rel[i], now, hold_seconds))
			ips[n++] = st->rel[i].ip;
	*ret = ips;
	return n;
}

size_t state_prune_released(struct state *st, time_t now, time_t hold_seconds)
{
	size_t kept = 0, removed;

	for (size_t i = 0; i < st->nrel; i++)
		if (rel_held(&st->rel[i], now, hold_seconds))
			st->rel[kept++] = st->rel[i];
	removed = st->nrel - kept;
	st->nrel = kept;
	return removed;
}

int state_journal_begin(struct state *st, const char *op_json)
{
	struct json_object *o;

	if (!op_json)
		return -EINVAL;
	o = json_tokener_parse(op_json);
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return -EINVAL;
	}
	return journal_set(st, o);
}

void state_journal_end(struct state *st)
{
	(void)journal_set(st, NULL);
}

const char *state_journal(const struct state *st)
{
	return st->journal_text;
}

/* The whole state as a JSON tree (a new reference), NULL when out of memory. */
static struct json_object *state_to_json(const struct state *st)
{
	WS_AUTO(json_putp) struct json_object *root = json_object_new_object();
	struct json_object *keys = json_object_new_object();
	struct json_object *rel = json_object_new_array();

	if (!root || !keys || !rel) {
		json_object_put(keys);
		json_object_put(rel);
		return NULL;
	}
	json_object_object_add(root, "version", json_object_new_int(STATE_VERSION));
	json_object_object_add(root, "hostKeys", keys); /* root now owns keys */
	json_object_object_add(root, "released", rel);  /* root now owns rel */
	json_object_object_add(root, "journal", st->journal ? json_object_get(st->journal) : NULL);
	for (size_t i = 0; i < st->nkeys; i++)
		json_object_object_add(keys, st->keys[i].name,
				       json_object_new_string(st->keys[i].key));
	for (size_t i = 0; i < st->nrel; i++) {
		struct json_object *r = json_object_new_object();
		char ip[16];

		if (!r)
			return NULL;
		format_ip(st->rel[i].ip, ip);
		json_object_object_add(r, "ip", json_object_new_string(ip));
		json_object_object_add(r, "at", json_object_new_int64(st->rel[i].at));
		json_object_array_add(rel, r); /* rel now owns r */
	}
	return ws_steal(&root);
}

char *state_dump(const struct state *st)
{
	WS_AUTO(json_putp) struct json_object *root = state_to_json(st);

	return root ? canonical(root, 0) : NULL;
}

/* 1-based line and column of byte @off in @text. */
static void text_pos(const char *text, size_t off, int *ret_line, int *ret_col)
{
	int line = 1, col = 1;

	for (size_t i = 0; i < off && text[i]; i++) {
		if (text[i] == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	*ret_line = line;
	*ret_col = col;
}

static int corrupt(struct ws_err *err, const char *origin, int line, int col, const char *why)
{
	return ws_fail_at(err, -EINVAL, 0, origin, line, col, "state file '%s' is corrupt: %s",
			  origin, why);
}

/* Fills the empty @st from the JSON @text; @origin names it in errors. */
static int state_parse(struct state *st, const char *text, size_t len, const char *origin,
		       struct ws_err *err)
{
	WS_AUTO(json_putp) struct json_object *root = NULL;
	struct json_tokener *tok;
	struct json_object *v;
	enum json_tokener_error jerr;
	size_t end;
	char why[256];
	int line, col, r;

	tok = json_tokener_new();
	if (!tok)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!root || jerr != json_tokener_success) {
		text_pos(text, end, &line, &col);
		return corrupt(err, origin, line, col,
			       jerr == json_tokener_continue ? "unexpected end of file"
							     : json_tokener_error_desc(jerr));
	}
	for (; end < len; end++) {
		if (!strchr(" \t\r\n", text[end])) {
			text_pos(text, end, &line, &col);
			return corrupt(err, origin, line, col, "text after the JSON value");
		}
	}
	if (!json_object_is_type(root, json_type_object))
		return corrupt(err, origin, 0, 0, "not a JSON object");

	if (!json_object_object_get_ex(root, "version", &v) ||
	    !json_object_is_type(v, json_type_int))
		return corrupt(err, origin, 0, 0, "no \"version\" number");
	if (json_object_get_int64(v) != STATE_VERSION) {
		snprintf(why, sizeof(why), "version %" PRId64 " is not supported (only %d)",
			 json_object_get_int64(v), STATE_VERSION);
		return corrupt(err, origin, 0, 0, why);
	}

	if (json_object_object_get_ex(root, "hostKeys", &v) && v) {
		if (!json_object_is_type(v, json_type_object))
			return corrupt(err, origin, 0, 0, "\"hostKeys\" is not an object");
		json_object_object_foreach(v, name, key) {
			if (!json_object_is_type(key, json_type_string) || !*name) {
				snprintf(why, sizeof(why), "host key of \"%s\" is not a string",
					 name);
				return corrupt(err, origin, 0, 0, why);
			}
			r = state_set_hostkey(st, name, json_object_get_string(key));
			if (r < 0)
				return ws_fail(err, r, 0, "out of memory");
		}
	}

	if (json_object_object_get_ex(root, "released", &v) && v) {
		size_t n;

		if (!json_object_is_type(v, json_type_array))
			return corrupt(err, origin, 0, 0, "\"released\" is not an array");
		n = json_object_array_length(v);
		for (size_t i = 0; i < n; i++) {
			struct json_object *e = json_object_array_get_idx(v, i), *ip, *at;
			uint32_t addr;

			if (!json_object_is_type(e, json_type_object) ||
			    !json_object_object_get_ex(e, "ip", &ip) ||
			    !json_object_is_type(ip, json_type_string) ||
			    parse_ip(json_object_get_string(ip), &addr) < 0 ||
			    !json_object_object_get_ex(e, "at", &at) ||
			    !json_object_is_type(at, json_type_int)) {
				snprintf(why, sizeof(why),
					 "\"released\" entry %zu is not {\"ip\": \"a.b.c.d\", "
					 "\"at\": seconds}",
					 i);
				return corrupt(err, origin, 0, 0, why);
			}
			r = state_release_ip(st, addr, (time_t)json_object_get_int64(at));
			if (r < 0)
				return ws_fail(err, r, 0, "out of memory");
		}
	}

	if (json_object_object_get_ex(root, "journal", &v) && v) {
		if (!json_object_is_type(v, json_type_object))
			return corrupt(err, origin, 0, 0, "\"journal\" is neither null nor an object");
		r = journal_set(st, json_object_get(v));
		if (r < 0)
			return ws_fail(err, r, 0, "out of memory");
	}
	return 0;
}

int state_load(const char *path, struct state **ret_st, struct ws_err *err)
{
	WS_AUTO(state_freep) struct state *st = NULL;
	WS_AUTOFREE char *text = NULL;
	size_t len = 0;
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	st->path = strdup(path);
	if (!st->path)
		return ws_fail(err, -ENOMEM, 0, "out of memory");

	r = fsutil_read(path, STATE_MAX_BYTES, &text, &len);
	if (r == -ENOENT) {
		*ret_st = ws_steal(&st); /* no file yet: the empty state */
		return 0;
	}
	if (r < 0)
		return ws_fail_at(err, r, 0, path, 0, 0, "cannot read state file '%s': %s", path,
				  strerror(-r));
	r = state_parse(st, text, len, path, err);
	if (r < 0)
		return r;
	*ret_st = ws_steal(&st); /* caller frees with state_free() */
	return 0;
}

int state_save(struct state *st, struct ws_err *err)
{
	WS_AUTOFREE char *dump = NULL;
	WS_AUTOFREE char *dir = NULL;
	const char *slash;
	int r;

	if (!st->path)
		return ws_fail(err, -EINVAL, 0, "the state has no file to be saved to");
	slash = strrchr(st->path, '/');
	if (slash && slash != st->path) {
		dir = strndup(st->path, (size_t)(slash - st->path));
		if (!dir)
			return ws_fail(err, -ENOMEM, 0, "out of memory");
		r = fsutil_mkdir_p(dir, 0700);
		if (r < 0)
			return ws_fail_at(err, r, 0, dir, 0, 0, "cannot create '%s': %s", dir,
					  strerror(-r));
	}
	dump = state_dump(st);
	if (!dump)
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	return fsutil_replace(st->path, dump, strlen(dump), FSUTIL_PRIVATE, err);
}

int state_restore(struct state *st, const char *dump, struct ws_err *err)
{
	struct state tmp = { 0 };
	int r;

	if (!dump)
		return ws_fail(err, -EINVAL, 0, "no state dump to restore");
	r = state_parse(&tmp, dump, strlen(dump), st->path ? st->path : "(dump)", err);
	if (r < 0) {
		state_clear(&tmp);
		return r;
	}
	/* Only a dump that parsed completely replaces the current contents. */
	state_clear(st);
	tmp.path = st->path;
	*st = tmp;
	return 0;
}
