/* SPDX-License-Identifier: MIT */
/* Verification as child processes through libuv (never blocking the loop): `parse` runs
 * nix-instantiate --parse on each changed file, `eval` and `build` run the configured
 * commands through /bin/sh -c in the repository. Output is collected (its tail kept) and
 * streamed line by line to a progress callback. */
#ifndef VERIFY_H
#define VERIFY_H

#include <stddef.h>
#include <uv.h>

struct json_object;

enum verify_level { VERIFY_NONE, VERIFY_PARSE, VERIFY_EVAL, VERIFY_BUILD };

int verify_level_from_string(const char *s); /* -EINVAL for an unknown level */
const char *verify_level_to_string(enum verify_level l);

struct verify_req {
	enum verify_level level;
	const char *cwd;                  /* the repository */
	const char *const *files;         /* absolute paths of changed Nix files (parse) */
	size_t n_files;
	const char *eval_command;         /* sh -c, for eval */
	const char *build_command;        /* sh -c, for build */
	const char *nix_instantiate;      /* program for parse; default "nix-instantiate" */
};

/* @result is {level, ok, exitStatus?, signal?, file?, log?, message} (ownership passes to the
 * callback; NULL only if memory ran out). exitStatus is there when a process ran (128 + N
 * when signal N killed it); log (the last 40 lines, at most 8 KiB) and, for parse, file
 * (the one that failed) only on failure; message is a sentence for people. */
typedef void (*verify_done_fn)(void *userdata, int ok, struct json_object *result);
typedef void (*verify_line_fn)(void *userdata, const char *line);

struct verify_job;

/* Starts the checks; @done is called exactly once, from the loop (also for VERIFY_NONE,
 * and when a program cannot be started: ok 0 with a message saying so, e.g. that
 * nix-instantiate is not installed). @line may be NULL. */
int verify_start(uv_loop_t *loop, const struct verify_req *req, verify_done_fn done,
		 verify_line_fn line, void *userdata, struct verify_job **ret_job);
/* Kills a running job's process group (SIGTERM, SIGKILL 2 s later); @done still runs (ok 0).
 * The job frees itself after @done: *ret_job must not be used once @done was called. */
void verify_cancel(struct verify_job *job);

#endif
