/* SPDX-License-Identifier: MIT */
/* One handler per RPC method, and the orchestration of writes: a create (validate, plan on
 * the lossless tree, allocate, write atomically, stage, verify) and a host-key write-back
 * run one at a time in arrival order, and undo everything they wrote on failure. */
#ifndef METHODS_H
#define METHODS_H

#include <stdbool.h>
#include <stddef.h>

#include "ws_proto.h"

struct daemon;
struct methods;
struct rpc_call;
struct rpc_method;
struct json_object;

int methods_new(struct daemon *d, struct methods **ret_m);
void methods_free(struct methods *m);
/* The dispatch table built from ws_methods.def. */
const struct rpc_method *methods_table(size_t *ret_n);
/* Host-key watcher batch (hostkeys_batch_fn). */
void methods_hostkeys_cb(void *userdata, const char *const *names, size_t n);
/* Tells the host-key watcher (d->hk, once created) which names are declared. */
void methods_start_watching(struct methods *m);
/* Declared workspaces in the cached model (0 while the file does not parse). */
size_t methods_n_workspaces(const struct methods *m);
/* No write is running or queued. */
bool methods_idle(const struct methods *m);
/* A workspace unit's state changed (unitstate_changed_fn): emits unit.changed. */
void methods_unit_changed_cb(void *userdata, const char *unit, const char *active,
			     const char *sub);
/* The machine file changed outside the daemon: re-read, emit config.changed. */
void methods_machine_changed(struct daemon *d);

#define WS_METHOD(c, wire, fl, help) void methods_##c(struct rpc_call *call, struct json_object *params);
#include "ws_methods.def"
#undef WS_METHOD

#endif
