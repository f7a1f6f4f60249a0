/* SPDX-License-Identifier: MIT */
/* The socket side of the daemon: listening (bound here or passed by systemd), peer
 * credential check, newline framing with a size cap, full JSON-RPC 2.0 (ids, notifications,
 * batches, standard errors), dispatch to the method table, replies queued per connection,
 * limits, and event fan-out to subscribers. It knows nothing of workspaces. */
#ifndef RPC_H
#define RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

struct json_object;
struct ws_err;
struct rpc_server;
struct rpc_call;

/* A handler answers exactly once, now or later, with rpc_call_reply() or rpc_call_fail().
 * @params is borrowed and stays valid until the call is answered (NULL when absent). */
typedef void (*rpc_handler_fn)(struct rpc_call *call, struct json_object *params);

struct rpc_method {
	const char *wire;     /* "workspace.create" */
	unsigned flags;       /* WS_M_* */
	rpc_handler_fn fn;
};

struct rpc_limits {
	size_t max_message;        /* bytes per line; default WS_MAX_MESSAGE_DEFAULT */
	size_t max_connections;    /* default 128 */
	size_t max_pending;        /* requests in flight per connection; default 64 */
	size_t max_queued_bytes;   /* unsent reply bytes per connection; default 16 MiB */
	size_t max_subscribers;    /* default 64 */
};

/* @methods is borrowed (static table). @userdata is handed to handlers through
 * rpc_server_userdata(). Zero fields of @limits take the defaults. */
int rpc_server_new(uv_loop_t *loop, const struct rpc_method *methods, size_t n_methods,
		   const struct rpc_limits *limits, void *userdata, struct rpc_server **ret_srv);
/* Binds @path ourselves: a stale socket file is removed (a live one is refused: another
 * daemon answers there), umask, bind, chmod @mode (0600, or 0660 with @gid != -1, which
 * also lets peers of that primary group in), listen. The path is unlinked on close. */
int rpc_server_listen_path(struct rpc_server *s, const char *path, mode_t mode, gid_t gid,
			   struct ws_err *err);
/* Serves an already listening socket (socket activation); never unlinks or binds. */
int rpc_server_listen_fd(struct rpc_server *s, int fd, struct ws_err *err);
/* Stops accepting, lets queued replies finish writing, closes every connection, unlinks a
 * path we bound; calls @done (may be NULL) once every handle is closed. Calls still in
 * flight are answered into the void. */
void rpc_server_close(struct rpc_server *s, void (*done)(void *ud), void *ud);
void rpc_server_free(struct rpc_server *s); /* after @done ran */
void *rpc_server_userdata(const struct rpc_server *s);
size_t rpc_server_n_connections(const struct rpc_server *s);

/* Sends {"jsonrpc":"2.0","method":"event","params":{"type":TYPE,...params}} to every
 * subscribed connection. Takes ownership of @params (may be NULL). */
void rpc_server_emit(struct rpc_server *s, const char *type, struct json_object *params);

struct rpc_server *rpc_call_server(const struct rpc_call *c);
const char *rpc_call_method(const struct rpc_call *c);
/* The request id as text, for logs ("1", "\"a\""). */
const char *rpc_call_id_text(const struct rpc_call *c);
/* Peer credentials of the connection the call came on. */
uid_t rpc_call_peer_uid(const struct rpc_call *c);
/* Answers and frees the call. Takes ownership of @result. Safe after the client left. */
void rpc_call_reply(struct rpc_call *c, struct json_object *result);
/* The same with a result already serialized as JSON text (@json is copied as needed). */
void rpc_call_reply_text(struct rpc_call *c, const char *json);
/* Answers with an error (err->code: application or JSON-RPC code; 0 means -32603). */
void rpc_call_fail(struct rpc_call *c, const struct ws_err *err);
/* Marks the call's connection as subscribed to events. -ENOSPC over the limit. */
int rpc_call_subscribe(struct rpc_call *c);

#endif
