/* SPDX-License-Identifier: MIT */
/* The JSON-RPC 2.0 server on the daemon's Unix socket: listening (bound here or passed by
 * systemd), the SO_PEERCRED check, newline framing with a size cap, request validation,
 * batches, dispatch to the method table, replies queued per connection with limits, and
 * event fan-out to subscribers. Handlers answer when they like; a connection's memory lives
 * until its handle is closed and no call refers to it. It knows nothing of workspaces and
 * does not order write methods: methods does. */
#include "rpc.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>
#include <json-c/printbuf.h>

#include "log.h"
#include "ws_proto.h"

#define RPC_DEFAULT_MAX_CONNECTIONS 128
#define RPC_DEFAULT_MAX_PENDING 64
#define RPC_DEFAULT_MAX_QUEUED_BYTES (16u * 1024 * 1024)
#define RPC_DEFAULT_MAX_SUBSCRIBERS 64
#define RPC_CLOSE_GRACE_MS 2000   /* how long rpc_server_close waits for slow readers */
#define RPC_LOG_WINDOW_MS 10000   /* rate limit for per-client log lines ... */
#define RPC_READ_BUF 65536       /* bytes asked of the kernel per read */
#define RPC_LOG_BURST 5           /* ... at most this many per window */

struct rpc_conn {
	uv_pipe_t pipe;              /* first member; closed once, memory freed at refs 0 */
	const char *cur_line;        /* the line being dispatched (borrowed), else NULL */
	uv_shutdown_t shutdown;      /* used by conn_close_after_write */
	struct rpc_server *srv;      /* borrowed; not touched once the handle is closed */
	struct rpc_conn *prev, *next; /* the server's list, while the handle is open */
	struct ws_linebuf lb;        /* owned */
	uid_t uid;
	gid_t gid;
	pid_t pid;
	unsigned refs;               /* 1 for the open handle + 1 per call and batch */
	size_t pending;              /* calls not answered yet */
	size_t queued;               /* bytes handed to uv_write and not yet written */
	bool closing;                /* uv_close called */
	bool draining;               /* no more input is processed */
	bool shut;                   /* uv_shutdown started: nothing more is sent */
	bool read_eof;               /* the peer stopped sending; close when all answered */
	bool subscribed;
};

struct rpc_batch {
	struct rpc_conn *conn;          /* holds a reference */
	struct json_object *responses;  /* owned array */
	size_t outstanding;             /* calls not answered + 1 while dispatching */
};

struct rpc_call {
	struct rpc_conn *conn;          /* holds a reference */
	struct rpc_batch *batch;        /* NULL for a single request */
	struct json_object *req;        /* owned; params and id point into it */
	struct json_object *id;         /* borrowed from req (or owned, see own_id); NULL
					 * for a notification */
	bool own_id;                    /* a simple request has no req: id is ours */
	bool notification;
	const char *method;             /* borrowed from the method table */
	char *id_text;                  /* owned, made on demand */
};

struct rpc_write {
	uv_write_t req;                 /* first member */
	struct rpc_conn *conn;
	size_t len;
	char data[];
};

struct rpc_server {
	uv_loop_t *loop;
	const struct rpc_method *methods; /* borrowed */
	size_t n_methods;
	struct rpc_limits lim;
	void *userdata;
	uid_t uid;
	gid_t gid;                       /* (gid_t)-1: no group */
	uv_pipe_t listener;
	bool listener_open;              /* uv_pipe_init done, uv_close not yet */
	char *path;                      /* owned; the path we bound, unlinked on close */
	uv_timer_t grace;                /* forces connections closed at shutdown */
	bool grace_open;
	struct rpc_conn *conns;          /* open handles */
	size_t n_conns, n_subscribers;
	size_t n_handles;                /* handles whose close callback is still due */
	bool closing;
	void (*done)(void *ud);
	void *done_ud;
	uint64_t log_window;             /* start of the current rate-limit window (ms) */
	unsigned log_count, log_dropped;
	struct json_tokener *tok;        /* one parser, reset for each line */
	char *rbuf;                      /* the read buffer: read_cb consumes it at once */
	bool rbuf_busy;
};

static void conn_close(struct rpc_conn *c);

/* Logging about clients: a few lines per window, then one line saying how many were
 * left out, so a misbehaving client cannot flood the journal. */
static void srv_log(struct rpc_server *s, int level, const char *fmt, ...) WS_PRINTF(3, 4);
static void srv_log(struct rpc_server *s, int level, const char *fmt, ...)
{
	WS_AUTOFREE char *msg = NULL;
	uint64_t now = uv_now(s->loop);
	va_list ap;
	int n;

	if (now - s->log_window >= RPC_LOG_WINDOW_MS) {
		if (s->log_dropped > 0)
			log_msg(level, "%u similar messages about clients suppressed",
				s->log_dropped);
		s->log_window = now;
		s->log_count = 0;
		s->log_dropped = 0;
	}
	if (s->log_count >= RPC_LOG_BURST) {
		s->log_dropped++;
		return;
	}
	s->log_count++;
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n >= 0)
		log_msg(level, "%s", msg);
}

static void grace_close_cb(uv_handle_t *h);

/* Every handle's close callback ends here; the last one reports the server closed. */
static void srv_handle_closed(struct rpc_server *s)
{
	assert(s->n_handles > 0);
	s->n_handles--;
	if (s->closing && s->n_conns == 0 && s->grace_open &&
	    !uv_is_closing((uv_handle_t *)&s->grace))
		uv_close((uv_handle_t *)&s->grace, grace_close_cb);
	if (s->closing && s->n_handles == 0 && s->done) {
		void (*done)(void *) = s->done;

		s->done = NULL;
		done(s->done_ud); /* may free s */
	}
}

/* ---- connections ---------------------------------------------------------------- */

static void conn_unref(struct rpc_conn *c)
{
	if (--c->refs > 0)
		return;
	ws_linebuf_free(&c->lb);
	free(c);
}

static void conn_close_cb(uv_handle_t *h)
{
	struct rpc_conn *c = (struct rpc_conn *)h;
	struct rpc_server *s = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	s->n_conns--;
	ws_linebuf_free(&c->lb);
	conn_unref(c);
	srv_handle_closed(s);
}

static void conn_close(struct rpc_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->draining = true;
	if (c->subscribed) {
		c->subscribed = false;
		c->srv->n_subscribers--;
	}
	uv_close((uv_handle_t *)&c->pipe, conn_close_cb);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
	struct rpc_conn *c = req->data;
	uv_os_fd_t fd;

	/* Input we never read would turn our close into a reset, and the client could lose
	 * the error line we just sent it: discard what is queued first. */
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0) {
		char sink[4096];
		int i = 0;

		while (i++ < 256 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
	}
	conn_close(c);
}

/* Stops reading, lets what is queued be written, then closes. */
static void conn_close_after_write(struct rpc_conn *c)
{
	int r;

	if (c->closing || c->shut)
		return;
	c->draining = true;
	c->shut = true;
	(void)uv_read_stop((uv_stream_t *)&c->pipe);
	c->shutdown.data = c;
	r = uv_shutdown(&c->shutdown, (uv_stream_t *)&c->pipe, conn_shutdown_cb);
	if (r < 0)
		conn_close(c);
}

static void conn_write_cb(uv_write_t *req, int status)
{
	struct rpc_write *w = (struct rpc_write *)req;
	struct rpc_conn *c = w->conn;

	c->queued -= w->len;
	if (status < 0 && status != UV_ECANCELED && !c->closing) {
		srv_log(c->srv, LOG_LVL_INFO, "client pid %d went away before its reply: %s",
			(int)c->pid, uv_strerror(status));
		conn_close(c);
	}
	free(w);
}

/* Queues one framed message. Takes ownership of @msg. Dropped when the connection is
 * going away; a client that lets too much pile up is disconnected. */
static void conn_send_text(struct rpc_conn *c, const char *text, size_t len);

static void conn_send(struct rpc_conn *c, struct json_object *msg)
{
	WS_AUTO(json_putp) struct json_object *m = msg;
	const char *text;

	if (c->closing || c->shut)
		return;
	text = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN |
						     JSON_C_TO_STRING_NOSLASHESCAPE);
	conn_send_text(c, text, strlen(text));
}

/* Queues @len bytes of one serialized message (the newline is added). */
static void conn_send_text(struct rpc_conn *c, const char *text, size_t len)
{
	struct rpc_write *w;
	uv_buf_t buf;
	int r;

	if (c->closing || c->shut)
		return;
	if (c->queued + len + 1 > c->srv->lim.max_queued_bytes) {
		srv_log(c->srv, LOG_LVL_WARNING,
			"client pid %d does not read its replies (%zu bytes queued), disconnecting",
			(int)c->pid, c->queued);
		conn_close(c);
		return;
	}
	{
		/* Most replies fit the socket buffer: write them now, without a copy. libuv
		 * refuses (UV_EAGAIN) while earlier writes are queued, so order is kept. */
		uv_buf_t now[2] = {uv_buf_init((char *)(uintptr_t)text, (unsigned)len),
				   uv_buf_init((char *)(uintptr_t)"\n", 1)};
		int n = uv_try_write((uv_stream_t *)&c->pipe, now, 2);

		if (n == (int)len + 1)
			return;
		if (n < 0 && n != UV_EAGAIN) {
			srv_log(c->srv, LOG_LVL_INFO, "cannot write to client pid %d: %s",
				(int)c->pid, uv_strerror(n));
			conn_close(c);
			return;
		}
		if (n > 0) {
			text += n;
			len -= (size_t)n;
			if (len == 0) {
				text = "";
				len = (size_t)-1; /* only the newline is left */
			}
		}
	}
	if (len == (size_t)-1) {
		w = malloc(sizeof(*w) + 1);
		if (!w) {
			conn_close(c);
			return;
		}
		w->conn = c;
		w->len = 1;
		w->data[0] = '\n';
		len = 0;
	} else {
		w = malloc(sizeof(*w) + len + 1);
		if (!w) {
			conn_close(c);
			return;
		}
		w->conn = c;
		w->len = len + 1;
		memcpy(w->data, text, len);
		w->data[len] = '\n';
	}
	buf = uv_buf_init(w->data, (unsigned)(len + 1));
	r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, conn_write_cb);
	if (r < 0) {
		free(w);
		srv_log(c->srv, LOG_LVL_INFO, "cannot write to client pid %d: %s", (int)c->pid,
			uv_strerror(r));
		conn_close(c);
		return;
	}
	c->queued += len + 1;
}

/* {"jsonrpc":"2.0","id":ID,"error":ERROR}. Takes ownership of @error; @id is borrowed. */
static struct json_object *response_error(struct json_object *id, struct json_object *error)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(o, "id", json_object_get(id)); /* o now owns a new ref */
	json_object_object_add(o, "error", error);            /* o now owns error */
	return o;
}

static struct json_object *make_error(struct json_object *id, int code, const char *fmt, ...)
	WS_PRINTF(3, 4);
static struct json_object *make_error(struct json_object *id, int code, const char *fmt, ...)
{
	struct json_object *e = json_object_new_object();
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(e, "code", json_object_new_int(code));
	json_object_object_add(e, "message", json_object_new_string(msg));
	if (ws_err_kind(code)) {
		struct json_object *data = json_object_new_object();

		json_object_object_add(data, "kind", json_object_new_string(ws_err_kind(code)));
		json_object_object_add(e, "data", data); /* e now owns data */
	}
	return response_error(id, e);
}

/* ---- calls and batches -------------------------------------------------------------- */

static void conn_check_done(struct rpc_conn *c)
{
	/* The peer half-closed (like `socat` at the end of its input): close once every
	 * request it sent has been answered and written. */
	if (c->read_eof && c->pending == 0)
		conn_close_after_write(c);
}

static void batch_finish_one(struct rpc_batch *b)
{
	struct rpc_conn *c = b->conn;

	if (--b->outstanding > 0)
		return;
	if (json_object_array_length(b->responses) > 0)
		conn_send(c, ws_steal(&b->responses));
	json_putp(&b->responses);
	free(b);
	conn_unref(c);
}

/* Delivers the response (or drops it for a notification) and frees the call. Takes
 * ownership of @resp. */
static void call_finish(struct rpc_call *call, struct json_object *resp)
{
	struct rpc_conn *c = call->conn;

	if (!resp) {
		/* sent already (rpc_call_reply_text) */
	} else if (call->notification) {
		json_object_put(resp);
	} else if (call->batch) {
		/* the array now owns resp */
		json_object_array_add(call->batch->responses, resp);
	} else {
		conn_send(c, resp);
	}
	if (call->batch)
		batch_finish_one(call->batch);
	c->pending--;
	conn_check_done(c);
	json_object_put(call->req);
	if (call->own_id)
		json_object_put(call->id);
	free(call->id_text);
	free(call);
	conn_unref(c);
}

void rpc_call_reply(struct rpc_call *call, struct json_object *result)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(o, "id", json_object_get(call->id));
	json_object_object_add(o, "result", result); /* o now owns result */
	call_finish(call, o);
}

static int prerendered_cb(struct json_object *o, struct printbuf *pb, int level, int flags)
{
	const char *text = json_object_get_userdata(o);

	(void)level;
	(void)flags;
	return printbuf_memappend(pb, text, (int)strlen(text));
}

void rpc_call_reply_text(struct rpc_call *call, const char *json)
{
	struct rpc_conn *c = call->conn;
	struct json_object *o;
	WS_AUTOFREE char *msg = NULL;
	char *copy;
	int n;

	if (!call->batch && !call->notification) {
		/* a single answer: the envelope is written around the text, as json-c would */
		n = asprintf(&msg, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s}",
			     json_object_to_json_string_ext(call->id, JSON_C_TO_STRING_PLAIN |
								  JSON_C_TO_STRING_NOSLASHESCAPE),
			     json);
		if (n >= 0) {
			conn_send_text(c, msg, (size_t)n);
			call_finish(call, NULL);
			return;
		}
		msg = NULL;
	}
	/* a batch collects objects: one that prints as the text */
	o = json_object_new_object();
	copy = strdup(json);
	if (o && copy)
		json_object_set_serializer(o, prerendered_cb, copy, json_object_free_userdata);
	else
		free(copy);
	rpc_call_reply(call, o);
}

void rpc_call_fail(struct rpc_call *call, const struct ws_err *err)
{
	struct ws_err none = { 0 };

	call_finish(call, response_error(call->id, ws_err_to_json(err ? err : &none)));
}

struct rpc_server *rpc_call_server(const struct rpc_call *c)
{
	return c->conn->srv;
}

const char *rpc_call_method(const struct rpc_call *c)
{
	return c->method;
}

const char *rpc_call_id_text(const struct rpc_call *c)
{
	struct rpc_call *m = (struct rpc_call *)(uintptr_t)c; /* cache only */

	if (c->notification)
		return "-";
	if (!m->id_text) {
		const char *t = c->id ? json_object_to_json_string_ext(c->id, JSON_C_TO_STRING_PLAIN)
				      : "null";

		m->id_text = strdup(t);
	}
	return m->id_text ? m->id_text : "?";
}

uid_t rpc_call_peer_uid(const struct rpc_call *c)
{
	return c->conn->uid;
}

int rpc_call_subscribe(struct rpc_call *call)
{
	struct rpc_conn *c = call->conn;

	if (c->closing || c->subscribed)
		return 0;
	if (c->srv->n_subscribers >= c->srv->lim.max_subscribers)
		return -ENOSPC;
	c->subscribed = true;
	c->srv->n_subscribers++;
	return 0;
}

static const struct rpc_method *find_method(struct rpc_server *s, const char *wire)
{
	for (size_t i = 0; i < s->n_methods; i++)
		if (strcmp(s->methods[i].wire, wire) == 0)
			return &s->methods[i];
	return NULL;
}

/* json-c saturates integers beyond 64 bits; echoing the saturated value would answer a
 * request that was never sent. An id at a saturation value must appear as such in the
 * line. */
static bool int_id_exact(const struct rpc_conn *c, struct json_object *id)
{
	int64_t v = json_object_get_int64(id);
	const char *text;

	if (v != INT64_MAX && v != INT64_MIN && json_object_get_uint64(id) != UINT64_MAX)
		return true;
	text = json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN);
	return c->cur_line && text && strstr(c->cur_line, text) != NULL;
}

/* Validates one request object and starts its call. Returns the error response to send
 * (a new reference), or NULL when a handler took over or nothing is to be answered. */
static struct json_object *dispatch(struct rpc_conn *c, struct json_object *req,
				    struct rpc_batch *batch)
{
	struct rpc_server *s = c->srv;
	struct json_object *ver, *id = NULL, *method, *params = NULL;
	const struct rpc_method *m;
	struct rpc_call *call;
	bool has_id;

	if (!json_object_is_type(req, json_type_object))
		return make_error(NULL, WS_RPC_INVALID_REQUEST, "a request must be a JSON object");
	has_id = json_object_object_get_ex(req, "id", &id);
	if (has_id && id && !json_object_is_type(id, json_type_string) &&
	    !json_object_is_type(id, json_type_int) && !json_object_is_type(id, json_type_double))
		return make_error(NULL, WS_RPC_INVALID_REQUEST,
				  "\"id\" must be a string, a number or null");
	if (has_id && id && json_object_is_type(id, json_type_int) && !int_id_exact(c, id))
		return make_error(NULL, WS_RPC_INVALID_REQUEST,
				  "\"id\" is an integer out of range; use a string");
	if (!json_object_object_get_ex(req, "jsonrpc", &ver) ||
	    !json_object_is_type(ver, json_type_string) ||
	    strcmp(json_object_get_string(ver), "2.0") != 0)
		return make_error(id, WS_RPC_INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"");
	if (!json_object_object_get_ex(req, "method", &method) ||
	    !json_object_is_type(method, json_type_string))
		return make_error(id, WS_RPC_INVALID_REQUEST, "\"method\" must be a string");
	/* a NUL (\u0000) would cut the name short */
	m = (size_t)json_object_get_string_len(method) == strlen(json_object_get_string(method))
		    ? find_method(s, json_object_get_string(method))
		    : NULL;
	log_debug("request %s from pid %d", json_object_get_string(method), (int)c->pid);
	if (!m)
		return has_id ? make_error(id, WS_RPC_METHOD_NOT_FOUND, "method '%s' not found",
					   json_object_get_string(method))
			      : NULL;
	if (json_object_object_get_ex(req, "params", &params) &&
	    !json_object_is_type(params, json_type_object))
		return has_id ? make_error(id, WS_RPC_INVALID_PARAMS,
					   "\"params\" must be an object")
			      : NULL;
	if (c->pending >= s->lim.max_pending)
		return has_id ? make_error(id, WS_E_BUSY,
					   "too many requests in flight on this connection "
					   "(limit %zu)",
					   s->lim.max_pending)
			      : NULL;

	call = calloc(1, sizeof(*call));
	if (!call)
		return has_id ? make_error(id, WS_RPC_INTERNAL_ERROR, "out of memory") : NULL;
	call->conn = c;
	call->batch = batch;
	call->req = json_object_get(req);
	call->id = id;
	call->notification = !has_id;
	call->method = m->wire;
	c->refs++;
	c->pending++;
	if (batch)
		batch->outstanding++;
	m->fn(call, params); /* may answer (and free call) right away */
	return NULL;
}

/* The line wsctl and most scripts send, {"jsonrpc":"2.0","id":N,"method":"NAME"} byte for
 * byte (N: 1 to 15 digits, NAME a known method, no params), is taken apart here without
 * building a JSON tree: a valid request with exactly these members. Any other line, an
 * equivalent one with other spacing included, takes the general path, which also answers
 * every error. Returns true when the request was dispatched. */
static bool simple_request(struct rpc_conn *c, const char *line, size_t len)
{
	static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":";
	static const char mid[] = ",\"method\":\"";
	const char *p = line + sizeof(head) - 1, *end = line + len, *name;
	const struct rpc_method *m;
	struct rpc_call *call;
	char method[64];
	int64_t id = 0;
	size_t nd = 0, nlen;

	if (len < sizeof(head) - 1 || memcmp(line, head, sizeof(head) - 1) != 0)
		return false;
	for (; p < end && *p >= '0' && *p <= '9' && nd <= 15; p++, nd++)
		id = id * 10 + (*p - '0');
	if (nd == 0 || nd > 15 || (nd > 1 && line[sizeof(head) - 1] == '0'))
		return false;
	if ((size_t)(end - p) < sizeof(mid) - 1 || memcmp(p, mid, sizeof(mid) - 1) != 0)
		return false;
	p += sizeof(mid) - 1;
	for (name = p; p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
				   *p == '.' || *p == '_');
	     p++)
		;
	nlen = (size_t)(p - name);
	if (nlen == 0 || nlen >= sizeof(method) || end - p != 2 || p[0] != '"' || p[1] != '}')
		return false;
	memcpy(method, name, nlen);
	method[nlen] = '\0';
	m = find_method(c->srv, method);
	if (!m || c->pending >= c->srv->lim.max_pending)
		return false;
	call = calloc(1, sizeof(*call));
	if (!call)
		return false;
	call->id = json_object_new_int64(id);
	if (!call->id) {
		free(call);
		return false;
	}
	call->own_id = true;
	call->conn = c;
	call->method = m->wire;
	c->refs++;
	c->pending++;
	log_debug("request %s from pid %d", method, (int)c->pid);
	m->fn(call, NULL); /* may answer (and free call) right away */
	return true;
}

static void send_or_collect(struct rpc_conn *c, struct rpc_batch *b, struct json_object *resp)
{
	if (!resp)
		return;
	if (b)
		json_object_array_add(b->responses, resp); /* the array now owns resp */
	else
		conn_send(c, resp);
}

static bool blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

static int conn_line_cb(void *userdata, char *line, size_t len)
{
	struct rpc_conn *c = userdata;
	WS_AUTO(json_putp) struct json_object *msg = NULL;
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	size_t end;

	if (c->closing || c->draining)
		return -ECANCELED;
	if (blank(line, len))
		return 0;
	if (simple_request(c, line, len))
		return c->closing ? -ECANCELED : 0;
	/* json-c's own check lets overlong forms and surrogates through */
	if (!ws_utf8_valid(line, len)) {
		conn_send(c, make_error(NULL, WS_RPC_PARSE_ERROR,
					"parse error: the request is not valid UTF-8"));
		return 0;
	}
	tok = c->srv->tok;
	json_tokener_reset(tok);
	/* The terminating NUL goes in too: it ends a number at the end of the line. */
	msg = json_tokener_parse_ex(tok, line, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_reset(tok);
	if (jerr == json_tokener_success && end < len && !blank(line + end, len - end))
		jerr = json_tokener_error_parse_unexpected;
	if (jerr != json_tokener_success) {
		if (jerr == json_tokener_continue)
			jerr = json_tokener_error_parse_eof;
		conn_send(c, make_error(NULL, WS_RPC_PARSE_ERROR, "parse error: %s",
					json_tokener_error_desc(jerr)));
		return 0;
	}
	c->cur_line = line; /* for int_id_exact(), while this line is dispatched */
	if (json_object_is_type(msg, json_type_array)) {
		size_t n = json_object_array_length(msg);
		struct rpc_batch *b;

		if (n == 0) {
			c->cur_line = NULL;
			conn_send(c, make_error(NULL, WS_RPC_INVALID_REQUEST, "empty batch"));
			return 0;
		}
		b = calloc(1, sizeof(*b));
		if (!b) {
			c->cur_line = NULL;
			return -ENOMEM;
		}
		b->responses = json_object_new_array();
		b->conn = c;
		b->outstanding = 1;
		c->refs++;
		for (size_t i = 0; i < n && !c->closing; i++)
			send_or_collect(c, b, dispatch(c, json_object_array_get_idx(msg, i), b));
		batch_finish_one(b);
	} else {
		send_or_collect(c, NULL, dispatch(c, msg, NULL));
	}
	c->cur_line = NULL;
	return c->closing ? -ECANCELED : 0;
}

/* libuv calls read_cb right after alloc_cb, and read_cb copies what it keeps into the
 * connection's line buffer: one buffer serves every connection. */
static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct rpc_server *s = ((struct rpc_conn *)h)->srv;
	size_t n = suggested < RPC_READ_BUF ? suggested : RPC_READ_BUF;

	if (!s->rbuf_busy) {
		s->rbuf_busy = true;
		buf->base = s->rbuf;
		buf->len = RPC_READ_BUF;
		return;
	}
	buf->base = malloc(n);
	buf->len = buf->base ? n : 0;
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct rpc_conn *c = (struct rpc_conn *)st;
	int r;

	if (nread == UV_EOF) {
		c->read_eof = true;
		c->draining = true; /* no more input; replies still go out */
		(void)uv_read_stop(st);
		conn_check_done(c);
	} else if (nread < 0) {
		srv_log(c->srv, LOG_LVL_INFO, "client pid %d went away: %s", (int)c->pid,
			uv_strerror((int)nread));
		conn_close(c);
	} else if (nread > 0) {
		r = ws_linebuf_feed(&c->lb, buf->base, (size_t)nread, conn_line_cb, c);
		if (r == -EMSGSIZE) {
			srv_log(c->srv, LOG_LVL_WARNING,
				"client pid %d sent a message over %zu bytes, disconnecting",
				(int)c->pid, c->lb.max);
			conn_send(c, make_error(NULL, WS_RPC_INVALID_REQUEST,
						"message longer than %zu bytes", c->lb.max));
			conn_close_after_write(c);
		} else if (r < 0 && r != -ECANCELED) {
			conn_close(c);
		}
	}
	if (buf->base == c->srv->rbuf)
		c->srv->rbuf_busy = false;
	else
		free(buf->base);
}

static bool peer_allowed(const struct rpc_server *s, const struct rpc_conn *c)
{
	if (c->uid == s->uid || c->uid == 0)
		return true;
	return s->gid != (gid_t)-1 && c->gid == s->gid;
}

static void listener_cb(uv_stream_t *l, int status)
{
	struct rpc_server *s = l->data;
	struct rpc_conn *c;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	uv_os_fd_t fd;
	int r;

	if (status < 0) {
		srv_log(s, LOG_LVL_WARNING, "cannot accept a connection: %s", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("cannot accept a connection: out of memory");
		return;
	}
	r = uv_pipe_init(s->loop, &c->pipe, 0);
	if (r < 0) {
		free(c);
		srv_log(s, LOG_LVL_WARNING, "cannot accept a connection: %s", uv_strerror(r));
		return;
	}
	c->srv = s;
	c->refs = 1;
	c->pid = -1;
	c->uid = (uid_t)-1;
	c->gid = (gid_t)-1;
	ws_linebuf_init(&c->lb, s->lim.max_message);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	s->n_handles++;

	r = uv_accept(l, (uv_stream_t *)&c->pipe);
	if (r < 0) {
		srv_log(s, LOG_LVL_WARNING, "cannot accept a connection: %s", uv_strerror(r));
		conn_close(c);
		return;
	}
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->gid = cred.gid;
	}
	if (!peer_allowed(s, c)) {
		srv_log(s, LOG_LVL_WARNING, "refused client pid %d (uid %d, gid %d)", (int)c->pid,
			(int)c->uid, (int)c->gid);
		conn_send(c, make_error(NULL, WS_E_PERMISSION_DENIED,
					"uid %d may not use this daemon", (int)c->uid));
		conn_close_after_write(c);
		return;
	}
	if (s->n_conns > s->lim.max_connections || s->closing) {
		srv_log(s, LOG_LVL_WARNING, "refused client pid %d: %zu connections is the limit",
			(int)c->pid, s->lim.max_connections);
		conn_send(c, make_error(NULL, WS_E_BUSY, "too many connections (limit %zu)",
					s->lim.max_connections));
		conn_close_after_write(c);
		return;
	}
	log_debug("client connected: pid %d, uid %d", (int)c->pid, (int)c->uid);
	r = uv_read_start((uv_stream_t *)&c->pipe, conn_alloc_cb, conn_read_cb);
	if (r < 0) {
		srv_log(s, LOG_LVL_WARNING, "cannot read from client pid %d: %s", (int)c->pid,
			uv_strerror(r));
		conn_close(c);
	}
}

/* ---- the server ----------------------------------------------------------------------- */

int rpc_server_new(uv_loop_t *loop, const struct rpc_method *methods, size_t n_methods,
		   const struct rpc_limits *limits, void *userdata, struct rpc_server **ret_srv)
{
	struct rpc_server *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->methods = methods;
	s->n_methods = n_methods;
	if (limits)
		s->lim = *limits;
	if (!s->lim.max_message)
		s->lim.max_message = WS_MAX_MESSAGE_DEFAULT;
	if (!s->lim.max_connections)
		s->lim.max_connections = RPC_DEFAULT_MAX_CONNECTIONS;
	if (!s->lim.max_pending)
		s->lim.max_pending = RPC_DEFAULT_MAX_PENDING;
	if (!s->lim.max_queued_bytes)
		s->lim.max_queued_bytes = RPC_DEFAULT_MAX_QUEUED_BYTES;
	if (!s->lim.max_subscribers)
		s->lim.max_subscribers = RPC_DEFAULT_MAX_SUBSCRIBERS;
	s->tok = json_tokener_new();
	s->rbuf = malloc(RPC_READ_BUF);
	if (!s->tok || !s->rbuf) {
		rpc_server_free(s);
		return -ENOMEM;
	}
	/* invalid UTF-8 is a parse error (conn_line_cb() checks each line with
	 * ws_utf8_valid(), stricter than json-c's own check, before it parses) */
	json_tokener_set_flags(s->tok, JSON_TOKENER_STRICT);
	s->userdata = userdata;
	s->uid = geteuid();
	s->gid = (gid_t)-1;
	s->log_window = uv_now(loop);
	*ret_srv = s;
	return 0;
}

static int listener_start(struct rpc_server *s, struct ws_err *err)
{
	int r;

	s->listener.data = s;
	r = uv_listen((uv_stream_t *)&s->listener, 128, listener_cb);
	if (r < 0)
		return ws_fail(err, r, 0, "cannot listen on the socket: %s", uv_strerror(r));
	return 0;
}

static void listener_close_cb(uv_handle_t *h)
{
	srv_handle_closed(h->data);
}

static void listener_abort(struct rpc_server *s)
{
	s->listener_open = false;
	s->listener.data = s;
	uv_close((uv_handle_t *)&s->listener, listener_close_cb);
}

/* Returns 0 when @path is free (a stale socket file was removed), -EADDRINUSE when a
 * daemon answers there, -EEXIST when something that is not a socket is in the way. */
static int clear_stale(const char *path, struct ws_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	WS_AUTOCLOSE int fd = -1;
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return ws_fail(err, -errno, 0, "cannot inspect '%s': %s", path, strerror(errno));
	}
	if (!S_ISSOCK(st.st_mode))
		return ws_fail(err, -EEXIST, 0, "'%s' exists and is not a socket; not replacing it",
			       path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ws_fail(err, -errno, 0, "cannot create a socket: %s", strerror(errno));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return ws_fail(err, -EADDRINUSE, WS_E_BUSY,
			       "another daemon is already listening on '%s' (stop it, or give "
			       "this one another --socket)", path);
	if (errno != ECONNREFUSED && errno != ENOENT)
		return ws_fail(err, -errno, 0, "cannot probe '%s': %s", path, strerror(errno));
	if (unlink(path) < 0 && errno != ENOENT)
		return ws_fail(err, -errno, 0, "cannot remove stale socket '%s': %s", path,
			       strerror(errno));
	log_info("removed stale socket '%s'", path);
	return 0;
}

int rpc_server_listen_path(struct rpc_server *s, const char *path, mode_t mode, gid_t gid,
			   struct ws_err *err)
{
	mode_t old;
	int r;

	if (s->listener_open || s->closing)
		return ws_fail(err, -EBUSY, 0, "the server is already listening");
	if (strlen(path) > WS_SOCKET_PATH_MAX)
		return ws_fail(err, -ENAMETOOLONG, 0,
			       "socket path '%s' is longer than %d bytes", path, WS_SOCKET_PATH_MAX);
	r = clear_stale(path, err);
	if (r < 0)
		return r;
	r = uv_pipe_init(s->loop, &s->listener, 0);
	if (r < 0)
		return ws_fail(err, r, 0, "cannot create the socket: %s", uv_strerror(r));
	s->listener_open = true;
	s->n_handles++;
	/* The socket file is born with the right mode: no window where others may connect. */
	old = umask(gid != (gid_t)-1 ? 0117 : 0177);
	r = uv_pipe_bind(&s->listener, path);
	(void)umask(old);
	if (r < 0) {
		listener_abort(s);
		return ws_fail(err, r, 0, "cannot bind '%s': %s", path, uv_strerror(r));
	}
	s->path = strdup(path);
	if (!s->path) {
		(void)unlink(path);
		listener_abort(s);
		return ws_fail(err, -ENOMEM, 0, "out of memory");
	}
	if (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) {
		r = ws_fail(err, -errno, 0, "cannot give '%s' to group %d: %s", path, (int)gid,
			    strerror(errno));
		goto fail;
	}
	if (chmod(path, mode) < 0) {
		r = ws_fail(err, -errno, 0, "cannot chmod '%s': %s", path, strerror(errno));
		goto fail;
	}
	s->gid = gid;
	r = listener_start(s, err);
	if (r < 0)
		goto fail;
	return 0;
fail:
	(void)unlink(path);
	free(s->path);
	s->path = NULL;
	listener_abort(s);
	return r;
}

int rpc_server_listen_fd(struct rpc_server *s, int fd, struct ws_err *err)
{
	int r;

	if (s->listener_open || s->closing)
		return ws_fail(err, -EBUSY, 0, "the server is already listening");
	r = uv_pipe_init(s->loop, &s->listener, 0);
	if (r < 0)
		return ws_fail(err, r, 0, "cannot create the socket: %s", uv_strerror(r));
	s->listener_open = true;
	s->n_handles++;
	r = uv_pipe_open(&s->listener, fd);
	if (r < 0) {
		listener_abort(s);
		return ws_fail(err, r, 0, "cannot use fd %d: %s", fd, uv_strerror(r));
	}
	r = listener_start(s, err);
	if (r < 0) {
		listener_abort(s);
		return r;
	}
	return 0;
}

static void grace_cb(uv_timer_t *t)
{
	struct rpc_server *s = t->data;

	/* Clients that did not take their last replies in time are cut off. */
	for (struct rpc_conn *c = s->conns; c; c = c->next)
		conn_close(c);
	uv_close((uv_handle_t *)t, grace_close_cb);
}

static void grace_close_cb(uv_handle_t *h)
{
	struct rpc_server *s = h->data;

	s->grace_open = false;
	srv_handle_closed(s);
}

void rpc_server_close(struct rpc_server *s, void (*done)(void *ud), void *ud)
{
	struct rpc_conn *c, *next;

	if (s->closing)
		return;
	s->closing = true;
	s->done = done;
	s->done_ud = ud;
	if (s->listener_open) {
		if (s->path) {
			(void)unlink(s->path);
		}
		listener_abort(s);
	}
	if (s->conns && uv_timer_init(s->loop, &s->grace) == 0) {
		s->grace.data = s;
		s->grace_open = true;
		s->n_handles++;
		(void)uv_timer_start(&s->grace, grace_cb, RPC_CLOSE_GRACE_MS, 0);
	}
	for (c = s->conns; c; c = next) {
		next = c->next;
		c->read_eof = false;
		conn_close_after_write(c);
	}
	if (s->n_handles == 0 && s->done) {
		s->done = NULL;
		done(ud);
	}
}

void rpc_server_free(struct rpc_server *s)
{
	if (!s)
		return;
	if (s->tok)
		json_tokener_free(s->tok);
	free(s->rbuf);
	free(s->path);
	free(s);
}

void *rpc_server_userdata(const struct rpc_server *s)
{
	return s->userdata;
}

size_t rpc_server_n_connections(const struct rpc_server *s)
{
	return s->n_conns;
}

void rpc_server_emit(struct rpc_server *s, const char *type, struct json_object *params)
{
	WS_AUTO(json_putp) struct json_object *in = params;
	struct json_object *p;

	if (s->n_subscribers == 0)
		return;
	for (struct rpc_conn *c = s->conns; c; c = c->next) {
		struct json_object *msg;

		if (!c->subscribed || c->closing)
			continue;
		p = json_object_new_object();
		json_object_object_add(p, "type", json_object_new_string(type));
		if (in && json_object_is_type(in, json_type_object)) {
			json_object_object_foreach(in, k, v)
			{
				if (strcmp(k, "type") != 0) /* p now owns a new ref to v */
					json_object_object_add(p, k, json_object_get(v));
			}
		}
		msg = json_object_new_object();
		json_object_object_add(msg, "jsonrpc", json_object_new_string("2.0"));
		json_object_object_add(msg, "method", json_object_new_string("event"));
		json_object_object_add(msg, "params", p); /* msg now owns p */
		conn_send(c, msg);
	}
}
