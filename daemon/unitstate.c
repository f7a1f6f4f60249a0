/* SPDX-License-Identifier: MIT */
/* The workspaces' systemd units as seen on the system bus: sd-bus driven by the libuv loop
 * (the bus fd in a uv_poll_t, sd-bus's own deadline in a uv_timer_t), asynchronous calls
 * only (GetUnit, Properties.GetAll) and signal matches (PropertiesChanged, UnitNew). It only
 * reads: it never starts, stops or reloads a unit. Without a bus every state is "unknown",
 * and a lost bus is retried on an unreferenced timer with a growing delay. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-bus.h>
#include <uv.h>

#include "unitstate.h"
#include "ws_proto.h"
#include "ws_macros.h"

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"
#define SD_UNIT "org.freedesktop.systemd1.Unit"
#define DBUS_PROPS "org.freedesktop.DBus.Properties"

#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS 30000
#define PROCESS_BATCH 64 /* messages handled per wake-up before yielding to the loop */

struct unitstate;

struct us_unit {
	struct unitstate *u;      /* borrowed: the owner */
	char *name;               /* owned */
	char *path;               /* owned; the unit's object path once GetUnit or UnitNew gave it */
	char *active, *sub;       /* owned; NULL: unknown */
	sd_bus_slot *call;        /* owned; the pending GetUnit or GetAll */
	sd_bus_slot *match;       /* owned; PropertiesChanged on path */
};

/* One connection attempt: freed in conn_close_cb once both handles are closed. */
struct us_conn {
	struct unitstate *u;      /* borrowed; NULL once the connection is being closed */
	sd_bus *bus;              /* owned */
	uv_poll_t poll;
	uv_timer_t timer;         /* sd-bus's next deadline */
	int open_handles;
	sd_bus_slot *unit_new;    /* owned; match on the manager's UnitNew */
};

struct unitstate {
	uv_loop_t *loop;          /* borrowed */
	unitstate_changed_fn changed;
	void *userdata;
	struct us_conn *conn;     /* NULL while there is no bus */
	struct us_unit **units;   /* owned, each owned */
	size_t n_units;
	uv_timer_t retry;         /* reconnects; unreferenced, so it never keeps the loop alive */
	unsigned retry_ms;
	bool ready_seen;          /* the current connection completed its Hello */
};

static void conn_lost(struct us_conn *c);
static void conn_update(struct us_conn *c);
static int unit_query(struct us_unit *un);
static int unit_follow(struct us_unit *un, const char *path);

static uint64_t now_usec(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Records a new state; NULL for a field keeps it, unless @reset (then NULL is unknown). */
static void unit_set(struct us_unit *un, const char *active, const char *sub, bool reset)
{
	char *na = NULL, *ns = NULL;
	const char *a = reset ? active : (active ? active : un->active);
	const char *s = reset ? sub : (sub ? sub : un->sub);

	if (str_eq(a, un->active) && str_eq(s, un->sub))
		return;
	if ((a && !(na = strdup(a))) || (s && !(ns = strdup(s)))) {
		/* out of memory: better unknown than wrong */
		free(na);
		free(ns);
		na = ns = NULL;
	}
	free(un->active);
	free(un->sub);
	un->active = na;
	un->sub = ns;
	if (un->u->changed)
		un->u->changed(un->u->userdata, un->name, na ? na : UNITSTATE_UNKNOWN,
			       ns ? ns : UNITSTATE_UNKNOWN);
}

/* Forgets everything that belongs to the current connection. */
static void unit_detach(struct us_unit *un)
{
	un->call = sd_bus_slot_unref(un->call);
	un->match = sd_bus_slot_unref(un->match);
	free(un->path);
	un->path = NULL;
}

static void unit_free(struct us_unit *un)
{
	if (!un)
		return;
	unit_detach(un);
	free(un->name);
	free(un->active);
	free(un->sub);
	free(un);
}

/* u->units is kept sorted by name: look-ups are binary searches. */
static const char *unit_name_of(const void *elem)
{
	return (*(struct us_unit *const *)elem)->name;
}

/* Where @name is in the sorted set, or would go (*ret_pos); true when it is there. */
static bool unit_pos(const struct unitstate *u, const char *name, size_t *ret_pos)
{
	return ws_sorted_find(u->units, u->n_units, sizeof(*u->units), unit_name_of, name,
			      ret_pos);
}

static struct us_unit *unit_find(const struct unitstate *u, const char *name)
{
	size_t pos;

	return unit_pos(u, name, &pos) ? u->units[pos] : NULL;
}

/* A unit not watched yet: no owner until unit_attach(). NULL when out of memory. */
static struct us_unit *unit_new(const char *name)
{
	struct us_unit *un = calloc(1, sizeof(*un));

	if (un && !(un->name = strdup(name))) {
		free(un);
		un = NULL;
	}
	return un;
}

/* @un joins @u's set (it is in u->units already): its state is asked for. */
static void unit_attach(struct unitstate *u, struct us_unit *un)
{
	un->u = u;
	if (u->conn && unit_query(un) < 0)
		unit_set(un, NULL, NULL, true);
}

static int cmp_str_ptr(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Reads ActiveState and SubState out of an a{sv} (GetAll's reply, PropertiesChanged). */
static int props_read(sd_bus_message *m, char **ret_active, char **ret_sub)
{
	const char *key, *val;
	char *a = NULL, *s = NULL;
	int r;

	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		r = sd_bus_message_read(m, "s", &key);
		if (r < 0)
			goto fail;
		if (strcmp(key, "ActiveState") == 0 || strcmp(key, "SubState") == 0) {
			char **dst = key[0] == 'A' ? &a : &s;

			r = sd_bus_message_read(m, "v", "s", &val);
			if (r < 0)
				goto fail;
			free(*dst);
			*dst = strdup(val);
			if (!*dst) {
				r = -ENOMEM;
				goto fail;
			}
		} else {
			r = sd_bus_message_skip(m, "v");
			if (r < 0)
				goto fail;
		}
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			goto fail;
	}
	if (r < 0)
		goto fail;
	r = sd_bus_message_exit_container(m);
	if (r < 0)
		goto fail;
	*ret_active = a;
	*ret_sub = s;
	return 0;
fail:
	free(a);
	free(s);
	return r;
}

static int getall_cb(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct us_unit *un = userdata;
	WS_AUTOFREE char *a = NULL;
	WS_AUTOFREE char *s = NULL;
	int r;

	un->call = sd_bus_slot_unref(un->call);
	if (sd_bus_message_is_method_error(m, NULL)) {
		unit_set(un, NULL, NULL, true);
		return 0;
	}
	r = props_read(m, &a, &s);
	if (r < 0 || !a || !s) {
		unit_set(un, NULL, NULL, true);
		return 0;
	}
	unit_set(un, a, s, true);
	return 0;
}

static int getall_start(struct us_unit *un)
{
	struct us_conn *c = un->u->conn;

	if (!c || !un->path)
		return -ENOTCONN;
	un->call = sd_bus_slot_unref(un->call);
	return sd_bus_call_method_async(c->bus, &un->call, SD_DEST, un->path, DBUS_PROPS, "GetAll",
					getall_cb, un, "s", SD_UNIT);
}

static int props_changed_cb(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct us_unit *un = userdata;
	WS_AUTOFREE char *a = NULL;
	WS_AUTOFREE char *s = NULL;
	const char *iface, *inval;
	bool refetch = false;
	int r;

	r = sd_bus_message_read(m, "s", &iface);
	if (r < 0 || strcmp(iface, SD_UNIT) != 0)
		return 0;
	r = props_read(m, &a, &s);
	if (r < 0)
		return 0;
	r = sd_bus_message_enter_container(m, 'a', "s");
	if (r >= 0) {
		while (sd_bus_message_read(m, "s", &inval) > 0)
			if (strcmp(inval, "ActiveState") == 0 || strcmp(inval, "SubState") == 0)
				refetch = true;
	}
	if (a || s)
		unit_set(un, a, s, false);
	if (refetch)
		(void)getall_start(un);
	return 0;
}

/* Follows the unit at @path: a match on its PropertiesChanged first (the bus handles our
 * messages in order, so no change can slip between the two), then GetAll. */
static int unit_follow(struct us_unit *un, const char *path)
{
	struct us_conn *c = un->u->conn;
	char *p;
	int r;

	if (!c)
		return -ENOTCONN;
	if (!un->path || strcmp(un->path, path) != 0) {
		p = strdup(path);
		if (!p)
			return -ENOMEM;
		free(un->path);
		un->path = p;
		un->match = sd_bus_slot_unref(un->match);
		r = sd_bus_match_signal_async(c->bus, &un->match, SD_DEST, un->path, DBUS_PROPS,
					      "PropertiesChanged", props_changed_cb, NULL, un);
		if (r < 0)
			return r;
	}
	return getall_start(un);
}

static int getunit_cb(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct us_unit *un = userdata;
	const sd_bus_error *e;
	const char *path;
	int r;

	un->call = sd_bus_slot_unref(un->call);
	if (sd_bus_message_is_method_error(m, NULL)) {
		e = sd_bus_message_get_error(m);
		/* not loaded: that is what systemd says of a unit that is not running */
		if (e && sd_bus_error_has_name(e, "org.freedesktop.systemd1.NoSuchUnit"))
			unit_set(un, "inactive", "dead", true);
		else
			unit_set(un, NULL, NULL, true);
		return 0;
	}
	r = sd_bus_message_read(m, "o", &path);
	if (r < 0 || unit_follow(un, path) < 0)
		unit_set(un, NULL, NULL, true);
	return 0;
}

static int unit_query(struct us_unit *un)
{
	struct us_conn *c = un->u->conn;

	if (!c)
		return -ENOTCONN;
	un->call = sd_bus_slot_unref(un->call);
	return sd_bus_call_method_async(c->bus, &un->call, SD_DEST, SD_PATH, SD_MANAGER, "GetUnit",
					getunit_cb, un, "s", un->name);
}

static int unit_new_cb(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct unitstate *u = userdata;
	struct us_unit *un;
	const char *id, *path;

	if (sd_bus_message_read(m, "so", &id, &path) < 0)
		return 0;
	un = unit_find(u, id);
	if (!un || (un->path && strcmp(un->path, path) == 0))
		return 0;
	un->call = sd_bus_slot_unref(un->call);
	if (unit_follow(un, path) < 0)
		unit_set(un, NULL, NULL, true);
	return 0;
}

static void retry_cb(uv_timer_t *t);

static void retry_schedule(struct unitstate *u)
{
	(void)uv_timer_start(&u->retry, retry_cb, u->retry_ms, 0);
	u->retry_ms = u->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : u->retry_ms * 2;
}

static void conn_close_cb(uv_handle_t *h)
{
	struct us_conn *c = h->data;

	if (--c->open_handles > 0)
		return;
	c->bus = sd_bus_close_unref(c->bus);
	free(c);
}

/* Detaches @c from its owner and closes it; its memory goes in conn_close_cb. */
static void conn_close(struct us_conn *c)
{
	struct unitstate *u = c->u;

	if (u) {
		for (size_t i = 0; i < u->n_units; i++)
			unit_detach(u->units[i]);
		u->conn = NULL;
		c->u = NULL;
	}
	c->unit_new = sd_bus_slot_unref(c->unit_new);
	if (c->open_handles == 0) {
		c->bus = sd_bus_close_unref(c->bus);
		free(c);
		return;
	}
	if (!uv_is_closing((uv_handle_t *)&c->poll))
		uv_close((uv_handle_t *)&c->poll, conn_close_cb);
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, conn_close_cb);
}

/* The bus went away (or never answered): every state is unknown until it is back. */
static void conn_lost(struct us_conn *c)
{
	struct unitstate *u = c->u;

	conn_close(c);
	if (!u)
		return;
	for (size_t i = 0; i < u->n_units; i++)
		unit_set(u->units[i], NULL, NULL, true);
	retry_schedule(u);
}

static void conn_process(struct us_conn *c)
{
	int r = 0;

	for (int i = 0; i < PROCESS_BATCH; i++) {
		r = sd_bus_process(c->bus, NULL);
		if (r <= 0)
			break;
	}
	if (r < 0 || sd_bus_is_open(c->bus) <= 0)
		return conn_lost(c);
	if (!c->u->ready_seen && sd_bus_is_ready(c->bus) > 0) {
		c->u->ready_seen = true;
		c->u->retry_ms = RETRY_FIRST_MS;
	}
	conn_update(c);
}

static void conn_poll_cb(uv_poll_t *p, int status, int events)
{
	struct us_conn *c = p->data;

	if (!c->u)
		return;
	if (status < 0)
		return conn_lost(c);
	conn_process(c);
}

static void conn_timer_cb(uv_timer_t *t)
{
	struct us_conn *c = t->data;

	if (!c->u)
		return;
	conn_process(c);
}

/* Tells libuv what sd-bus waits for next: readability/writability of its fd, a deadline. */
static void conn_update(struct us_conn *c)
{
	uint64_t until = UINT64_MAX, now;
	int events = 0, r;

	if (!c->u)
		return;
	r = sd_bus_get_events(c->bus);
	if (r < 0)
		return conn_lost(c);
	if (r & POLLIN)
		events |= UV_READABLE;
	if (r & POLLOUT)
		events |= UV_WRITABLE;
	r = uv_poll_start(&c->poll, events, conn_poll_cb);
	if (r < 0)
		return conn_lost(c);
	r = sd_bus_get_timeout(c->bus, &until);
	if (r < 0)
		return conn_lost(c);
	if (until == UINT64_MAX) {
		(void)uv_timer_stop(&c->timer);
		return;
	}
	now = now_usec();
	(void)uv_timer_start(&c->timer, conn_timer_cb, until > now ? (until - now + 999) / 1000 : 0,
			     0);
}

/* Starts a connection: nothing here waits (connect() on a Unix socket does not, and the
 * authentication and Hello run later through sd_bus_process). */
static int conn_open(struct unitstate *u)
{
	struct us_conn *c;
	int fd, r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->u = u;
	r = sd_bus_open_system(&c->bus);
	if (r < 0)
		goto fail;
	fd = sd_bus_get_fd(c->bus);
	if (fd < 0) {
		r = fd;
		goto fail;
	}
	r = uv_poll_init(u->loop, &c->poll, fd);
	if (r < 0)
		goto fail;
	c->poll.data = c;
	c->open_handles++;
	r = uv_timer_init(u->loop, &c->timer);
	if (r < 0)
		goto fail;
	c->timer.data = c;
	c->open_handles++;

	u->conn = c;
	u->ready_seen = false;
	r = sd_bus_match_signal_async(c->bus, &c->unit_new, SD_DEST, SD_PATH, SD_MANAGER,
				      "UnitNew", unit_new_cb, NULL, u);
	if (r < 0)
		goto fail;
	/* UnitNew and friends are only sent to subscribers; failure only costs us those */
	(void)sd_bus_call_method_async(c->bus, NULL, SD_DEST, SD_PATH, SD_MANAGER, "Subscribe",
				       NULL, NULL, "");
	for (size_t i = 0; i < u->n_units; i++)
		if (unit_query(u->units[i]) < 0)
			unit_set(u->units[i], NULL, NULL, true);
	conn_update(c);
	return 0;
fail:
	if (u->conn == c)
		u->conn = NULL;
	c->u = NULL;
	conn_close(c);
	return r;
}

static void retry_cb(uv_timer_t *t)
{
	struct unitstate *u = t->data;

	if (u->conn)
		return;
	if (conn_open(u) < 0)
		retry_schedule(u);
}

int unitstate_new(uv_loop_t *loop, unitstate_changed_fn changed, void *userdata,
		  struct unitstate **ret_u)
{
	struct unitstate *u;
	int r;

	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->loop = loop;
	u->changed = changed;
	u->userdata = userdata;
	u->retry_ms = RETRY_FIRST_MS;
	r = uv_timer_init(loop, &u->retry);
	if (r < 0) {
		free(u);
		return r;
	}
	u->retry.data = u;
	uv_unref((uv_handle_t *)&u->retry);
	/* no bus is not an error: the states stay unknown and we try again later */
	if (conn_open(u) < 0)
		retry_schedule(u);
	*ret_u = u;
	return 0;
}

static void unitstate_close_cb(uv_handle_t *h)
{
	struct unitstate *u = h->data;

	for (size_t i = 0; i < u->n_units; i++)
		unit_free(u->units[i]);
	free(u->units);
	free(u);
}

void unitstate_free(struct unitstate *u)
{
	if (!u)
		return;
	if (u->conn)
		conn_close(u->conn);
	for (size_t i = 0; i < u->n_units; i++)
		unit_detach(u->units[i]);
	uv_close((uv_handle_t *)&u->retry, unitstate_close_cb);
}

int unitstate_watch(struct unitstate *u, const char *const *units, size_t n)
{
	struct us_unit **next;
	const char **sorted;
	size_t k = 0, j = 0;

	next = calloc(n ? n : 1, sizeof(*next));
	sorted = malloc((n ? n : 1) * sizeof(*sorted));
	if (!next || !sorted) {
		free(next);
		free(sorted);
		return -ENOMEM;
	}
	/* the new set sorted and without duplicates; nothing changes until it is complete */
	memcpy(sorted, units, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_str_ptr);
	for (size_t i = 0; i < n; i++) {
		struct us_unit *un;

		if (i > 0 && strcmp(sorted[i - 1], sorted[i]) == 0)
			continue;
		un = unit_find(u, sorted[i]);
		if (!un) {
			/* new units have no owner until the new set is committed */
			un = unit_new(sorted[i]);
			if (!un) {
				for (size_t q = 0; q < k; q++)
					if (!next[q]->u)
						unit_free(next[q]);
				free(next);
				free(sorted);
				return -ENOMEM;
			}
		}
		next[k++] = un;
	}
	free(sorted);
	/* both sorted: a merge finds the units no longer wanted */
	for (size_t i = 0; i < u->n_units; i++) {
		while (j < k && strcmp(next[j]->name, u->units[i]->name) < 0)
			j++;
		if (!(j < k && next[j] == u->units[i]))
			unit_free(u->units[i]);
	}
	free(u->units);
	u->units = next;
	u->n_units = k;
	for (size_t i = 0; i < k; i++)
		if (!u->units[i]->u)
			unit_attach(u, u->units[i]);
	if (u->conn)
		conn_update(u->conn);
	return 0;
}

int unitstate_add(struct unitstate *u, const char *unit)
{
	struct us_unit **grown, *un;
	size_t pos;

	if (unit_pos(u, unit, &pos))
		return 0;
	un = unit_new(unit);
	grown = un ? realloc(u->units, (u->n_units + 1) * sizeof(*grown)) : NULL;
	if (!grown) {
		unit_free(un);
		return -ENOMEM;
	}
	u->units = grown;
	memmove(&grown[pos + 1], &grown[pos], (u->n_units - pos) * sizeof(*grown));
	grown[pos] = un;
	u->n_units++;
	unit_attach(u, un);
	if (u->conn)
		conn_update(u->conn);
	return 0;
}

void unitstate_get(const struct unitstate *u, const char *unit, const char **ret_active,
		   const char **ret_sub)
{
	const struct us_unit *un = u && unit ? unit_find(u, unit) : NULL;

	*ret_active = un && un->active ? un->active : UNITSTATE_UNKNOWN;
	*ret_sub = un && un->sub ? un->sub : UNITSTATE_UNKNOWN;
}

int unitstate_connected(const struct unitstate *u)
{
	return u && u->conn && u->ready_seen;
}

int unitstate_unit_name(const char *type, const char *name, char **ret_unit)
{
	char *s = NULL;
	int r;

	if (!type || !name)
		return -EINVAL;
	if (strcmp(type, "vm") == 0)
		r = asprintf(&s, "microvm@%s.service", name);
	else if (strcmp(type, "container") == 0)
		r = asprintf(&s, "container@%s.service", name);
	else if (strcmp(type, "incus") == 0)
		r = asprintf(&s, "incus-workspace-%s.service", name);
	else
		return -EINVAL;
	if (r < 0)
		return -ENOMEM;
	*ret_unit = s;
	return 0;
}
