/* SPDX-License-Identifier: MIT */
/* The rpc server over real Unix sockets: every row of tests/data/cases/jsonrpc.md, batches,
 * limits, peer credentials, socket activation and clean shutdown. The server runs on a real
 * libuv loop in the test's thread; clients are plain blocking sockets in a second thread
 * (or forked children when they must change uid), and record the first thing that went
 * wrong for the main thread to report. */
#include "harness.h"

#include <dirent.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <json-c/json.h>
#include <uv.h>

#include "log.h"
#include "rpc.h"
#include "sdglue.h"
#include "ws_proto.h"

struct ctx {
	uv_loop_t loop;
	struct rpc_server *srv;
	uv_async_t async;
	pthread_t thr;
	char *dir, *path;
	void (*client)(struct ctx *x);
	bool closed;
	char failure[512]; /* written by the client thread, read after join */
};

static atomic_int n_notes;        /* test.note calls, notifications included */
static atomic_int n_deferred;     /* deferred replies sent (or dropped) */
static atomic_int n_slow;         /* test.slow calls started */

/* ---- the method table ---------------------------------------------------------------- */

static void m_echo(struct rpc_call *call, struct json_object *params)
{
	rpc_call_reply(call, params ? json_object_get(params) : json_object_new_object());
}

struct defer {
	uv_timer_t t;
	struct rpc_call *call;
	int ms;
};

static void defer_close_cb(uv_handle_t *h)
{
	free(h->data);
}

static void defer_cb(uv_timer_t *t)
{
	struct defer *d = t->data;
	struct json_object *res = json_object_new_object();

	json_object_object_add(res, "waited", json_object_new_int(d->ms));
	rpc_call_reply(d->call, res);
	atomic_fetch_add(&n_deferred, 1);
	uv_close((uv_handle_t *)t, defer_close_cb);
}

/* Answers later, from a timer: {"waited": ms}. */
static void m_slow(struct rpc_call *call, struct json_object *params)
{
	struct ctx *x = rpc_server_userdata(rpc_call_server(call));
	struct defer *d = calloc(1, sizeof(*d));
	struct json_object *ms;

	assert_non_null(d);
	atomic_fetch_add(&n_slow, 1);
	d->call = call;
	d->ms = 50;
	if (params && json_object_object_get_ex(params, "ms", &ms))
		d->ms = json_object_get_int(ms);
	d->t.data = d;
	assert_int_equal(uv_timer_init(&x->loop, &d->t), 0);
	assert_int_equal(uv_timer_start(&d->t, defer_cb, (uint64_t)d->ms, 0), 0);
}

static void m_fail(struct rpc_call *call, struct json_object *params)
{
	struct ws_err e = { 0 };

	(void)ws_fail(&e, -EINVAL, WS_E_TYPE_INVALID, "type \"blob\" is not vm, container or incus");
	ws_err_set_str(&e, "type", "blob");
	rpc_call_fail(call, &e);
	ws_err_clear(&e);
}

static void m_need_name(struct rpc_call *call, struct json_object *params)
{
	struct json_object *n;
	struct ws_err e = { 0 };

	if (!params || !json_object_object_get_ex(params, "name", &n)) {
		(void)ws_fail(&e, -EINVAL, WS_RPC_INVALID_PARAMS, "missing \"name\"");
		rpc_call_fail(call, &e);
		ws_err_clear(&e);
		return;
	}
	rpc_call_reply(call, json_object_get(n));
}

static void m_note(struct rpc_call *call, struct json_object *params)
{
	atomic_fetch_add(&n_notes, 1);
	rpc_call_reply(call, json_object_new_int(atomic_load(&n_notes)));
}

static void m_subscribe(struct rpc_call *call, struct json_object *params)
{
	struct ws_err e = { 0 };
	int r = rpc_call_subscribe(call);

	if (r < 0) {
		(void)ws_fail(&e, r, WS_E_BUSY, "too many subscribers");
		rpc_call_fail(call, &e);
		ws_err_clear(&e);
		return;
	}
	rpc_call_reply(call, json_object_new_boolean(true));
}

static void m_emit(struct rpc_call *call, struct json_object *params)
{
	struct json_object *p = json_object_new_object();

	json_object_object_add(p, "n", json_object_new_int(7));
	rpc_server_emit(rpc_call_server(call), "test.event", p);
	rpc_call_reply(call, json_object_new_int((int)rpc_server_n_connections(rpc_call_server(call))));
}

static void m_whoami(struct rpc_call *call, struct json_object *params)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "uid", json_object_new_int((int)rpc_call_peer_uid(call)));
	json_object_object_add(o, "id", json_object_new_string(rpc_call_id_text(call)));
	json_object_object_add(o, "method", json_object_new_string(rpc_call_method(call)));
	rpc_call_reply(call, o);
}

static const struct rpc_method methods[] = {
	{ "test.echo", 0, m_echo },	      { "test.slow", 0, m_slow },
	{ "test.fail", 0, m_fail },	      { "test.need", 0, m_need_name },
	{ "test.note", 0, m_note },	      { "test.subscribe", 0, m_subscribe },
	{ "test.emit", 0, m_emit },	      { "test.whoami", 0, m_whoami },
};

/* ---- the client side (second thread) --------------------------------------------------- */

struct cl {
	int fd;
	bool eof;
	size_t len;
	char buf[1 << 16];
};

static void cl_failf(struct ctx *x, int line, const char *fmt, ...) WS_PRINTF(3, 4);
static void cl_failf(struct ctx *x, int line, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	if (x->failure[0])
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(x->failure, sizeof(x->failure), "client, line %d: %s", line, msg);
}

#define CHECK(x, cond, ...)                                                                        \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			cl_failf((x), __LINE__, __VA_ARGS__);                                     \
			return;                                                                    \
		}                                                                                  \
	} while (0)

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { 5, 0 };

	if (fd < 0)
		return -1;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static struct cl *cl_open(struct ctx *x)
{
	struct cl *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = connect_to(x->path);
	if (c->fd < 0) {
		free(c);
		return NULL;
	}
	return c;
}

static void cl_close(struct cl *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

/* Writes everything; returns 0 or -errno (EPIPE once the server hung up). */
static int cl_send_n(struct cl *c, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static int cl_send(struct cl *c, const char *s)
{
	return cl_send_n(c, s, strlen(s));
}

/* The next line (malloc'd, without "\n"), or NULL after @timeout_ms or at end of stream
 * (c->eof). */
static char *cl_line(struct cl *c, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		int64_t left;
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - c->buf);
			char *line = strndup(c->buf, l);

			memmove(c->buf, nl + 1, c->len - l - 1);
			c->len -= l + 1;
			return line;
		}
		if (c->eof || c->len == sizeof(c->buf))
			return NULL;
		left = deadline - now_ms();
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return NULL;
		n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) { /* 0, or ECONNRESET after the server closed with input unread */
			c->eof = true;
			continue;
		}
		c->len += (size_t)n;
	}
}

static struct json_object *cl_json(struct cl *c, int timeout_ms)
{
	WS_AUTOFREE char *line = cl_line(c, timeout_ms);

	return line ? json_tokener_parse(line) : NULL;
}

/* True when nothing arrives within @ms (the connection may stay open). */
static bool cl_quiet(struct cl *c, int ms)
{
	WS_AUTOFREE char *line = cl_line(c, ms);

	return line == NULL;
}

/* True at end of stream within @ms, with no further line. */
static bool cl_eof(struct cl *c, int ms)
{
	WS_AUTOFREE char *line = cl_line(c, ms);

	return line == NULL && c->eof;
}

static struct json_object *get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static bool is_resp(struct json_object *o)
{
	struct json_object *v = get(o, "jsonrpc");

	return v && json_object_is_type(v, json_type_string) &&
	       strcmp(json_object_get_string(v), "2.0") == 0;
}

/* The error code of a response, or 0 when it is a result. */
static int err_code(struct json_object *o)
{
	return json_object_get_int(get(get(o, "error"), "code"));
}

static bool id_is_int(struct json_object *o, int id)
{
	struct json_object *v = NULL;

	return o && json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_int) &&
	       json_object_get_int(v) == id;
}

static bool id_is_null(struct json_object *o)
{
	struct json_object *v = (struct json_object *)1;

	return o && json_object_object_get_ex(o, "id", &v) && v == NULL;
}

static bool id_is_str(struct json_object *o, const char *s)
{
	struct json_object *v = NULL;

	return o && json_object_object_get_ex(o, "id", &v) &&
	       json_object_is_type(v, json_type_string) && !strcmp(json_object_get_string(v), s);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* ---- running a scenario ------------------------------------------------------------------ */

static void *client_main(void *arg)
{
	struct ctx *x = arg;

	x->client(x);
	uv_async_send(&x->async);
	return NULL;
}

static void server_done_cb(void *ud)
{
	struct ctx *x = ud;

	x->closed = true;
}

static void async_cb(uv_async_t *a)
{
	struct ctx *x = a->data;

	rpc_server_close(x->srv, server_done_cb, x);
	uv_close((uv_handle_t *)a, NULL);
}

static void ctx_init(struct ctx *x, const struct rpc_limits *lim)
{
	memset(x, 0, sizeof(*x));
	x->dir = h_tmpdir();
	assert_true(asprintf(&x->path, "%s/workspaced.sock", x->dir) > 0);
	assert_int_equal(uv_loop_init(&x->loop), 0);
	assert_int_equal(rpc_server_new(&x->loop, methods, WS_ARRAY_SIZE(methods), lim, x, &x->srv),
			 0);
}

static void ctx_start(struct ctx *x, const struct rpc_limits *lim)
{
	struct ws_err e = { 0 };

	ctx_init(x, lim);
	if (rpc_server_listen_path(x->srv, x->path, 0600, (gid_t)-1, &e) < 0)
		fail_msg("listen: %s", e.message);
}

/* Runs @fn in a client thread while the loop serves; closes the server when it returns,
 * then requires every handle closed and the socket file gone. */
static void ctx_run(struct ctx *x, void (*fn)(struct ctx *x))
{
	struct stat st;

	x->client = fn;
	assert_int_equal(uv_async_init(&x->loop, &x->async, async_cb), 0);
	x->async.data = x;
	assert_int_equal(pthread_create(&x->thr, NULL, client_main, x), 0);
	assert_int_equal(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(pthread_join(x->thr, NULL), 0);
	assert_true(x->closed);
	assert_int_equal(rpc_server_n_connections(x->srv), 0);
	rpc_server_free(x->srv);
	assert_int_equal(uv_loop_close(&x->loop), 0);
	assert_int_equal(lstat(x->path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(rmdir(x->dir), 0);
	free(x->path);
	free(x->dir);
	if (x->failure[0])
		fail_msg("%s", x->failure);
}

/* ---- jsonrpc.md, row by row ------------------------------------------------------------------ */

static void cl_rows(struct ctx *x)
{
	struct cl *c = cl_open(x);
	struct json_object *o;
	int notes;

	CHECK(x, c, "connect: %s", strerror(errno));

	/* a request: one line, result, id 1 */
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\",\"params\":{\"v\":\"x\"}}\n");
	o = cl_json(c, 2000);
	CHECK(x, is_resp(o) && id_is_int(o, 1) && get(o, "result") && !get(o, "error") &&
			 !strcmp(json_object_get_string(get(get(o, "result"), "v")), "x"),
	      "echo: %s", json_object_to_json_string(o));
	json_object_put(o);

	/* unknown method: -32601 with the string id */
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"no.such\"}\n");
	o = cl_json(c, 2000);
	CHECK(x, err_code(o) == -32601 && id_is_str(o, "a"), "no.such: %s",
	      json_object_to_json_string(o));
	json_object_put(o);

	/* a notification runs but gets nothing: the next line answers the next request */
	notes = atomic_load(&n_notes);
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"method\":\"test.note\"}\n");
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"method\":\"no.such\"}\n");
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"test.echo\"}\n");
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 5) && err_code(o) == 0, "after notification: %s",
	      json_object_to_json_string(o));
	json_object_put(o);
	CHECK(x, atomic_load(&n_notes) == notes + 1, "the notification did not run");

	/* missing params: -32602 from the handler */
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.need\"}\n");
	o = cl_json(c, 2000);
	CHECK(x, err_code(o) == -32602 && id_is_int(o, 2), "need: %s", json_object_to_json_string(o));
	json_object_put(o);

	/* application error: code, kind and detail */
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"test.fail\",\"params\":{\"type\":\"blob\"}}\n");
	o = cl_json(c, 2000);
	CHECK(x, err_code(o) == 1002 && id_is_int(o, 3) &&
			 !strcmp(json_object_get_string(get(get(get(o, "error"), "data"), "kind")),
				 "TYPE_INVALID") &&
			 !strcmp(json_object_get_string(get(get(get(o, "error"), "data"), "type")),
				 "blob"),
	      "fail: %s", json_object_to_json_string(o));
	json_object_put(o);

	/* empty batch: one error object, not an array */
	cl_send(c, "[]\n");
	o = cl_json(c, 2000);
	CHECK(x, json_object_is_type(o, json_type_object) && err_code(o) == -32600 && id_is_null(o),
	      "[]: %s", json_object_to_json_string(o));
	json_object_put(o);

	/* parse error, then the next line is answered normally */
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\"\n");
	o = cl_json(c, 2000);
	CHECK(x, err_code(o) == -32700 && id_is_null(o), "parse error: %s",
	      json_object_to_json_string(o));
	json_object_put(o);
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"test.echo\"}\n");
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 6) && err_code(o) == 0, "after parse error: %s",
	      json_object_to_json_string(o));
	json_object_put(o);

	/* two requests in one write: two lines with the right ids */
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"test.echo\",\"params\":{\"n\":10}}\n"
		   "{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"test.echo\",\"params\":{\"n\":11}}\n");
	for (int i = 0; i < 2; i++) {
		int id;

		o = cl_json(c, 2000);
		id = json_object_get_int(get(o, "id"));
		CHECK(x, (id == 10 || id == 11) &&
				 json_object_get_int(get(get(o, "result"), "n")) == id,
		      "pipelined: %s", json_object_to_json_string(o));
		json_object_put(o);
	}
	CHECK(x, cl_quiet(c, 100), "an extra line arrived");
	cl_close(c);
}

static void test_rows(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_rows);
}

/* Request validation beyond the table: versions, id types, params, odd texts. */
static void cl_validation(struct ctx *x)
{
	static const struct {
		const char *line;
		int code;     /* 0: a result */
		int id;       /* -1: id null, -2: no line at all */
	} cases[] = {
		{ "{\"id\":1,\"method\":\"test.echo\"}", -32600, 1 },
		{ "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"test.echo\"}", -32600, 1 },
		{ "{\"jsonrpc\":2,\"id\":1,\"method\":\"test.echo\"}", -32600, 1 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"test.echo\"}", -32600, -1 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"test.echo\"}", -32600, -1 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"test.echo\"}", -32600, -1 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"test.echo\"}", 0, -1 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":5}", -32600, 7 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":7}", -32600, 7 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"test.echo\",\"params\":[1]}", -32602, 8 },
		{ "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"test.echo\",\"params\":\"x\"}", -32602, 8 },
		{ "{\"jsonrpc\":\"2.0\",\"method\":\"test.echo\",\"params\":[1]}", 0, -2 },
		{ "{\"jsonrpc\":\"2.0\",\"method\":7}", -32600, -1 },
		{ "42", -32600, -1 },
		{ "\"x\"", -32600, -1 },
		{ "null", -32600, -1 },
		{ "{} {}", -32700, -1 },
		{ "{\"jsonrpc\":'2.0'}", -32700, -1 },
		{ "\xff\xfe", -32700, -1 },
		{ "   ", 0, -2 },
	};
	struct cl *c = cl_open(x);

	CHECK(x, c, "connect");
	for (size_t i = 0; i < WS_ARRAY_SIZE(cases); i++) {
		struct json_object *o;

		cl_send(c, cases[i].line);
		cl_send(c, "\n");
		if (cases[i].id == -2) {
			CHECK(x, cl_quiet(c, 100), "%s: answered", cases[i].line);
			continue;
		}
		o = cl_json(c, 2000);
		CHECK(x, is_resp(o) && err_code(o) == cases[i].code &&
				 (cases[i].id == -1 ? id_is_null(o) : id_is_int(o, cases[i].id)),
		      "%s -> %s", cases[i].line, json_object_to_json_string(o));
		CHECK(x, cases[i].code != 0 || get(o, "result"), "%s: no result", cases[i].line);
		json_object_put(o);
	}
	cl_close(c);
}

static void test_validation(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_validation);
}

static struct json_object *find_id(struct json_object *arr, int id)
{
	for (size_t i = 0; i < json_object_array_length(arr); i++)
		if (id_is_int(json_object_array_get_idx(arr, i), id))
			return json_object_array_get_idx(arr, i);
	return NULL;
}

static void cl_batches(struct ctx *x)
{
	struct cl *c = cl_open(x);
	struct json_object *o, *e;
	int notes;

	CHECK(x, c, "connect");
	notes = atomic_load(&n_notes);
	cl_send(c, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\",\"params\":{\"a\":1}},"
		   "{\"jsonrpc\":\"2.0\",\"method\":\"test.note\"},"
		   "{\"foo\":1},"
		   "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.slow\",\"params\":{\"ms\":60}},"
		   "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"no.such\"},"
		   "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"test.fail\"}]\n");
	o = cl_json(c, 2000);
	CHECK(x, json_object_is_type(o, json_type_array) && json_object_array_length(o) == 5,
	      "batch: %s", json_object_to_json_string(o));
	CHECK(x, err_code(find_id(o, 1)) == 0 &&
			 json_object_get_int(get(get(find_id(o, 1), "result"), "a")) == 1,
	      "batch id 1: %s", json_object_to_json_string(o));
	CHECK(x, json_object_get_int(get(get(find_id(o, 2), "result"), "waited")) == 60,
	      "batch id 2: %s", json_object_to_json_string(o));
	CHECK(x, err_code(find_id(o, 3)) == -32601, "batch id 3");
	CHECK(x, err_code(find_id(o, 4)) == 1002, "batch id 4");
	e = NULL;
	for (size_t i = 0; i < json_object_array_length(o); i++)
		if (id_is_null(json_object_array_get_idx(o, i)))
			e = json_object_array_get_idx(o, i);
	CHECK(x, e && err_code(e) == -32600, "invalid member: %s", json_object_to_json_string(o));
	json_object_put(o);
	CHECK(x, atomic_load(&n_notes) == notes + 1, "batch notification did not run");

	/* only notifications: nothing at all, but they run */
	cl_send(c, "[{\"jsonrpc\":\"2.0\",\"method\":\"test.note\"},"
		   "{\"jsonrpc\":\"2.0\",\"method\":\"test.note\"}]\n");
	CHECK(x, cl_quiet(c, 150), "all-notification batch was answered");
	CHECK(x, atomic_load(&n_notes) == notes + 3, "batch notifications did not run");

	/* a batch of junk: an array of errors */
	cl_send(c, "[1,\"x\"]\n");
	o = cl_json(c, 2000);
	CHECK(x, json_object_is_type(o, json_type_array) && json_object_array_length(o) == 2 &&
			 err_code(json_object_array_get_idx(o, 0)) == -32600 &&
			 id_is_null(json_object_array_get_idx(o, 1)),
	      "[1,\"x\"]: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(c);
}

static void test_batches(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_batches);
}

/* Deferred answers come when ready, not in request order. */
static void cl_out_of_order(struct ctx *x)
{
	struct cl *c = cl_open(x);
	struct json_object *o;

	CHECK(x, c, "connect");
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.slow\",\"params\":{\"ms\":150}}\n"
		   "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.slow\",\"params\":{\"ms\":10}}\n"
		   "{\"jsonrpc\":\"2.0\",\"id\":\"w\",\"method\":\"test.whoami\"}\n");
	o = cl_json(c, 2000);
	CHECK(x, id_is_str(o, "w") &&
			 json_object_get_int(get(get(o, "result"), "uid")) == (int)geteuid() &&
			 !strcmp(json_object_get_string(get(get(o, "result"), "id")), "\"w\"") &&
			 !strcmp(json_object_get_string(get(get(o, "result"), "method")),
				 "test.whoami"),
	      "first: %s", json_object_to_json_string(o));
	json_object_put(o);
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 2), "second: %s", json_object_to_json_string(o));
	json_object_put(o);
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 1) && json_object_get_int(get(get(o, "result"), "waited")) == 150,
	      "third: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(c);
}

static void test_out_of_order(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_out_of_order);
}

/* Row: 5 bytes every 20 ms on one connection; another client is answered meanwhile. */
static void cl_slow_client(struct ctx *x)
{
	static const char req[] =
		"{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"test.echo\",\"params\":{\"s\":1}}\n";
	struct cl *slow = cl_open(x), *fast = cl_open(x);
	int64_t worst = 0;
	struct json_object *o;

	CHECK(x, slow && fast, "connect");
	for (size_t off = 0; off < sizeof(req) - 1; off += 5) {
		size_t n = sizeof(req) - 1 - off < 5 ? sizeof(req) - 1 - off : 5;
		char line[128];
		int64_t t0;

		CHECK(x, cl_send_n(slow, req + off, n) == 0, "slow write");
		t0 = now_ms();
		snprintf(line, sizeof(line),
			 "{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"test.echo\"}\n", off);
		cl_send(fast, line);
		o = cl_json(fast, 2000);
		CHECK(x, id_is_int(o, (int)off), "fast %zu: %s", off, json_object_to_json_string(o));
		json_object_put(o);
		if (now_ms() - t0 > worst)
			worst = now_ms() - t0;
		if (off + 5 < sizeof(req) - 1)
			CHECK(x, cl_quiet(slow, 0), "slow client answered before its line ended");
		sleep_ms(20);
	}
	CHECK(x, worst < 200, "the fast client waited %lld ms", (long long)worst);
	o = cl_json(slow, 2000);
	CHECK(x, id_is_int(o, 99) && json_object_get_int(get(get(o, "result"), "s")) == 1,
	      "slow: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(slow);
	cl_close(fast);
}

static void test_slow_client(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_slow_client);
}

/* Row: a 2 MiB line gets -32600 with id null and a closed connection; others go on. */
static void cl_oversize(struct ctx *x)
{
	size_t big = 2 * 1024 * 1024;
	char *blob = malloc(big + 1);
	struct cl *c = cl_open(x), *d;
	struct json_object *o;

	CHECK(x, blob && c, "setup");
	memset(blob, 'a', big);
	blob[0] = '"';
	blob[big - 1] = '\n';
	(void)cl_send_n(c, blob, big); /* fails with EPIPE once the server hangs up */
	free(blob);
	o = cl_json(c, 2000);
	CHECK(x, err_code(o) == -32600 && id_is_null(o), "oversize: %s",
	      json_object_to_json_string(o));
	json_object_put(o);
	CHECK(x, cl_eof(c, 2000), "connection not closed after the oversize line");
	cl_close(c);

	d = cl_open(x);
	CHECK(x, d, "connect after oversize");
	cl_send(d, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\"}\n");
	o = cl_json(d, 2000);
	CHECK(x, id_is_int(o, 1) && err_code(o) == 0, "next client: %s",
	      json_object_to_json_string(o));
	json_object_put(o);
	cl_close(d);
}

static void test_oversize(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_oversize);
}

/* A line of exactly the limit passes; one byte more does not (limit lowered to 4 KiB). */
static void cl_limit_edge(struct ctx *x)
{
	char line[4096 + 2];
	const char *head = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\",\"params\":{\"p\":\"";
	size_t hl = strlen(head);
	struct cl *c = cl_open(x);
	struct json_object *o;

	CHECK(x, c, "connect");
	memcpy(line, head, hl);
	memset(line + hl, 'x', 4096 - hl - 3);
	memcpy(line + 4096 - 3, "\"}}", 3);
	line[4096] = '\n';
	line[4097] = '\0';
	cl_send(c, line);
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 1) && err_code(o) == 0, "line at the limit: %.80s",
	      json_object_to_json_string(o));
	json_object_put(o);
	memmove(line + 1, line, sizeof(line) - 1);
	line[0] = ' ';
	line[4098 - 1] = '\0';
	cl_send(c, line);
	cl_send(c, "\n");
	o = cl_json(c, 2000);
	CHECK(x, err_code(o) == -32600 && id_is_null(o), "line over the limit: %.80s",
	      json_object_to_json_string(o));
	json_object_put(o);
	CHECK(x, cl_eof(c, 2000), "not closed");
	cl_close(c);
}

static void test_limit_edge(void **state)
{
	struct rpc_limits lim = { .max_message = 4096 };
	struct ctx x;

	ctx_start(&x, &lim);
	ctx_run(&x, cl_limit_edge);
}

/* Row: a client that leaves before its reply; fds come back, the daemon serves on. */
static void cl_disconnect(struct ctx *x)
{
	int before = count_fds(), deferred = atomic_load(&n_deferred), after = -1;
	struct json_object *o;
	struct cl *c;

	for (int i = 0; i < 5; i++) {
		c = cl_open(x);
		CHECK(x, c, "connect");
		cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.slow\",\"params\":{\"ms\":80}}\n"
			   "[{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.slow\",\"params\":{\"ms\":40}}]\n");
		sleep_ms(i * 5); /* close before, during and after the server reads */
		cl_close(c);
	}
	for (int i = 0; i < 300 && (atomic_load(&n_deferred) < deferred + 10 || after != before);
	     i++) {
		sleep_ms(10);
		after = count_fds();
	}
	CHECK(x, atomic_load(&n_deferred) == deferred + 10, "deferred replies: %d",
	      atomic_load(&n_deferred) - deferred);
	CHECK(x, after == before, "open fds: %d before, %d after", before, after);

	c = cl_open(x);
	CHECK(x, c, "connect again");
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"test.echo\"}\n");
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 3), "after disconnects: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(c);
}

static void test_disconnect_before_reply(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_disconnect);
}

/* Like `printf ... | socat - UNIX-CONNECT:...`: request, half-close, read the reply. */
static void cl_half_close(struct ctx *x)
{
	struct cl *c = cl_open(x);
	struct json_object *o;

	CHECK(x, c, "connect");
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.slow\",\"params\":{\"ms\":50}}\n"
		   "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.echo\"}\n");
	CHECK(x, shutdown(c->fd, SHUT_WR) == 0, "shutdown");
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 2), "first: %s", json_object_to_json_string(o));
	json_object_put(o);
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 1), "second: %s", json_object_to_json_string(o));
	json_object_put(o);
	CHECK(x, cl_eof(c, 2000), "the server did not close after the last reply");
	cl_close(c);
}

static void test_half_close(void **state)
{
	struct ctx x;

	ctx_start(&x, NULL);
	ctx_run(&x, cl_half_close);
}

/* Row 0 of PROTOCOL.md's example: `printf ... | socat - UNIX-CONNECT:$sock`. */
static void cl_socat(struct ctx *x)
{
	char cmd[512], out[4096];
	size_t n;
	FILE *p;

	snprintf(cmd, sizeof(cmd),
		 "printf '%%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\","
		 "\"params\":{\"k\":\"v\"}}' | socat -t 5 - UNIX-CONNECT:%s",
		 x->path);
	p = popen(cmd, "r");
	CHECK(x, p, "popen");
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	CHECK(x, pclose(p) == 0, "socat failed");
	CHECK(x, strcmp(out, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"k\":\"v\"}}\n") == 0,
	      "socat got '%s'", out);
}

static void test_socat(void **state)
{
	struct ctx x;

	if (!h_have("socat"))
		skip();
	ctx_start(&x, NULL);
	ctx_run(&x, cl_socat);
}

/* ---- limits ----------------------------------------------------------------------------------- */

static void cl_max_connections(struct ctx *x)
{
	struct cl *a = cl_open(x), *b = cl_open(x), *c = cl_open(x);
	struct json_object *o;
	bool ok = false;

	CHECK(x, a && b && c, "connect");
	o = cl_json(c, 2000);
	CHECK(x, err_code(o) == 1051 && id_is_null(o), "third: %s", json_object_to_json_string(o));
	json_object_put(o);
	CHECK(x, cl_eof(c, 2000), "third not closed");
	cl_close(c);
	cl_send(a, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\"}\n");
	o = cl_json(a, 2000);
	CHECK(x, id_is_int(o, 1), "first: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(a);
	/* once the server has seen the first one go, there is room again */
	for (int i = 0; i < 100 && !ok; i++) {
		c = cl_open(x);
		CHECK(x, c, "reconnect");
		cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.echo\"}\n");
		o = cl_json(c, 2000);
		ok = id_is_int(o, 2) && err_code(o) == 0;
		json_object_put(o);
		cl_close(c);
		if (!ok)
			sleep_ms(10);
	}
	CHECK(x, ok, "no room after a client left");
	cl_close(b);
}

static void test_max_connections(void **state)
{
	struct rpc_limits lim = { .max_connections = 2 };
	struct ctx x;

	ctx_start(&x, &lim);
	ctx_run(&x, cl_max_connections);
}

static void cl_max_pending(struct ctx *x)
{
	struct cl *c = cl_open(x);
	struct json_object *o;
	int seen = 0;

	CHECK(x, c, "connect");
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.slow\",\"params\":{\"ms\":100}}\n"
		   "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.slow\",\"params\":{\"ms\":100}}\n"
		   "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"test.slow\",\"params\":{\"ms\":100}}\n");
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 3) && err_code(o) == 1051, "over the limit: %s",
	      json_object_to_json_string(o));
	json_object_put(o);
	for (int i = 0; i < 2; i++) {
		o = cl_json(c, 2000);
		CHECK(x, err_code(o) == 0 && get(o, "result"), "in flight: %s",
		      json_object_to_json_string(o));
		seen |= 1 << json_object_get_int(get(o, "id"));
		json_object_put(o);
	}
	CHECK(x, seen == 6, "ids");
	/* answered calls free their slots */
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"test.slow\",\"params\":{\"ms\":1}}\n");
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 4) && err_code(o) == 0, "after: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(c);
}

static void test_max_pending(void **state)
{
	struct rpc_limits lim = { .max_pending = 2 };
	struct ctx x;

	ctx_start(&x, &lim);
	ctx_run(&x, cl_max_pending);
}

/* A client that sends and never reads is cut off once its replies pile up. */
static void cl_not_reading(struct ctx *x)
{
	struct cl *c = cl_open(x), *d;
	char *req = malloc(20000);
	struct json_object *o;
	int answered = 0, i;

	CHECK(x, c && req, "setup");
	i = snprintf(req, 20000, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\",\"params\":{\"p\":\"");
	memset(req + i, 'y', 16000);
	strcpy(req + i + 16000, "\"}}\n");
	for (i = 0; i < 200; i++)
		if (cl_send(c, req) < 0)
			break;
	free(req);
	/* now read what was sent before the cut: fewer than asked, then the end */
	while ((o = cl_json(c, 2000))) {
		answered++;
		json_object_put(o);
	}
	CHECK(x, c->eof, "no end of stream");
	CHECK(x, answered < 200, "all %d answered", answered);
	cl_close(c);

	d = cl_open(x);
	CHECK(x, d, "connect");
	cl_send(d, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\"}\n");
	o = cl_json(d, 2000);
	CHECK(x, id_is_int(o, 1), "other client: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(d);
}

static void test_not_reading(void **state)
{
	struct rpc_limits lim = { .max_queued_bytes = 64 * 1024 };
	struct ctx x;

	ctx_start(&x, &lim);
	ctx_run(&x, cl_not_reading);
}

static void cl_events(struct ctx *x)
{
	struct cl *a = cl_open(x), *b = cl_open(x), *e = cl_open(x);
	struct json_object *o, *p;
	bool ok = false;

	CHECK(x, a && b && e, "connect");
	cl_send(a, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.subscribe\"}\n");
	o = cl_json(a, 2000);
	CHECK(x, id_is_int(o, 1) && json_object_get_boolean(get(o, "result")), "a: %s",
	      json_object_to_json_string(o));
	json_object_put(o);
	cl_send(b, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.subscribe\"}\n");
	o = cl_json(b, 2000);
	CHECK(x, err_code(o) == 1051, "b over the limit: %s", json_object_to_json_string(o));
	json_object_put(o);

	cl_send(e, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"test.emit\"}\n");
	o = cl_json(e, 2000);
	CHECK(x, id_is_int(o, 2), "emit: %s", json_object_to_json_string(o));
	json_object_put(o);
	o = cl_json(a, 2000);
	p = get(o, "params");
	CHECK(x, is_resp(o) && !get(o, "id") &&
			 !strcmp(json_object_get_string(get(o, "method")), "event") &&
			 !strcmp(json_object_get_string(get(p, "type")), "test.event") &&
			 json_object_get_int(get(p, "n")) == 7,
	      "event: %s", json_object_to_json_string(o));
	json_object_put(o);
	CHECK(x, cl_quiet(b, 50) && cl_quiet(e, 0), "event went to a non-subscriber");

	/* a subscriber that leaves frees its place */
	cl_close(a);
	for (int i = 0; i < 100 && !ok; i++) {
		cl_send(b, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"test.subscribe\"}\n");
		o = cl_json(b, 2000);
		ok = err_code(o) == 0 && id_is_int(o, 3);
		json_object_put(o);
		if (!ok)
			sleep_ms(10);
	}
	CHECK(x, ok, "b could not subscribe after a left");
	cl_close(b);
	cl_close(e);
}

static void test_events(void **state)
{
	struct rpc_limits lim = { .max_subscribers = 1 };
	struct ctx x;

	ctx_start(&x, &lim);
	ctx_run(&x, cl_events);
}

/* ---- the listening socket --------------------------------------------------------------------- */

static void close_and_free(struct ctx *x)
{
	rpc_server_close(x->srv, server_done_cb, x);
	assert_int_equal(uv_run(&x->loop, UV_RUN_DEFAULT), 0);
	assert_true(x->closed);
	rpc_server_free(x->srv);
	assert_int_equal(uv_loop_close(&x->loop), 0);
}

static void test_listen_path(void **state)
{
	struct ctx x, y;
	struct ws_err e = { 0 };
	struct stat st;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	ctx_init(&x, NULL);
	/* a stale socket file (nobody listening) is replaced */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", x.path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(rpc_server_listen_path(x.srv, x.path, 0600, (gid_t)-1, &e), 0);
	assert_int_equal(stat(x.path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);

	/* a live one is refused, and left alone */
	memset(&y, 0, sizeof(y));
	assert_int_equal(uv_loop_init(&y.loop), 0);
	assert_int_equal(rpc_server_new(&y.loop, methods, WS_ARRAY_SIZE(methods), NULL, &y, &y.srv),
			 0);
	assert_int_equal(rpc_server_listen_path(y.srv, x.path, 0600, (gid_t)-1, &e), -EADDRINUSE);
	assert_int_equal(e.code, WS_E_BUSY);
	assert_non_null(strstr(e.message, x.path));
	ws_err_clear(&e);
	assert_int_equal(stat(x.path, &st), 0);
	close_and_free(&y);

	close_and_free(&x);
	assert_int_equal(lstat(x.path, &st), -1);

	/* not a socket: refused, untouched */
	h_write(x.path, "keep", 4);
	ctx_init(&y, NULL);
	free(y.path);
	y.path = strdup(x.path);
	assert_int_equal(rpc_server_listen_path(y.srv, x.path, 0600, (gid_t)-1, &e), -EEXIST);
	ws_err_clear(&e);
	free(h_read(x.path, NULL));
	assert_int_equal(unlink(x.path), 0);
	close_and_free(&y);
	assert_int_equal(rmdir(y.dir), 0);
	free(y.dir);
	free(y.path);

	/* with a group: 0660 and that group */
	ctx_init(&y, NULL);
	assert_int_equal(rpc_server_listen_path(y.srv, y.path, 0660, 0, &e), 0);
	assert_int_equal(stat(y.path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0660);
	assert_int_equal(st.st_gid, 0);
	close_and_free(&y);
	assert_int_equal(rmdir(y.dir), 0);
	free(y.dir);
	free(y.path);

	/* too long a path */
	ctx_init(&y, NULL);
	{
		char longp[200];

		memset(longp, 'l', sizeof(longp) - 1);
		longp[0] = '/';
		longp[sizeof(longp) - 1] = '\0';
		assert_int_equal(rpc_server_listen_path(y.srv, longp, 0600, (gid_t)-1, &e),
				 -ENAMETOOLONG);
		ws_err_clear(&e);
	}
	close_and_free(&y);
	assert_int_equal(rmdir(y.dir), 0);
	free(y.dir);
	free(y.path);

	assert_int_equal(rmdir(x.dir), 0);
	free(x.dir);
	free(x.path);
}

/* Socket activation: a listening socket on fd 3 with LISTEN_FDS/LISTEN_PID, as systemd
 * passes it. */
static void cl_activated(struct ctx *x)
{
	struct cl *c = cl_open(x);
	struct json_object *o;

	CHECK(x, c, "connect");
	cl_send(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\"}\n");
	o = cl_json(c, 2000);
	CHECK(x, id_is_int(o, 1), "activated: %s", json_object_to_json_string(o));
	json_object_put(o);
	cl_close(c);
}

static void test_socket_activation(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ws_err e = { 0 };
	struct ctx x;
	char pid[32];
	int fd, lfd;

	if (fcntl(3, F_GETFD) >= 0)
		skip(); /* fd 3 is taken in this process */
	/* hold fd 3 so that the loop's own fds go elsewhere */
	fd = open("/dev/null", O_RDONLY);
	assert_true(fd >= 0);
	if (fd != 3) {
		assert_int_equal(dup2(fd, 3), 3);
		close(fd);
	}
	ctx_init(&x, NULL);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", x.path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	if (fd != 3) {
		assert_int_equal(dup2(fd, 3), 3);
		close(fd);
	}
	/* another process's sockets are not ours */
	setenv("LISTEN_FDS", "1", 1);
	setenv("LISTEN_PID", "1", 1);
	assert_int_equal(sdglue_listen_fd(), 0);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_PID"));

	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("LISTEN_FDS", "1", 1);
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDNAMES", "workspaced.socket", 1);
	lfd = sdglue_listen_fd();
	assert_int_equal(lfd, 3);
	assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDNAMES"));
	assert_int_equal(rpc_server_listen_fd(x.srv, lfd, &e), 0);
	/* the server does not own the path: we remove it, as systemd would */
	x.client = cl_activated;
	assert_int_equal(uv_async_init(&x.loop, &x.async, async_cb), 0);
	x.async.data = &x;
	assert_int_equal(pthread_create(&x.thr, NULL, client_main, &x), 0);
	assert_int_equal(uv_run(&x.loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(pthread_join(x.thr, NULL), 0);
	assert_true(x.closed);
	rpc_server_free(x.srv);
	assert_int_equal(uv_loop_close(&x.loop), 0);
	assert_int_equal(fcntl(3, F_GETFD), -1); /* closed with the server */
	assert_int_equal(unlink(x.path), 0);     /* never unlinked: not ours */
	assert_int_equal(rmdir(x.dir), 0);
	free(x.path);
	free(x.dir);
	if (x.failure[0])
		fail_msg("%s", x.failure);

	/* more than one socket is refused (two real fds stand in for them) */
	if (fcntl(4, F_GETFD) >= 0)
		return;
	fd = open("/dev/null", O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(dup2(fd, 3), 3);
	assert_int_equal(dup2(fd, 4), 4);
	close(fd);
	setenv("LISTEN_FDS", "2", 1);
	setenv("LISTEN_PID", pid, 1);
	assert_int_equal(sdglue_listen_fd(), -EINVAL);
	assert_null(getenv("LISTEN_FDS"));
	close(3);
	close(4);
}

/* ---- peer credentials (root only: the children become other users) -------------------------- */

/* In a child: become @uid/@gid, connect, send one request, and exit 0 when the first line
 * is error 1050 (@expect_denied) or a result. */
static int peer_child(const char *path, uid_t uid, gid_t gid, bool expect_denied)
{
	char buf[4096];
	size_t len = 0;
	ssize_t n;
	int fd;
	struct timeval tv = { 3, 0 };
	static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.whoami\"}\n";

	if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
		return 10;
	fd = connect_to(path);
	if (fd < 0)
		return 11;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)!write(fd, req, sizeof(req) - 1);
	while (len < sizeof(buf) - 1 && !memchr(buf, '\n', len)) {
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			return 12;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (expect_denied) {
		if (!strstr(buf, "\"code\":1050") || !strstr(buf, "\"id\":null") ||
		    !strstr(buf, "PERMISSION_DENIED"))
			return 13;
		n = read(fd, buf, sizeof(buf)); /* then the end */
		return n <= 0 ? 0 : 14;
	}
	return strstr(buf, "\"result\"") && strstr(buf, "\"id\":1") ? 0 : 15;
}

static int peer_gid_ok;

static void cl_peers(struct ctx *x)
{
	static const struct {
		uid_t uid;
		gid_t gid;
		bool denied;
	} who[] = {
		{ 65534, 65534, true },  /* nobody */
		{ 65534, 4242, false },  /* nobody, with the socket's group */
		{ 0, 0, false },         /* root */
	};

	for (size_t i = 0; i < WS_ARRAY_SIZE(who); i++) {
		pid_t pid = fork();
		int st;

		CHECK(x, pid >= 0, "fork");
		if (pid == 0)
			_exit(peer_child(x->path, who[i].uid, who[i].gid, who[i].denied));
		CHECK(x, waitpid(pid, &st, 0) == pid, "waitpid");
		CHECK(x, WIFEXITED(st) && WEXITSTATUS(st) == 0, "peer %d/%d: child status %d",
		      (int)who[i].uid, (int)who[i].gid, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	}
	peer_gid_ok = 1;
}

static void test_peer_check(void **state)
{
	struct ws_err e = { 0 };
	struct ctx x;

	if (geteuid() != 0)
		skip();
	ctx_init(&x, NULL);
	assert_int_equal(rpc_server_listen_path(x.srv, x.path, 0660, 4242, &e), 0);
	/* let the other users reach the socket: the peer check is what is under test */
	assert_int_equal(chmod(x.dir, 0755), 0);
	assert_int_equal(chmod(x.path, 0666), 0);
	ctx_run(&x, cl_peers);
	assert_int_equal(peer_gid_ok, 1);
}

static void test_server_close_with_calls(void **state)
{
	static const char req[] =
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.slow\",\"params\":{\"ms\":30}}\n";
	int deferred = atomic_load(&n_deferred), slow = atomic_load(&n_slow);
	struct ctx x;
	int fd;

	/* Calls in flight when the server closes are answered into the void. */
	ctx_start(&x, NULL);
	fd = connect_to(x.path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
	while (atomic_load(&n_slow) == slow)
		uv_run(&x.loop, UV_RUN_ONCE);
	rpc_server_close(x.srv, server_done_cb, &x);
	assert_int_equal(uv_run(&x.loop, UV_RUN_DEFAULT), 0);
	assert_true(x.closed);
	assert_int_equal(atomic_load(&n_deferred), deferred + 1);
	rpc_server_free(x.srv);
	assert_int_equal(uv_loop_close(&x.loop), 0);
	close(fd);
	assert_int_equal(rmdir(x.dir), 0);
	free(x.path);
	free(x.dir);
}

/* ws_utf8_valid() at the edges of each sequence length (RFC 3629, table 3-7 of Unicode). */
static void test_utf8_valid(void **unused)
{
	static const char *const good[] = {
		"", "plain", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80",
		"\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "a\xc3\xa9z",
	};
	static const char *const bad[] = {
		"\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xed\xbf\xbf",
		"\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xfe", "\xff",
		"\xe2\x82", "\xc3", "\xf0\x90\x80", "a\xc3(z", "\xe2\x28\xa1",
	};

	for (size_t i = 0; i < WS_ARRAY_SIZE(good); i++)
		if (!ws_utf8_valid(good[i], strlen(good[i])))
			fail_msg("good case %zu refused", i);
	for (size_t i = 0; i < WS_ARRAY_SIZE(bad); i++)
		if (ws_utf8_valid(bad[i], strlen(bad[i])))
			fail_msg("bad case %zu accepted", i);
	assert_true(ws_utf8_valid("a\0b", 3)); /* NUL is a character; the length decides */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_rows),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_batches),
		cmocka_unit_test(test_out_of_order),
		cmocka_unit_test(test_slow_client),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_limit_edge),
		cmocka_unit_test(test_disconnect_before_reply),
		cmocka_unit_test(test_half_close),
		cmocka_unit_test(test_socat),
		cmocka_unit_test(test_max_connections),
		cmocka_unit_test(test_max_pending),
		cmocka_unit_test(test_not_reading),
		cmocka_unit_test(test_events),
		cmocka_unit_test(test_listen_path),
		cmocka_unit_test(test_socket_activation),
		cmocka_unit_test(test_peer_check),
		cmocka_unit_test(test_server_close_with_calls),
	};

	signal(SIGPIPE, SIG_IGN);
	log_init("test-rpc");
	log_set_level(LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
