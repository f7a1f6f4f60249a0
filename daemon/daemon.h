/* SPDX-License-Identifier: MIT */
/* The daemon's shared state: one struct, owned by main, touched only on the loop thread. */
#ifndef DAEMON_H
#define DAEMON_H

#include <stdbool.h>
#include <time.h>
#include <uv.h>

#include "config.h"

struct rpc_server;
struct gitstage;
struct state;
struct hostkeys;
struct flake;
struct methods;
struct unitstate;

struct daemon {
	uv_loop_t *loop;
	struct ws_config cfg;
	char *machine_dir;       /* absolute: REPO/machines/HOST */
	char *machine_file;      /* absolute: REPO/machines/HOST/default.nix */
	char *machine_file_rel;  /* machines/HOST/default.nix */
	char *state_file;        /* STATE_DIR/state.json */
	struct gitstage *git;    /* owned; used only from one pool job at a time */
	struct state *state;     /* owned */
	struct rpc_server *rpc;  /* owned */
	struct hostkeys *hk;     /* owned; NULL until started */
	struct methods *m;       /* owned; the write queue and the cached flake model */
	struct unitstate *units; /* owned; NULL until started */
	int repo_lock, state_lock; /* flock'd files: one daemon per repository / state dir */
	time_t started;
	unsigned cfg_gen;        /* bumped on every configuration reload */
	bool stopping;
};

/* Called by methods when the daemon is stopping and the last write has finished: closes
 * the server and every handle so the loop can end. (main.c) */
void daemon_idle(struct daemon *d);

#endif
