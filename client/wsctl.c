/* SPDX-License-Identifier: MIT */
/* wsctl, the thin client of workspaced: it parses the command line, sends each command's
 * requests pipelined in one write (daemon.info first, to check the protocol version) over
 * a plain blocking Unix socket with poll() timeouts, and renders the replies through
 * output.c. It never touches the repository and never runs the privileged steps itself;
 * it prints them. Exit status: 0 success, 1 an error from the daemon, 2 a usage error,
 * 69 (EX_UNAVAILABLE) when the daemon cannot be reached. */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "output.h"
#include "ws_proto.h"

#define EXIT_DAEMON 1
#define EXIT_USAGE 2
#define WSCTL_MAX_LINE (64 * 1024 * 1024)    /* a reply may list many workspaces */
#define WSCTL_TIMEOUT_MS 30000               /* default for every request but a create */
#define WSCTL_HOSTKEY_TIMEOUT_MS 600000      /* default wait of create --wait-hostkey */
#define KV_WIDTH 18

/* The daemon's methods and their summaries, from the one list the daemon also expands. */
struct method_help {
	const char *wire, *help;
};
#define WS_METHOD(c, wire, fl, help) {wire, help},
static const struct method_help method_helps[] = {
#include "ws_methods.def"
};
#undef WS_METHOD

enum {
	OPT_SOCKET,
	OPT_JSON,
	OPT_TIMEOUT,
	OPT_HELP,
	OPT_VERSION,
	OPT_TYPE,
	OPT_IP,
	OPT_AUTOSTART,
	OPT_VERIFY,
	OPT_DRYRUN,
	OPT_WAIT,
	OPT_NAMES,
	OPT_REPLACE,
	OPT_COUNT,
};
#define OPT_VAL(o) (0x100 + (o))
#define OPT_BIT(o) (1u << (o))
#define OPT_GLOBAL                                                                                 \
	(OPT_BIT(OPT_SOCKET) | OPT_BIT(OPT_JSON) | OPT_BIT(OPT_TIMEOUT) | OPT_BIT(OPT_HELP))

static const struct option long_opts[] = {
	{"socket", required_argument, NULL, OPT_VAL(OPT_SOCKET)},
	{"json", no_argument, NULL, OPT_VAL(OPT_JSON)},
	{"timeout", required_argument, NULL, OPT_VAL(OPT_TIMEOUT)},
	{"help", no_argument, NULL, OPT_VAL(OPT_HELP)},
	{"version", no_argument, NULL, OPT_VAL(OPT_VERSION)},
	{"type", required_argument, NULL, OPT_VAL(OPT_TYPE)},
	{"ip", required_argument, NULL, OPT_VAL(OPT_IP)},
	{"autostart", no_argument, NULL, OPT_VAL(OPT_AUTOSTART)},
	{"verify", required_argument, NULL, OPT_VAL(OPT_VERIFY)},
	{"dry-run", no_argument, NULL, OPT_VAL(OPT_DRYRUN)},
	{"wait-hostkey", no_argument, NULL, OPT_VAL(OPT_WAIT)},
	{"names", no_argument, NULL, OPT_VAL(OPT_NAMES)},
	{"replace", no_argument, NULL, OPT_VAL(OPT_REPLACE)},
	{NULL, 0, NULL, 0},
};

struct opts {
	const char *socket;        /* borrowed (argv or environment) or socket_buf */
	char *socket_buf;          /* owned */
	bool json, help, version;
	int timeout_ms;            /* -1: the command's default; 0: no timeout */
	const char *type, *ip, *verify;
	bool autostart, dry_run, wait_hostkey, names, replace;
	const char *name;          /* borrowed from argv */
	unsigned seen;             /* OPT_BIT() of every option given */
};

struct command {
	const char *name;
	const char *method;        /* its RPC method; the summary comes from ws_methods.def */
	const char *synopsis;      /* after "wsctl NAME" */
	const char *options;       /* help lines of its own options */
	unsigned allowed;          /* OPT_BIT()s beyond the global ones */
	bool takes_name;
	int (*run)(const struct command *cmd, struct opts *o);
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	interrupted = 1;
}

/* ---- the connection ---- */

struct conn {
	int fd;                         /* owned */
	const char *path;               /* borrowed */
	struct ws_linebuf lb;
	struct json_object *inbox;      /* owned array: messages read but not yet taken */
	size_t next;                    /* first untaken index of inbox */
	bool eof, bad;                  /* the daemon closed; a line was not a JSON object */
};

#define CONN_INIT {.fd = -1}

typedef void (*event_fn)(void *userdata, struct json_object *params);

static void conn_clear(struct conn *c)
{
	if (c->fd >= 0)
		(void)close(c->fd);
	c->fd = -1;
	ws_linebuf_free(&c->lb);
	json_putp(&c->inbox);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline @ms from now; -1 (none) when @ms is 0. */
static int64_t deadline_in(int ms)
{
	return ms > 0 ? now_ms() + ms : -1;
}

static int conn_open(struct conn *c, const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	c->path = path;
	c->inbox = json_object_new_array();
	if (!c->inbox)
		return -ENOMEM;
	ws_linebuf_init(&c->lb, WSCTL_MAX_LINE);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	for (;;) {
		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

static int conn_line_cb(void *userdata, char *line, size_t len)
{
	struct conn *c = userdata;
	struct json_tokener *tok;
	struct json_object *msg;
	size_t end;

	if (strspn(line, " \t") == len)
		return 0;
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	msg = json_tokener_parse_ex(tok, line, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (!msg || json_tokener_get_error(tok) != json_tokener_success ||
	    strspn(line + end, " \t") != len - end || !json_object_is_type(msg, json_type_object)) {
		json_tokener_free(tok);
		json_putp(&msg);
		c->bad = true;
		return -EBADMSG;
	}
	json_tokener_free(tok);
	/* the inbox now owns msg */
	if (json_object_array_add(c->inbox, msg) < 0) {
		json_object_put(msg);
		return -ENOMEM;
	}
	return 0;
}

/* Takes the next message the daemon sent. Returns 1 and a new reference in *ret_msg; 0 when
 * the daemon closed the connection; -ETIMEDOUT past @deadline (-1: none); -EINTR after
 * SIGINT; -EBADMSG for a line that is not a JSON object; -EMSGSIZE for an overlong line. */
static int conn_next(struct conn *c, int64_t deadline, struct json_object **ret_msg)
{
	char buf[16384];

	for (;;) {
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		int timeout = -1;
		ssize_t n;
		int r;

		if (c->next < json_object_array_length(c->inbox)) {
			*ret_msg = json_object_get(json_object_array_get_idx(c->inbox, c->next++));
			if (c->next == json_object_array_length(c->inbox)) {
				/* start afresh, so a long `events` session does not grow */
				json_putp(&c->inbox);
				c->inbox = json_object_new_array();
				c->next = 0;
				if (!c->inbox) {
					json_putp(ret_msg);
					return -ENOMEM;
				}
			}
			return 1;
		}
		if (c->bad)
			return -EBADMSG;
		if (c->eof)
			return 0;
		if (interrupted)
			return -EINTR;
		if (deadline >= 0) {
			int64_t left = deadline - now_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			timeout = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		r = poll(&pfd, 1, timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			continue; /* the deadline check above decides */
		n = read(c->fd, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			if (errno == ECONNRESET) {
				c->eof = true;
				continue;
			}
			return -errno;
		}
		if (n == 0) {
			c->eof = true;
			continue;
		}
		r = ws_linebuf_feed(&c->lb, buf, (size_t)n, conn_line_cb, c);
		if (r < 0 && r != -EBADMSG)
			return r;
		/* on -EBADMSG the messages before the bad line are still handed out first */
	}
}

static int conn_send(struct conn *c, const char *buf, size_t len)
{
	while (len > 0) {
		/* MSG_NOSIGNAL: a daemon that went away is an error, not a SIGPIPE */
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One request of a pipelined batch; its id is its index + 1. */
struct req {
	const char *method;             /* borrowed */
	struct json_object *params;     /* owned, may be NULL */
	struct json_object *reply;      /* owned: the whole response, once it came */
};

struct batch {
	struct req q[4];
	size_t n;
};

static void batch_clear(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		json_putp(&b->q[i].params);
		json_putp(&b->q[i].reply);
	}
	b->n = 0;
}

/* Appends a request; takes ownership of @params. Returns its index. */
static size_t batch_add(struct batch *b, const char *method, struct json_object *params)
{
	assert(b->n < WS_ARRAY_SIZE(b->q)); /* the commands' batches are fixed in size */
	b->q[b->n].method = method;
	b->q[b->n].params = params;
	b->q[b->n].reply = NULL;
	return b->n++;
}

static void dispatch_event(struct json_object *msg, event_fn on_event, void *userdata)
{
	const char *method = out_jstr(msg, "method");
	struct json_object *params = out_jobj(msg, "params");

	if (on_event && method && !strcmp(method, "event") && params)
		on_event(userdata, params);
}

/* Sends every request of @b in one write and reads until each has its response. Event
 * notifications that arrive meanwhile go to @on_event (may be NULL). Returns 0, -ECONNRESET
 * when the daemon closed first (-EPROTO when it had sent replies to requests we never
 * sent), or a conn_next() error. */
static int conn_call(struct conn *c, struct batch *b, size_t from, int64_t deadline,
		     event_fn on_event, void *userdata)
{
	WS_AUTOFREE char *out = NULL;
	size_t out_len = 0, pending = b->n - from;
	bool stray = false; /* a reply to no request of ours came */
	FILE *f;
	int r;

	f = open_memstream(&out, &out_len);
	if (!f)
		return -ENOMEM;
	for (size_t i = from; i < b->n; i++) {
		WS_AUTO(json_putp) struct json_object *rq = json_object_new_object();

		if (!rq) {
			(void)fclose(f);
			return -ENOMEM;
		}
		/* rq now owns each added value (params: a new reference) */
		json_object_object_add(rq, "jsonrpc", json_object_new_string("2.0"));
		json_object_object_add(rq, "id", json_object_new_int((int)i + 1));
		json_object_object_add(rq, "method", json_object_new_string(b->q[i].method));
		if (b->q[i].params)
			json_object_object_add(rq, "params", json_object_get(b->q[i].params));
		fprintf(f, "%s\n", json_object_to_json_string_ext(rq, JSON_C_TO_STRING_PLAIN));
	}
	if (fclose(f) != 0)
		return -ENOMEM;
	r = conn_send(c, out, out_len);
	if (r < 0)
		return r;

	while (pending > 0) {
		WS_AUTO(json_putp) struct json_object *msg = NULL;
		struct json_object *id;
		int64_t k;

		r = conn_next(c, deadline, &msg);
		if (r < 0)
			return r;
		if (r == 0) /* closed; after replies to requests never sent, not a silent close */
			return stray ? -EPROTO : -ECONNRESET;
		if (out_jstr(msg, "method")) {
			dispatch_event(msg, on_event, userdata);
			continue;
		}
		if (!json_object_object_get_ex(msg, "id", &id))
			return -EBADMSG;
		if (!id) {
			/* id null: the daemon could not read a request; it answers the first one */
			k = 0;
			while (k < (int64_t)b->n && b->q[k].reply)
				k++;
		} else if (json_object_is_type(id, json_type_int)) {
			k = json_object_get_int64(id) - 1;
		} else {
			stray = true;
			continue;
		}
		if (k < (int64_t)from || k >= (int64_t)b->n || b->q[k].reply) {
			stray = true;
			continue; /* not an answer we wait for */
		}
		b->q[k].reply = ws_steal(&msg);
		pending--;
	}
	return 0;
}

/* Prints why talking to the daemon failed; returns the exit status. */
static int conn_fail(const struct conn *c, int r, int timeout_ms)
{
	switch (r) {
	case -ETIMEDOUT:
		out_err("no reply from the daemon at %s within %g s", c->path, timeout_ms / 1000.0);
		out_err("the daemon may still carry the request out: 'wsctl list' shows what it "
			"did");
		return EXIT_DAEMON;
	case -ECONNRESET:
	case -EPIPE:
		out_err("the daemon at %s closed the connection without replying", c->path);
		out_err("see its log: journalctl --user -u workspaced.service");
		return EX_UNAVAILABLE;
	case -EBADMSG:
		out_err("malformed reply from the daemon at %s (not a JSON-RPC message)", c->path);
		return EXIT_DAEMON;
	case -EPROTO:
		out_err("the daemon at %s answered requests wsctl never sent, then closed the "
			"connection", c->path);
		return EXIT_DAEMON;
	case -EMSGSIZE:
		out_err("a reply from the daemon at %s is longer than %d bytes", c->path,
			WSCTL_MAX_LINE);
		return EXIT_DAEMON;
	case -EINTR:
		return 130;
	default:
		out_err("cannot talk to the daemon at %s: %s", c->path, strerror(-r));
		return EX_UNAVAILABLE;
	}
}

/* The result of an answered request (borrowed), or prints the error and returns
 * EXIT_DAEMON. */
static int reply_result(const struct conn *c, const struct req *q, struct json_object **ret)
{
	struct json_object *v;

	if (json_object_object_get_ex(q->reply, "error", &v) && v) {
		out_rpc_error(v);
		return EXIT_DAEMON;
	}
	if (!json_object_object_get_ex(q->reply, "result", &v)) {
		out_err("malformed reply to %s from the daemon at %s: no result and no error",
			q->method, c->path);
		return EXIT_DAEMON;
	}
	*ret = v;
	return 0;
}

/* Like reply_result(), and the result must be an object. */
static int reply_object(const struct conn *c, const struct req *q, struct json_object **ret)
{
	struct json_object *v = NULL;
	int r;

	r = reply_result(c, q, &v);
	if (r != 0)
		return r;
	if (!json_object_is_type(v, json_type_object)) {
		out_err("malformed reply to %s from the daemon at %s: the result is not an object",
			q->method, c->path);
		return EXIT_DAEMON;
	}
	*ret = v;
	return 0;
}

/* Checks the daemon.info reply: the daemon must speak our protocol version. A daemon that
 * does not report one is taken to speak version 1, the version that introduced the field. */
static int check_info(const struct conn *c, const struct req *q, struct json_object **ret_info)
{
	struct json_object *info = NULL, *proto;
	int r;

	r = reply_object(c, q, &info);
	if (r != 0)
		return r;
	if (json_object_object_get_ex(info, "protocol", &proto) &&
	    (!json_object_is_type(proto, json_type_int) ||
	     json_object_get_int64(proto) != WS_PROTO_VERSION)) {
		WS_AUTOFREE char *theirs = out_jtext(proto);
		const char *version = out_jstr(info, "version");

		out_err("the daemon at %s (version %s) speaks protocol %s, but this wsctl (version "
			"%s) speaks protocol %d; use the wsctl that came with the daemon",
			c->path, version ? version : "unknown", theirs ? theirs : "?", WS_VERSION,
			WS_PROTO_VERSION);
		return EXIT_DAEMON;
	}
	*ret_info = info;
	return 0;
}

/* True for methods that change the repository (WS_M_WRITE in ws_methods.def). */
static bool method_writes(const char *wire)
{
#define WS_METHOD(c_name, w, fl, help)                                                             \
	if (strcmp(wire, w) == 0)                                                                  \
		return ((fl) & WS_M_WRITE) != 0;
#include "ws_methods.def"
#undef WS_METHOD
	return false;
}

/* Connects, sends @b (whose first request is daemon.info), waits for every reply and checks
 * the protocol version. Reads are pipelined behind daemon.info in one write; a batch with a
 * write waits for daemon.info's answer first, so a daemon speaking another protocol never
 * receives the write. Returns 0 or the exit status after printing why. */
static int session_run(const struct opts *o, struct conn *c, struct batch *b, int timeout_ms,
		       event_fn on_event, void *userdata, struct json_object **ret_info)
{
	int r;

	r = conn_open(c, o->socket);
	if (r < 0) {
		out_err("cannot connect to workspaced at %s: %s", o->socket, strerror(-r));
		out_err("start it with 'systemctl --user start workspaced.socket', or run "
			"'workspaced --repo DIR' (use --socket PATH or WORKSPACED_SOCKET for "
			"another socket)");
		return EX_UNAVAILABLE;
	}
	bool split = false;
	int64_t deadline = deadline_in(timeout_ms);
	size_t n = b->n;

	for (size_t i = 1; i < n; i++)
		split = split || method_writes(b->q[i].method);
	if (split) {
		b->n = 1;
		r = conn_call(c, b, 0, deadline, on_event, userdata);
		b->n = n;
		if (r < 0)
			return conn_fail(c, r, timeout_ms);
		r = check_info(c, &b->q[0], ret_info);
		if (r != 0)
			return r;
		r = conn_call(c, b, 1, deadline, on_event, userdata);
		if (r < 0)
			return conn_fail(c, r, timeout_ms);
		return 0;
	}
	r = conn_call(c, b, 0, deadline, on_event, userdata);
	if (r < 0)
		return conn_fail(c, r, timeout_ms);
	return check_info(c, &b->q[0], ret_info);
}

static int timeout_or(const struct opts *o, int def_ms)
{
	return o->timeout_ms >= 0 ? o->timeout_ms : def_ms;
}

/* `wsctl: MESSAGE` and a pointer to the help on stderr; returns EXIT_USAGE. */
static int usage_error(const struct command *cmd, const char *fmt, ...) WS_PRINTF(2, 3);

static int usage_error(const struct command *cmd, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("wsctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, "\nTry 'wsctl %s --help'.\n", cmd->name);
	else
		fputs("\nTry 'wsctl --help'.\n", stderr);
	return EXIT_USAGE;
}

/* ---- rendering helpers that know the protocol's objects ---- */

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

/* "active/running" from a unit state object {active, sub}; NULL when absent. */
static char *state_text(struct json_object *ws, const char *sep)
{
	struct json_object *st;
	const char *active, *sub;
	char *s = NULL;

	st = out_jobj(ws, "state");
	if (!st)
		return out_jstr(ws, "state") ? strdup(out_jstr(ws, "state")) : NULL;
	active = out_jstr(st, "active");
	sub = out_jstr(st, "sub");
	/* "unknown": the daemon cannot reach systemd (no system bus); shown as "-" */
	if (!active || strcmp(active, "unknown") == 0)
		return NULL;
	if (!sub)
		return strdup(active);
	if (asprintf(&s, "%s%s%s%s", active, sep, sub, sep[0] == ' ' ? ")" : "") < 0)
		return NULL;
	return s;
}

static char *problems_text(struct json_object *ws)
{
	struct json_object *p = out_jarr(ws, "problems");
	char *s = NULL;
	size_t len = 0;
	FILE *f;

	if (!p || json_object_array_length(p) == 0)
		return NULL;
	f = open_memstream(&s, &len);
	if (!f)
		return NULL;
	for (size_t i = 0; i < json_object_array_length(p); i++) {
		const char *kind = out_jstr(json_object_array_get_idx(p, i), "kind");

		fprintf(f, "%s%s", i ? "," : "", kind ? kind : "PROBLEM");
	}
	if (fclose(f) != 0) {
		free(s);
		return NULL;
	}
	return s;
}

/* The unit of a workspace: its `unit`, else derived from its type. malloc'd. */
static char *unit_of(struct json_object *ws)
{
	const char *unit = out_jstr(ws, "unit");
	const char *type = out_jstr(ws, "type");
	const char *name = out_jstr(ws, "name");
	int t;

	if (unit)
		return strdup(unit);
	t = type ? ws_type_from_string(type) : -EINVAL;
	if (t < 0 || !name)
		return NULL;
	return ws_unit_name((enum ws_type)t, name);
}

static void print_workspace(struct json_object *ws)
{
	WS_AUTOFREE char *unit = unit_of(ws);
	WS_AUTOFREE char *state = state_text(ws, " (");
	struct json_object *src = out_jobj(ws, "source"), *extra = out_jobj(ws, "extra");
	struct json_object *problems = out_jarr(ws, "problems"), *hkf;
	const char *ip = out_jstr(ws, "ip"), *ip_expr = out_jstr(ws, "ipExpr");
	const char *hostkey = out_jstr(ws, "hostKey");
	int64_t line;
	bool b;

	out_kv(stdout, KV_WIDTH, "name", out_jstr(ws, "name"));
	out_kv(stdout, KV_WIDTH, "type", out_jstr(ws, "type"));
	if (ip || !ip_expr)
		out_kv(stdout, KV_WIDTH, "ip", ip);
	else
		out_kvf(stdout, KV_WIDTH, "ip", "- (not a literal: %s)", ip_expr);
	out_kv(stdout, KV_WIDTH, "unit", unit);
	out_kv(stdout, KV_WIDTH, "state", state);
	out_kv(stdout, KV_WIDTH, "config", out_jstr(ws, "config"));
	out_kv(stdout, KV_WIDTH, "autoStart",
	       out_jbool(ws, "autoStart", &b) ? yes_no(b) : out_jstr(ws, "autoStart"));
	out_kv(stdout, KV_WIDTH, "hostKey", hostkey ? hostkey : "none");
	if (out_jstr(ws, "trustedHostKey"))
		out_kv(stdout, KV_WIDTH, "trustedHostKey", out_jstr(ws, "trustedHostKey"));

	/* hostKeyFile: {path, exists}, or a path with a separate hostKeyFileExists */
	hkf = out_jobj(ws, "hostKeyFile");
	if (hkf || out_jstr(ws, "hostKeyFile")) {
		const char *path = hkf ? out_jstr(hkf, "path") : out_jstr(ws, "hostKeyFile");
		bool known = hkf ? out_jbool(hkf, "exists", &b)
				 : out_jbool(ws, "hostKeyFileExists", &b);

		out_kvf(stdout, KV_WIDTH, "hostKeyFile", "%s%s", path ? path : "-",
			!known ? "" : b ? " (exists)" : " (missing)");
	}
	if (src) {
		const char *file = out_jstr(src, "file");

		if (out_jint(src, "line", &line) && line > 0)
			out_kvf(stdout, KV_WIDTH, "source", "%s:%" PRId64, file ? file : "-", line);
		else
			out_kv(stdout, KV_WIDTH, "source", file);
	}
	if (extra && json_object_object_length(extra) > 0) {
		fputs("extra:\n", stdout);
		json_object_object_foreach(extra, k, v)
		{
			WS_AUTOFREE char *text = out_jtext(v);

			fputs("  ", stdout);
			out_clean(stdout, k);
			fputs(" = ", stdout);
			out_clean(stdout, text);
			fputc('\n', stdout);
		}
	}
	if (problems && json_object_array_length(problems) > 0) {
		fputs("problems:\n", stdout);
		for (size_t i = 0; i < json_object_array_length(problems); i++) {
			struct json_object *p = json_object_array_get_idx(problems, i);
			const char *kind = out_jstr(p, "kind"), *msg = out_jstr(p, "message");

			fputs("  ", stdout);
			out_clean(stdout, kind ? kind : "PROBLEM");
			if (msg) {
				fputs(": ", stdout);
				out_clean(stdout, msg);
			}
			fputc('\n', stdout);
		}
	} else {
		out_kv(stdout, KV_WIDTH, "problems", "none");
	}
}

/* "PRIV nixos-rebuild switch --flake REPO#HOST", quoted for the shell. malloc'd. */
static char *deploy_command(struct json_object *info)
{
	const char *repo = out_jstr(info, "repo"), *host = out_jstr(info, "machine");
	const char *priv = out_jstr(info, "privilegeCommand");
	WS_AUTOFREE char *ref = NULL;
	WS_AUTOFREE char *qref = NULL;
	char *s = NULL;

	if (!priv)
		priv = "sudo";
	if (asprintf(&ref, "%s#%s", repo ? repo : "REPO", host ? host : "HOST") < 0) {
		ref = NULL;
		return NULL;
	}
	qref = out_shell_quote(ref);
	if (!qref)
		return NULL;
	if (asprintf(&s, "%s%snixos-rebuild switch --flake %s", priv, priv[0] ? " " : "", qref) < 0)
		return NULL;
	return s;
}

static void print_next_steps(struct json_object *info, struct json_object *ws)
{
	WS_AUTOFREE char *deploy = deploy_command(info);
	WS_AUTOFREE char *unit = unit_of(ws);
	WS_AUTOFREE char *qunit = unit ? out_shell_quote(unit) : NULL;
	const char *priv = out_jstr(info, "privilegeCommand");
	const char *name = out_jstr(ws, "name");
	bool autostart = false;

	if (!priv)
		priv = "sudo";
	(void)out_jbool(ws, "autoStart", &autostart);
	fputs("\nNext steps (they need root, so workspaced leaves them to you):\n", stdout);
	fputs("  1. deploy:   ", stdout);
	out_clean(stdout, deploy ? deploy : "nixos-rebuild switch --flake REPO#HOST");
	fputs("\n  2. start:    ", stdout);
	fprintf(stdout, "%s%s", priv, priv[0] ? " " : "");
	fputs("systemctl start ", stdout);
	out_clean(stdout, qunit ? qunit : "UNIT");
	if (autostart)
		fputs("   (autoStart: the deploy starts it too)", stdout);
	fputs("\n  3. connect:  ssh workspace-", stdout);
	out_clean(stdout, name ? name : "NAME");
	fputs("   (once it runs)\n", stdout);
	fputs("The workspace's SSH host key is written back when it first boots "
	      "('wsctl events' shows it).\n",
	      stdout);
}

static void print_created(struct json_object *info, struct json_object *res, bool dry_run)
{
	struct json_object *ws = out_jobj(res, "workspace");
	struct json_object *files = out_jarr(res, "files");
	struct json_object *verify = out_jobj(res, "verify");
	const char *diff = out_jstr(res, "diff");
	const char *type = out_jstr(ws, "type"), *name = out_jstr(ws, "name");
	WS_AUTOFREE char *unit = unit_of(ws);
	bool b;

	fputs(dry_run ? "Dry run, nothing written: would declare " : "Declared ", stdout);
	out_clean(stdout, type ? type : "?");
	fputs(" workspace '", stdout);
	out_clean(stdout, name ? name : "?");
	fputs("'.\n", stdout);
	out_kv(stdout, KV_WIDTH, "  name", name);
	out_kv(stdout, KV_WIDTH, "  type", type);
	if (out_jstr(ws, "ip") || !out_jstr(ws, "ipExpr"))
		out_kv(stdout, KV_WIDTH, "  ip", out_jstr(ws, "ip"));
	else
		out_kvf(stdout, KV_WIDTH, "  ip", "- (%s)", out_jstr(ws, "ipExpr"));
	out_kv(stdout, KV_WIDTH, "  unit", unit);
	out_kv(stdout, KV_WIDTH, "  autoStart",
	       out_jbool(ws, "autoStart", &b) ? yes_no(b) : "-");
	for (size_t i = 0; files && i < json_object_array_length(files); i++) {
		struct json_object *f = json_object_array_get_idx(files, i);

		out_kv(stdout, KV_WIDTH, i == 0 ? "  files" : "",
		       json_object_is_type(f, json_type_string) ? json_object_get_string(f) : "?");
	}
	if (out_jbool(res, "staged", &b)) {
		const char *note = out_jstr(res, "stagedNote");

		if (note)
			out_kvf(stdout, KV_WIDTH, "  staged", "%s (%s)", yes_no(b), note);
		else
			out_kv(stdout, KV_WIDTH, "  staged", yes_no(b));
	}
	if (verify) {
		const char *level = out_jstr(verify, "level");
		bool ok = false;

		if (level && !strcmp(level, "none"))
			out_kv(stdout, KV_WIDTH, "  verify", "none");
		else
			out_kvf(stdout, KV_WIDTH, "  verify", "%s: %s", level ? level : "?",
				!out_jbool(verify, "ok", &ok) ? "?" : ok ? "ok" : "FAILED");
	}
	if (dry_run) {
		if (diff) {
			fputs("\n", stdout);
			/* a diff is shown as it is, but without terminal controls */
			for (const char *p = diff; *p; p++)
				fputc(*p == '\n' || *p == '\t' || ((unsigned char)*p >= 0x20 &&
								  *p != 0x7f)
					      ? *p
					      : '?',
				      stdout);
			if (diff[0] && diff[strlen(diff) - 1] != '\n')
				fputc('\n', stdout);
		}
		return;
	}
	print_next_steps(info, ws);
}

static void print_info(struct json_object *info)
{
	static const char *const known[] = {"version", "protocol", "repo", "machine", "file",
					    "sandboxRoot", "socket", "subnet", "ranges",
					    "workspaces", "verify", "privilegeCommand",
					    "stateDir", "pid", "uptimeSeconds"};
	struct json_object *ranges = out_jobj(info, "ranges");
	int64_t up;

	for (size_t i = 0; i < WS_ARRAY_SIZE(known); i++) {
		struct json_object *v;
		WS_AUTOFREE char *text = NULL;

		if (!json_object_object_get_ex(info, known[i], &v))
			continue;
		if (!strcmp(known[i], "ranges") && ranges) {
			json_object_object_foreach(ranges, k, rv)
			{
				WS_AUTOFREE char *key = NULL;
				struct json_object *a = NULL, *b = NULL;

				if (json_object_is_type(rv, json_type_array) &&
				    json_object_array_length(rv) == 2) {
					a = json_object_array_get_idx(rv, 0);
					b = json_object_array_get_idx(rv, 1);
				}
				if (asprintf(&key, "range %s", k) < 0) {
					key = NULL;
					continue;
				}
				if (a && b && json_object_is_type(a, json_type_string) &&
				    json_object_is_type(b, json_type_string)) {
					out_kvf(stdout, KV_WIDTH, key, "%s - %s",
						json_object_get_string(a), json_object_get_string(b));
				} else {
					WS_AUTOFREE char *t = out_jtext(rv);

					out_kv(stdout, KV_WIDTH, key, t);
				}
			}
			continue;
		}
		if (!strcmp(known[i], "uptimeSeconds") && out_jint(info, known[i], &up) && up >= 0) {
			out_kvf(stdout, KV_WIDTH, "uptime", "%" PRId64 "d %02" PRId64 ":%02" PRId64
				":%02" PRId64, up / 86400, up / 3600 % 24, up / 60 % 60, up % 60);
			continue;
		}
		text = out_jtext(v);
		out_kv(stdout, KV_WIDTH, known[i], text);
	}
	json_object_object_foreach(info, k, v)
	{
		bool is_known = false;
		WS_AUTOFREE char *text = NULL;

		for (size_t i = 0; i < WS_ARRAY_SIZE(known); i++)
			is_known |= !strcmp(known[i], k);
		if (is_known)
			continue;
		text = out_jtext(v);
		out_kv(stdout, KV_WIDTH, k, text);
	}
}

/* ---- commands ---- */

static int cmd_info(const struct command *cmd, struct opts *o)
{
	WS_AUTO(conn_clear) struct conn c = CONN_INIT;
	WS_AUTO(batch_clear) struct batch b = {.n = 0};
	struct json_object *info = NULL;
	int r;

	(void)batch_add(&b, "daemon.info", NULL);
	r = session_run(o, &c, &b, timeout_or(o, WSCTL_TIMEOUT_MS), NULL, NULL, &info);
	if (r != 0)
		return r;
	if (o->json)
		out_json(stdout, info);
	else
		print_info(info);
	return 0;
}

static int cmd_list(const struct command *cmd, struct opts *o)
{
	static const char *const headers[] = {"NAME", "TYPE", "IP", "UNIT", "STATE",
					      "AUTOSTART", "HOSTKEY", "PROBLEMS"};
	WS_AUTO(conn_clear) struct conn c = CONN_INIT;
	WS_AUTO(batch_clear) struct batch b = {.n = 0};
	WS_AUTO(out_table_freep) struct out_table *t = NULL;
	struct json_object *info = NULL, *res = NULL, *list;
	size_t k;
	int r;

	if (o->names && o->json) {
		return usage_error(cmd, "--names and --json exclude each other");
	}
	(void)batch_add(&b, "daemon.info", NULL);
	k = batch_add(&b, cmd->method, NULL);
	r = session_run(o, &c, &b, timeout_or(o, WSCTL_TIMEOUT_MS), NULL, NULL, &info);
	if (r != 0)
		return r;
	r = reply_object(&c, &b.q[k], &res);
	if (r != 0)
		return r;
	list = out_jarr(res, "workspaces");
	if (!list) {
		out_err("malformed reply to %s: no 'workspaces' array", cmd->method);
		return EXIT_DAEMON;
	}
	if (o->json) {
		out_json(stdout, res);
		return 0;
	}
	if (o->names) {
		for (size_t i = 0; i < json_object_array_length(list); i++) {
			const char *name = out_jstr(json_object_array_get_idx(list, i), "name");

			if (name) {
				out_clean(stdout, name);
				fputc('\n', stdout);
			}
		}
		return 0;
	}
	if (json_object_array_length(list) == 0) {
		const char *file = out_jstr(info, "file");

		fputs("No workspaces declared", stdout);
		if (file) {
			fputs(" in ", stdout);
			out_clean(stdout, file);
		}
		fputs(".\n", stdout);
		return 0;
	}
	r = out_table_new(WS_ARRAY_SIZE(headers), headers, &t);
	if (r < 0)
		goto oom;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		struct json_object *ws = json_object_array_get_idx(list, i);
		WS_AUTOFREE char *unit = unit_of(ws);
		WS_AUTOFREE char *state = state_text(ws, "/");
		WS_AUTOFREE char *problems = problems_text(ws);
		const char *ip = out_jstr(ws, "ip");
		bool autostart = false;
		const char *cells[WS_ARRAY_SIZE(headers)];

		(void)out_jbool(ws, "autoStart", &autostart);
		cells[0] = out_jstr(ws, "name");
		cells[1] = out_jstr(ws, "type");
		cells[2] = ip ? ip : out_jstr(ws, "ipExpr") ? "?" : NULL;
		cells[3] = unit;
		cells[4] = state;
		cells[5] = yes_no(autostart);
		cells[6] = yes_no(out_jstr(ws, "hostKey") != NULL);
		cells[7] = problems;
		r = out_table_add(t, cells);
		if (r < 0)
			goto oom;
	}
	out_table_print(t, stdout);
	return 0;
oom:
	out_err("out of memory");
	return EXIT_DAEMON;
}

static int cmd_show(const struct command *cmd, struct opts *o)
{
	WS_AUTO(conn_clear) struct conn c = CONN_INIT;
	WS_AUTO(batch_clear) struct batch b = {.n = 0};
	struct json_object *info = NULL, *res = NULL, *params;
	size_t k;
	int r;

	params = json_object_new_object();
	if (!params)
		return EXIT_DAEMON;
	/* params now owns the name */
	json_object_object_add(params, WS_KEY_NAME, json_object_new_string(o->name));
	(void)batch_add(&b, "daemon.info", NULL);
	k = batch_add(&b, cmd->method, params);
	r = session_run(o, &c, &b, timeout_or(o, WSCTL_TIMEOUT_MS), NULL, NULL, &info);
	if (r != 0)
		return r;
	r = reply_object(&c, &b.q[k], &res);
	if (r != 0)
		return r;
	if (o->json)
		out_json(stdout, res);
	else
		print_workspace(res);
	return 0;
}

static int cmd_hostkey(const struct command *cmd, struct opts *o)
{
	WS_AUTO(conn_clear) struct conn c = CONN_INIT;
	WS_AUTO(batch_clear) struct batch b = {.n = 0};
	struct json_object *info = NULL, *res = NULL, *params;
	const char *key, *fp;
	bool changed = false;
	size_t k;
	int r;

	params = json_object_new_object();
	if (!params)
		return EXIT_DAEMON;
	/* params now owns the values */
	json_object_object_add(params, WS_KEY_NAME, json_object_new_string(o->name));
	if (o->replace)
		json_object_object_add(params, WS_KEY_REPLACE, json_object_new_boolean(1));
	(void)batch_add(&b, "daemon.info", NULL);
	k = batch_add(&b, cmd->method, params);
	r = session_run(o, &c, &b, timeout_or(o, WSCTL_TIMEOUT_MS), NULL, NULL, &info);
	if (r != 0)
		return r;
	r = reply_object(&c, &b.q[k], &res);
	if (r != 0)
		return r;
	if (o->json) {
		out_json(stdout, res);
		return 0;
	}
	key = out_jstr(res, "hostKey");
	fp = out_jstr(res, "fingerprint");
	(void)out_jbool(res, "changed", &changed);
	out_clean(stdout, out_jstr(res, "name") ? out_jstr(res, "name") : o->name);
	fputs(changed ? ": host key registered\n" : ": host key unchanged (already registered)\n",
	      stdout);
	out_kv(stdout, KV_WIDTH, "  hostKey", key);
	if (fp)
		out_kv(stdout, KV_WIDTH, "  fingerprint", fp);
	if (changed) {
		WS_AUTOFREE char *deploy = deploy_command(info);

		fputs("The entry now holds the key (staged); deploy so the host trusts it:\n  ",
		      stdout);
		out_clean(stdout, deploy);
		fputc('\n', stdout);
	}
	return 0;
}

/* What create --wait-hostkey waits for. */
struct hostkey_wait {
	const char *name;               /* borrowed */
	bool json;
	struct json_object *event;      /* owned: the hostkey.registered params, once seen */
};

static void hostkey_wait_clear(struct hostkey_wait *w)
{
	json_putp(&w->event);
}

static void hostkey_wait_event_cb(void *userdata, struct json_object *params)
{
	struct hostkey_wait *w = userdata;
	const char *type = out_jstr(params, "type"), *name = out_jstr(params, "name");
	const char *line = out_jstr(params, "line");

	if (!type)
		return;
	if (!strcmp(type, "verify.progress") && !w->json && line) {
		fputs("  | ", stderr);
		out_clean(stderr, line);
		fputc('\n', stderr);
		return;
	}
	if (!name || strcmp(name, w->name) != 0)
		return;
	if (!strcmp(type, "hostkey.registered") && !w->event) {
		w->event = json_object_get(params);
	} else if (!strcmp(type, "hostkey.mismatch") || !strcmp(type, "hostkey.invalid")) {
		fflush(stdout);
		fputs("wsctl: note: ", stderr);
		out_event(stderr, params);
	}
}

static int wait_hostkey(struct conn *c, struct hostkey_wait *w, int timeout_ms)
{
	int64_t deadline = deadline_in(timeout_ms);
	const char *fp, *key;
	int r;

	if (!w->event && !w->json) {
		fprintf(stdout, "\nWaiting up to %g s for the host key of '", timeout_ms / 1000.0);
		out_clean(stdout, w->name);
		fputs("' (deploy and start it as shown above)...\n", stdout);
		fflush(stdout);
	}
	while (!w->event) {
		WS_AUTO(json_putp) struct json_object *msg = NULL;

		r = conn_next(c, deadline, &msg);
		if (r == -ETIMEDOUT) {
			out_err("no host key was registered for '%s' within %g s; once it has "
				"booted, run 'wsctl hostkey %s'",
				w->name, timeout_ms / 1000.0, w->name);
			return EXIT_DAEMON;
		}
		if (r == 0) {
			out_err("the daemon at %s closed the connection while waiting for the host "
				"key of '%s'", c->path, w->name);
			return EXIT_DAEMON;
		}
		if (r < 0)
			return conn_fail(c, r, timeout_ms);
		dispatch_event(msg, hostkey_wait_event_cb, w);
	}
	if (w->json) {
		out_json(stdout, w->event);
		return 0;
	}
	fp = out_jstr(w->event, "fingerprint");
	key = out_jstr(w->event, "hostKey");
	fputs("Host key registered for '", stdout);
	out_clean(stdout, w->name);
	fputs("': ", stdout);
	out_clean(stdout, fp ? fp : key ? key : "(no fingerprint reported)");
	fputc('\n', stdout);
	return 0;
}

static int cmd_create(const struct command *cmd, struct opts *o)
{
	static const char *const levels[] = {"none", "parse", "eval", "build"};
	WS_AUTO(conn_clear) struct conn c = CONN_INIT;
	WS_AUTO(batch_clear) struct batch b = {.n = 0};
	WS_AUTO(hostkey_wait_clear) struct hostkey_wait w = {.name = o->name, .json = o->json};
	struct json_object *info = NULL, *res = NULL, *sub = NULL, *params;
	size_t k, ks = 0;
	bool level_ok = false;
	int r;

	if (!o->type) {
		return usage_error(cmd, "'create' needs --type TYPE (vm, container or incus)");
	}
	if (ws_type_from_string(o->type) < 0) {
		return usage_error(cmd, "unknown type '%s': use vm, container or incus", o->type);
	}
	for (size_t i = 0; o->verify && i < WS_ARRAY_SIZE(levels); i++)
		level_ok |= !strcmp(o->verify, levels[i]);
	if (o->verify && !level_ok) {
		return usage_error(cmd, "unknown verify level '%s': use none, parse, eval or build",
				   o->verify);
	}
	if (o->wait_hostkey && o->dry_run) {
		return usage_error(cmd, "--wait-hostkey and --dry-run exclude each other");
	}

	params = json_object_new_object();
	if (!params)
		return EXIT_DAEMON;
	/* params now owns each value */
	json_object_object_add(params, WS_KEY_NAME, json_object_new_string(o->name));
	json_object_object_add(params, WS_KEY_TYPE, json_object_new_string(o->type));
	if (o->ip)
		json_object_object_add(params, WS_KEY_IP, json_object_new_string(o->ip));
	if (o->autostart)
		json_object_object_add(params, WS_KEY_AUTOSTART, json_object_new_boolean(1));
	if (o->verify)
		json_object_object_add(params, WS_KEY_VERIFY, json_object_new_string(o->verify));
	if (o->dry_run)
		json_object_object_add(params, WS_KEY_DRYRUN, json_object_new_boolean(1));

	(void)batch_add(&b, "daemon.info", NULL);
	/* subscribed before the create, so the key of a fast first boot cannot slip past */
	if (o->wait_hostkey)
		ks = batch_add(&b, "events.subscribe", NULL);
	k = batch_add(&b, cmd->method, params);
	/* a build may take long: the create itself has no timeout unless asked, and with
	 * --wait-hostkey --timeout is the wait for the key */
	r = session_run(o, &c, &b, o->wait_hostkey ? 0 : timeout_or(o, 0),
			o->wait_hostkey ? hostkey_wait_event_cb : NULL, &w, &info);
	if (r != 0)
		return r;
	r = reply_object(&c, &b.q[k], &res);
	if (r != 0)
		return r;
	if (o->json)
		out_json(stdout, res);
	else
		print_created(info, res, o->dry_run);
	if (!o->wait_hostkey)
		return 0;
	r = reply_result(&c, &b.q[ks], &sub);
	if (r != 0)
		return r;
	fflush(stdout);
	return wait_hostkey(&c, &w, timeout_or(o, WSCTL_HOSTKEY_TIMEOUT_MS));
}

static void print_event_cb(void *userdata, struct json_object *params)
{
	const struct opts *o = userdata;

	if (o->json)
		out_json_line(stdout, params);
	else
		out_event(stdout, params);
	fflush(stdout);
}

static int cmd_events(const struct command *cmd, struct opts *o)
{
	WS_AUTO(conn_clear) struct conn c = CONN_INIT;
	WS_AUTO(batch_clear) struct batch b = {.n = 0};
	struct sigaction sa = {.sa_handler = on_sigint};
	struct json_object *info = NULL, *res = NULL;
	size_t k;
	int r;

	/* no SA_RESTART: poll() returns EINTR and the loop ends cleanly */
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);

	(void)batch_add(&b, "daemon.info", NULL);
	k = batch_add(&b, cmd->method, NULL);
	r = session_run(o, &c, &b, timeout_or(o, WSCTL_TIMEOUT_MS), print_event_cb, o, &info);
	if (r == 130 && interrupted)
		return 0;
	if (r != 0)
		return r;
	r = reply_result(&c, &b.q[k], &res);
	if (r != 0)
		return r;
	for (;;) {
		WS_AUTO(json_putp) struct json_object *msg = NULL;

		r = conn_next(&c, -1, &msg);
		if (r == 0 || r == -EINTR)
			return 0; /* the daemon closed, or we were interrupted */
		if (r < 0)
			return conn_fail(&c, r, 0);
		dispatch_event(msg, print_event_cb, o);
	}
}

/* ---- the command line ---- */

static const struct command commands[] = {
	{"create", "workspace.create",
	 "NAME --type TYPE [--ip A.B.C.D] [--autostart] [--verify LEVEL] [--dry-run]\n"
	 "                    [--wait-hostkey [--timeout S]]",
	 "  --type TYPE      vm, container or incus (required)\n"
	 "  --ip A.B.C.D     this address instead of the lowest free one of the type's range\n"
	 "  --autostart      start the workspace at boot (autoStart = true)\n"
	 "  --verify LEVEL   none, parse, eval or build (default: the daemon's setting)\n"
	 "  --dry-run        write nothing; show the diff the create would make\n"
	 "  --wait-hostkey   after the create, wait until the workspace's SSH host key is\n"
	 "                   registered and print its fingerprint\n"
	 "  --timeout S      with --wait-hostkey: how long to wait (default 600);\n"
	 "                   otherwise: for the create itself (default: no limit)\n"
	 "\nNAME: lower-case letters, digits and '-', not first or last; at most 11\n"
	 "characters for a container (ve-NAME), 12 for a vm (vm-NAME), 53 for incus.\n",
	 OPT_BIT(OPT_TYPE) | OPT_BIT(OPT_IP) | OPT_BIT(OPT_AUTOSTART) | OPT_BIT(OPT_VERIFY) |
		 OPT_BIT(OPT_DRYRUN) | OPT_BIT(OPT_WAIT),
	 true, cmd_create},
	{"list", "workspace.list", "[--names] [--json]",
	 "  --names          only the names, one per line\n", OPT_BIT(OPT_NAMES), false, cmd_list},
	{"show", "workspace.show", "NAME [--json]", "", 0, true, cmd_show},
	{"info", "daemon.info", "[--json]", "", 0, false, cmd_info},
	{"hostkey", "workspace.hostkey", "NAME [--replace] [--json]",
	 "  --replace        register the key even when a different one is registered\n",
	 OPT_BIT(OPT_REPLACE), true, cmd_hostkey},
	{"events", "events.subscribe", "[--json]",
	 "  (prints one line per event until interrupted or the daemon closes the connection;\n"
	 "   --json prints each event's params as one JSON line)\n",
	 0, false, cmd_events},
};

static const char global_options_help[] =
	"  --socket PATH    the daemon's socket (default: $WORKSPACED_SOCKET, else\n"
	"                   $XDG_RUNTIME_DIR/" WS_SOCKET_NAME ", else\n"
	"                   /run/user/UID/" WS_SOCKET_NAME ")\n"
	"  --json           print the raw result as JSON\n"
	"  --timeout S      seconds to wait for a reply (default 30; create: no limit)\n"
	"  -h, --help       show help\n";

static const char *method_summary(const char *wire)
{
	for (size_t i = 0; i < WS_ARRAY_SIZE(method_helps); i++)
		if (!strcmp(method_helps[i].wire, wire))
			return method_helps[i].help;
	return "";
}

static void help_main(FILE *f)
{
	fprintf(f, "Usage: wsctl [--socket PATH] [--json] [--timeout S] COMMAND [ARGS...]\n"
		   "       wsctl help [COMMAND] | --help | --version\n\n"
		   "The client of workspaced, which declares sandboxed workspaces in a NixOS flake.\n\n"
		   "Commands:\n");
	for (size_t i = 0; i < WS_ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, method_summary(commands[i].method));
	fprintf(f, "  %-10s %s\n", "help", "show help for a command");
	fprintf(f, "\nGlobal options:\n%s", global_options_help);
	fprintf(f, "\nDaemon methods (protocol %d):\n", WS_PROTO_VERSION);
	for (size_t i = 0; i < WS_ARRAY_SIZE(method_helps); i++)
		fprintf(f, "  %-18s %s\n", method_helps[i].wire, method_helps[i].help);
	fprintf(f, "\nExit status: 0 success, 1 error from the daemon, 2 usage error, 69 daemon "
		   "unreachable.\nSee wsctl(1).\n");
}

static void help_command(FILE *f, const struct command *cmd)
{
	fprintf(f, "Usage: wsctl %s %s\n\n", cmd->name, cmd->synopsis);
	fprintf(f, "wsctl %s: %s (method %s).\n", cmd->name, method_summary(cmd->method),
		cmd->method);
	if (cmd->options[0])
		fprintf(f, "\nOptions:\n%s", cmd->options);
	fprintf(f, "\nGlobal options:\n%s", global_options_help);
}

static const struct command *command_find(const char *name)
{
	for (size_t i = 0; i < WS_ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static const char *opt_name(int o)
{
	for (size_t i = 0; long_opts[i].name; i++)
		if (long_opts[i].val == OPT_VAL(o))
			return long_opts[i].name;
	return "?";
}

/* Seconds (a decimal number >= 0) to milliseconds; 0 means no limit. */
static int parse_timeout(const char *s, int *ret_ms)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 2000000.0)
		return -EINVAL;
	*ret_ms = (int)(v * 1000.0 + 0.999); /* rounded up: 0.0001 s is not "no limit" */
	return 0;
}

/* Whether argv word @w is a long option whose value is the next word (--socket PATH). */
static bool takes_next_word(const char *w)
{
	if (strncmp(w, "--", 2) != 0 || strchr(w, '='))
		return false;
	for (const struct option *lo = long_opts; lo->name; lo++)
		if (strcmp(w + 2, lo->name) == 0)
			return lo->has_arg == required_argument;
	return false;
}

/* For a usage error met while options are read: the command named on the line, if any
 * (its first word that is neither an option nor an option's value), so that the hint
 * points at its --help. */
static const struct command *command_on_line(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return i + 1 < argc ? command_find(argv[i + 1]) : NULL;
		if (argv[i][0] != '-')
			return command_find(argv[i]);
		if (takes_next_word(argv[i]))
			i++;
	}
	return NULL;
}

/* Fills @o and *ret_cmd from argv. Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct opts *o, const struct command **ret_cmd)
{
	const struct command *cmd = NULL;
	char **pos;
	size_t n_pos;
	int ch;

	/* "-dev" would read as -d -e -v: name the word typed (only -h is a short option) */
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *w = argv[i];

		if (w[0] == '-' && w[1] && w[1] != '-' && w[2])
			return usage_error(command_on_line(argc, argv),
					   "unknown option '%s' (long options start with '--')", w);
		if (takes_next_word(w))
			i++;
	}
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		int opt = ch == 'h' ? OPT_HELP : ch - 0x100;

		if (ch == '?') {
			if (optopt)
				return usage_error(command_on_line(argc, argv),
						   "unknown option '-%c'", optopt);
			return usage_error(command_on_line(argc, argv), "unknown option '%s'",
					   argv[optind - 1]);
		}
		if (ch == ':')
			return usage_error(command_on_line(argc, argv), "option '%s' needs a value",
					   argv[optind - 1]);
		if (opt < 0 || opt >= OPT_COUNT)
			return usage_error(NULL, "cannot parse the command line");
		o->seen |= OPT_BIT(opt);
		switch (opt) {
		case OPT_SOCKET:
			o->socket = optarg;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_TIMEOUT:
			if (parse_timeout(optarg, &o->timeout_ms) < 0)
				return usage_error(NULL, "--timeout wants seconds (a number >= 0), "
							 "not '%s'", optarg);
			break;
		case OPT_HELP:
			o->help = true;
			break;
		case OPT_VERSION:
			o->version = true;
			break;
		case OPT_TYPE:
			o->type = optarg;
			break;
		case OPT_IP:
			o->ip = optarg;
			break;
		case OPT_AUTOSTART:
			o->autostart = true;
			break;
		case OPT_VERIFY:
			o->verify = optarg;
			break;
		case OPT_DRYRUN:
			o->dry_run = true;
			break;
		case OPT_WAIT:
			o->wait_hostkey = true;
			break;
		case OPT_NAMES:
			o->names = true;
			break;
		case OPT_REPLACE:
			o->replace = true;
			break;
		}
	}
	pos = argv + optind;
	n_pos = (size_t)(argc - optind);

	if (n_pos == 0) {
		if (o->version) {
			printf("wsctl %s (protocol %d)\n", WS_VERSION, WS_PROTO_VERSION);
			return 0;
		}
		if (o->help) {
			help_main(stdout);
			return 0;
		}
		return usage_error(NULL, "no command given");
	}
	if (!strcmp(pos[0], "help")) {
		if (n_pos > 2)
			return usage_error(NULL, "unexpected argument '%s'", pos[2]);
		if (n_pos == 1) {
			help_main(stdout);
			return 0;
		}
		cmd = command_find(pos[1]);
		if (!cmd)
			return usage_error(NULL, "unknown command '%s'", pos[1]);
		help_command(stdout, cmd);
		return 0;
	}
	cmd = command_find(pos[0]);
	if (!cmd)
		return usage_error(NULL, "unknown command '%s'", pos[0]);
	if (o->help) {
		help_command(stdout, cmd);
		return 0;
	}
	for (int i = 0; i < OPT_COUNT; i++)
		if ((o->seen & OPT_BIT(i)) && !((OPT_GLOBAL | cmd->allowed) & OPT_BIT(i)))
			return usage_error(cmd, "option '--%s' does not apply to '%s'", opt_name(i),
					   cmd->name);
	if (cmd->takes_name) {
		if (n_pos < 2)
			return usage_error(cmd, "'%s' needs a workspace NAME", cmd->name);
		if (!pos[1][0])
			return usage_error(cmd, "the workspace NAME is empty");
		o->name = pos[1];
		if (n_pos > 2)
			return usage_error(cmd, "unexpected argument '%s'", pos[2]);
	} else if (n_pos > 1) {
		return usage_error(cmd, "unexpected argument '%s'", pos[1]);
	}
	*ret_cmd = cmd;
	return -1;
}

static int resolve_socket(struct opts *o)
{
	const char *env = getenv("WORKSPACED_SOCKET");
	const char *rt = getenv("XDG_RUNTIME_DIR");
	int r;

	if (o->socket && !o->socket[0])
		return usage_error(NULL, "--socket needs a path");
	if (!o->socket && env && env[0])
		o->socket = env;
	if (!o->socket) {
		if (rt && rt[0])
			r = asprintf(&o->socket_buf, "%s/%s", rt, WS_SOCKET_NAME);
		else
			r = asprintf(&o->socket_buf, "/run/user/%u/%s", (unsigned)getuid(),
				     WS_SOCKET_NAME);
		if (r < 0) {
			o->socket_buf = NULL;
			out_err("out of memory");
			return EXIT_DAEMON;
		}
		o->socket = o->socket_buf;
	}
	if (strlen(o->socket) > WS_SOCKET_PATH_MAX)
		return usage_error(NULL, "the socket path '%s' is longer than %d bytes", o->socket,
				   WS_SOCKET_PATH_MAX);
	return -1;
}

int main(int argc, char **argv)
{
	struct opts o = {.timeout_ms = -1};
	const struct command *cmd = NULL;
	int r;

	r = parse_args(argc, argv, &o, &cmd);
	if (r < 0)
		r = resolve_socket(&o);
	if (r < 0)
		r = cmd->run(cmd, &o);
	free(o.socket_buf);
	if (fflush(stdout) != 0 && r == 0) {
		out_err("cannot write the output: %s", strerror(errno));
		r = EXIT_DAEMON;
	}
	return r;
}
