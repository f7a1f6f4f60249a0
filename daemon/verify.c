/* SPDX-License-Identifier: MIT */
/* Verification as child processes: `parse` runs nix-instantiate --parse on each changed file,
 * one after another; `eval` and `build` run their command through /bin/sh -c in the
 * repository. Everything goes through uv_spawn and pipes, so the loop never waits; output is
 * split into lines, streamed to a callback and its tail kept for the result. This module
 * decides nothing about what to verify or when, and never reports a check it did not run. */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <uv.h>

#include "verify.h"
#include "log.h"
#include "ws_macros.h"
#include "ws_proto.h"

#define VERIFY_LINE_MAX 4096       /* longer lines are cut into pieces of this size */
#define VERIFY_TAIL_BYTES 8192     /* the log tail keeps at most this much ... */
#define VERIFY_TAIL_LINES 40       /* ... and at most this many lines */
#define VERIFY_KILL_GRACE_MS 2000  /* SIGTERM, then SIGKILL after this */
#define VERIFY_DRAIN_MS 500        /* after exit, wait this long for the pipe's end */

extern char **environ;

/* Never passed on: they belong to our own service manager, not to the checks. */
static const char *const scrubbed_env[] = {
	"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
};

enum timer_mode { TIMER_IDLE, TIMER_STEP, TIMER_KILL, TIMER_DRAIN };

struct verify_job {
	uv_loop_t *loop;                   /* borrowed */
	enum verify_level level;
	char *cwd;                         /* owned, may be NULL */
	char **files;                      /* owned copies */
	size_t n_files;
	size_t next_file;                  /* parse: index of the file being (or next) checked */
	char *command;                     /* owned; eval/build */
	char *program;                     /* owned; parse */
	char **env;                        /* owned, NULL-terminated */
	verify_done_fn done;
	verify_line_fn line;
	void *userdata;

	uv_timer_t timer;                  /* freed with the job, in job_close_cb */
	enum timer_mode timer_mode;
	uv_process_t proc;                 /* one per step, closed before the next */
	uv_pipe_t out;                     /* read end of the child's stdout+stderr */
	int open_handles;                  /* proc and out, while they are not closed */
	bool running;                      /* a step was spawned and is not complete */
	bool ran;                          /* some process ran (exitStatus is meaningful) */
	bool proc_exited;
	bool out_closing;
	bool eval_done;                    /* eval/build: the command ran */
	bool cancelled;
	bool finished;                     /* done was called */
	int spawn_error;                   /* < 0 when the last spawn failed */
	int pgid;                          /* the step's process group (= its pid); 0: none */
	int64_t exit_status;
	int term_signal;

	char linebuf[VERIFY_LINE_MAX];
	size_t line_len;
	char tail[VERIFY_TAIL_BYTES];
	size_t tail_len;
	size_t tail_lines;
	char readbuf[16384];
};

static const char *const level_names[] = {
	[VERIFY_NONE] = "none",
	[VERIFY_PARSE] = "parse",
	[VERIFY_EVAL] = "eval",
	[VERIFY_BUILD] = "build",
};

int verify_level_from_string(const char *s)
{
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < WS_ARRAY_SIZE(level_names); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	return -EINVAL;
}

const char *verify_level_to_string(enum verify_level l)
{
	if ((size_t)l >= WS_ARRAY_SIZE(level_names))
		return "unknown";
	return level_names[l];
}

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static bool env_scrubbed(const char *entry)
{
	for (size_t i = 0; i < WS_ARRAY_SIZE(scrubbed_env); i++) {
		size_t n = strlen(scrubbed_env[i]);

		if (strncmp(entry, scrubbed_env[i], n) == 0 && entry[n] == '=')
			return true;
	}
	return false;
}

/* A copy of our environment without the service manager's variables. */
static int env_build(char ***ret_env)
{
	char **env = NULL;
	size_t n = 0, k = 0;

	for (char **p = environ; p && *p; p++)
		n++;
	env = calloc(n + 1, sizeof(*env));
	if (!env)
		return -ENOMEM;
	for (char **p = environ; p && *p; p++) {
		if (env_scrubbed(*p))
			continue;
		env[k] = strdup(*p);
		if (!env[k]) {
			strv_free(env);
			return -ENOMEM;
		}
		k++;
	}
	*ret_env = env;
	return 0;
}

static void job_free(struct verify_job *job)
{
	if (!job)
		return;
	free(job->cwd);
	strv_free(job->files);
	free(job->command);
	free(job->program);
	strv_free(job->env);
	free(job);
}

static void job_close_cb(uv_handle_t *h)
{
	job_free(h->data);
}

/* Keeps the last lines: at most VERIFY_TAIL_LINES lines and VERIFY_TAIL_BYTES bytes. */
static void tail_add(struct verify_job *job, const char *line, size_t len)
{
	if (len > VERIFY_TAIL_BYTES - 1) {
		line += len - (VERIFY_TAIL_BYTES - 1);
		len = VERIFY_TAIL_BYTES - 1;
	}
	while (job->tail_len > 0 &&
	       (job->tail_len + len + 1 > VERIFY_TAIL_BYTES || job->tail_lines >= VERIFY_TAIL_LINES)) {
		char *nl = memchr(job->tail, '\n', job->tail_len);
		size_t drop = nl ? (size_t)(nl - job->tail) + 1 : job->tail_len;

		memmove(job->tail, job->tail + drop, job->tail_len - drop);
		job->tail_len -= drop;
		job->tail_lines--;
	}
	memcpy(job->tail + job->tail_len, line, len);
	job->tail_len += len;
	job->tail[job->tail_len++] = '\n';
	job->tail_lines++;
}

static void line_emit(struct verify_job *job)
{
	size_t len = job->line_len;

	if (len > 0 && job->linebuf[len - 1] == '\r')
		len--;
	job->linebuf[len] = '\0';
	tail_add(job, job->linebuf, len);
	job->line_len = 0;
	if (job->line && !job->finished)
		job->line(job->userdata, job->linebuf);
}

static void lines_feed(struct verify_job *job, const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == '\n') {
			line_emit(job);
			continue;
		}
		/* one byte stays free for the terminating NUL */
		if (job->line_len == sizeof(job->linebuf) - 1)
			line_emit(job);
		job->linebuf[job->line_len++] = buf[i];
	}
}

static void timer_arm(struct verify_job *job, enum timer_mode mode, uint64_t ms);
static void step_next(struct verify_job *job);

/* Signals the whole process group of the step, so that what the shell started goes too. */
static void group_kill(struct verify_job *job, int sig)
{
	if (job->pgid > 0)
		(void)kill(-job->pgid, sig);
}

static void json_add_str(struct json_object *o, const char *key, const char *value)
{
	/* o now owns the new string */
	json_object_object_add(o, key, json_object_new_string(value));
}

/* Calls done exactly once, then lets the job go (freed once its timer is closed). */
static void job_finish(struct verify_job *job, bool ok, const char *fmt, ...) WS_PRINTF(3, 4);
static void job_finish(struct verify_job *job, bool ok, const char *fmt, ...)
{
	struct json_object *res = json_object_new_object();
	WS_AUTOFREE char *msg = NULL;
	va_list ap;
	int r;

	assert(!job->finished);
	va_start(ap, fmt);
	r = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (r < 0)
		msg = NULL;

	if (res) {
		json_add_str(res, "level", verify_level_to_string(job->level));
		json_object_object_add(res, "ok", json_object_new_boolean(ok));
		if (job->ran) {
				/* a killed process has no exit status: report the shell's 128 + N */
			int64_t st = job->term_signal > 0 ? 128 + job->term_signal : job->exit_status;

			json_object_object_add(res, "exitStatus", json_object_new_int64(st));
			if (job->term_signal > 0)
				json_object_object_add(res, "signal", json_object_new_int(job->term_signal));
		}
		if (!ok && job->level == VERIFY_PARSE && job->next_file < job->n_files)
			json_add_str(res, "file", job->files[job->next_file]);
		if (!ok && job->ran) {
			/* res now owns the log string */
			json_object_object_add(res, "log",
					       json_object_new_string_len(job->tail, (int)job->tail_len));
		}
		json_add_str(res, "message", msg ? msg : (ok ? "ok" : "verification failed"));
	}

	job->finished = true;
	timer_arm(job, TIMER_IDLE, 0);
	/* the callback owns res; it may be NULL only when memory ran out */
	job->done(job->userdata, ok, res);
	uv_close((uv_handle_t *)&job->timer, job_close_cb);
}

/* A step's handles are all closed: judge it and go on. */
static void step_complete(struct verify_job *job)
{
	const char *what = job->level == VERIFY_PARSE ? job->program : job->command;

	job->running = false;
	job->pgid = 0;
	if (job->timer_mode == TIMER_KILL || job->timer_mode == TIMER_DRAIN)
		timer_arm(job, TIMER_IDLE, 0);

	if (job->spawn_error < 0) {
		if (job->level == VERIFY_PARSE && job->spawn_error == -ENOENT)
			return job_finish(job, false,
					  "%s was not found: install Nix (it provides nix-instantiate, "
					  "e.g. the nix-bin package) or use --verify none",
					  job->program);
		if (job->level == VERIFY_PARSE)
			return job_finish(job, false, "cannot run %s: %s", job->program,
					  uv_strerror(job->spawn_error));
		return job_finish(job, false, "cannot run /bin/sh in '%s': %s",
				  job->cwd ? job->cwd : ".", uv_strerror(job->spawn_error));
	}
	if (job->cancelled)
		return job_finish(job, false, "%s cancelled", verify_level_to_string(job->level));
	if (job->term_signal > 0)
		return job_finish(job, false, "%s: '%s' was killed by signal %d",
				  verify_level_to_string(job->level), what, job->term_signal);
	if (job->exit_status != 0) {
		if (job->level == VERIFY_PARSE)
			return job_finish(job, false, "'%s' does not parse (%s exited with status %lld)",
					  job->files[job->next_file], job->program,
					  (long long)job->exit_status);
		return job_finish(job, false, "%s: '%s' exited with status %lld",
				  verify_level_to_string(job->level), what, (long long)job->exit_status);
	}
	if (job->level == VERIFY_PARSE)
		job->next_file++;
	else
		job->eval_done = true;
	step_next(job);
}

static void handle_close_cb(uv_handle_t *h)
{
	struct verify_job *job = h->data;

	assert(job->open_handles > 0);
	if (--job->open_handles == 0)
		step_complete(job);
}

static void out_close(struct verify_job *job)
{
	if (job->out_closing)
		return;
	job->out_closing = true;
	if (job->line_len > 0)
		line_emit(job);
	uv_close((uv_handle_t *)&job->out, handle_close_cb);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct verify_job *job = h->data;

	*buf = uv_buf_init(job->readbuf, sizeof(job->readbuf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct verify_job *job = s->data;

	if (nread > 0) {
		lines_feed(job, buf->base, (size_t)nread);
		return;
	}
	if (nread == 0)
		return;
	/* UV_EOF, or a read error: either way this is all the output there is */
	out_close(job);
}

static void exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
	struct verify_job *job = p->data;

	job->proc_exited = true;
	job->exit_status = exit_status;
	job->term_signal = term_signal;
	if (job->timer_mode == TIMER_KILL)
		timer_arm(job, TIMER_IDLE, 0);
	uv_close((uv_handle_t *)p, handle_close_cb);
	if (job->out_closing)
		return;
	/* A background grandchild may hold the pipe open: do not wait for it forever. */
	if (job->cancelled) {
		group_kill(job, SIGKILL);
		out_close(job);
	} else {
		timer_arm(job, TIMER_DRAIN, VERIFY_DRAIN_MS);
	}
}

/* Spawns one step: @argv[0] through PATH; stdin /dev/null, stderr (and stdout unless
 * @quiet_stdout) into one pipe; nothing else is inherited (libuv's fds are O_CLOEXEC). */
static int step_spawn(struct verify_job *job, char **argv, const char *cwd, bool quiet_stdout)
{
	uv_process_options_t opts = { 0 };
	uv_stdio_container_t stdio[3];
	uv_file fds[2];
	int r;

	job->proc_exited = false;
	job->out_closing = false;
	job->spawn_error = 0;
	job->exit_status = 0;
	job->term_signal = 0;
	job->line_len = 0;
	job->tail_len = 0;
	job->tail_lines = 0;

	r = uv_pipe(fds, 0, 0);
	if (r < 0)
		return r;
	r = uv_pipe_init(job->loop, &job->out, 0);
	if (r < 0) {
		(void)close(fds[0]);
		(void)close(fds[1]);
		return r;
	}
	job->out.data = job;
	job->open_handles++;
	r = uv_pipe_open(&job->out, fds[0]);
	if (r < 0) {
		(void)close(fds[0]);
		(void)close(fds[1]);
		job->running = true;
		job->spawn_error = r;
		out_close(job);
		return 0;
	}

	stdio[0].flags = UV_IGNORE; /* libuv opens /dev/null for it */
	if (quiet_stdout) {
		stdio[1].flags = UV_IGNORE;
	} else {
		stdio[1].flags = UV_INHERIT_FD;
		stdio[1].data.fd = fds[1];
	}
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = fds[1];

	opts.exit_cb = exit_cb;
	opts.file = argv[0];
	opts.args = argv;
	opts.env = job->env;
	opts.cwd = cwd;
	opts.stdio = stdio;
	opts.stdio_count = 3;
	/* UV_PROCESS_DETACHED is libuv's only way to have the child call setsid(): it leads a
	 * process group of its own, which verify_cancel() can kill as a whole. The handle stays
	 * referenced and watched; nothing is left to run on its own. */
	opts.flags = UV_PROCESS_DETACHED;

	job->running = true;
	job->proc.data = job;
	log_debug("verify: running %s %s in '%s'", argv[0], argv[1] && argv[2] ? argv[2] : "",
		  cwd ? cwd : ".");
	r = uv_spawn(job->loop, &job->proc, &opts);
	(void)close(fds[1]);
	/* the process handle is initialised even when uv_spawn fails and must be closed */
	job->open_handles++;
	if (r < 0) {
		job->spawn_error = r;
		job->proc_exited = true;
		uv_close((uv_handle_t *)&job->proc, handle_close_cb);
		out_close(job);
		return 0;
	}
	job->ran = true;
	job->pgid = job->proc.pid;
	r = uv_read_start((uv_stream_t *)&job->out, alloc_cb, read_cb);
	if (r < 0)
		out_close(job);
	return 0;
}

/* Starts the next step, or finishes when there is none. */
static void step_next(struct verify_job *job)
{
	char *argv[4];
	int r;

	if (job->cancelled)
		return job_finish(job, false, "%s cancelled", verify_level_to_string(job->level));

	switch (job->level) {
	case VERIFY_NONE:
		return job_finish(job, true, "not verified (level none)");
	case VERIFY_PARSE:
		if (job->next_file >= job->n_files)
			return job_finish(job, true, "%zu file%s parsed", job->n_files,
					  job->n_files == 1 ? "" : "s");
		argv[0] = job->program;
		argv[1] = (char *)"--parse";
		argv[2] = job->files[job->next_file];
		argv[3] = NULL;
		/* stdout is the parsed expression echoed back: only the diagnostics matter. The
		 * paths are absolute, and no cwd means ENOENT can only be the missing program. */
		r = step_spawn(job, argv, NULL, true);
		break;
	case VERIFY_EVAL:
	case VERIFY_BUILD:
		if (job->eval_done)
			return job_finish(job, true, "%s succeeded", verify_level_to_string(job->level));
		if (!job->command)
			return job_finish(job, false, "no %s command is configured",
					  verify_level_to_string(job->level));
		argv[0] = (char *)"/bin/sh";
		argv[1] = (char *)"-c";
		argv[2] = job->command;
		argv[3] = NULL;
		r = step_spawn(job, argv, job->cwd, false);
		break;
	default:
		return job_finish(job, false, "unknown verify level %d", (int)job->level);
	}
	if (r < 0 && job->open_handles == 0)
		return job_finish(job, false, "cannot start %s: %s",
				  verify_level_to_string(job->level), uv_strerror(r));
}

static void timer_cb(uv_timer_t *t)
{
	struct verify_job *job = t->data;
	enum timer_mode mode = job->timer_mode;

	job->timer_mode = TIMER_IDLE;
	switch (mode) {
	case TIMER_STEP:
		step_next(job);
		break;
	case TIMER_KILL:
		if (job->running)
			group_kill(job, SIGKILL);
		break;
	case TIMER_DRAIN:
		/* the command is done; whatever it left behind in its group goes */
		if (job->running) {
			group_kill(job, SIGKILL);
			out_close(job);
		}
		break;
	case TIMER_IDLE:
		break;
	}
}

static void timer_arm(struct verify_job *job, enum timer_mode mode, uint64_t ms)
{
	job->timer_mode = mode;
	if (mode == TIMER_IDLE)
		(void)uv_timer_stop(&job->timer);
	else
		(void)uv_timer_start(&job->timer, timer_cb, ms, 0);
}

static int dup_or_null(const char *s, char **ret)
{
	if (!s) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

int verify_start(uv_loop_t *loop, const struct verify_req *req, verify_done_fn done,
		 verify_line_fn line, void *userdata, struct verify_job **ret_job)
{
	struct verify_job *job = NULL;
	const char *cmd = NULL;
	int r;

	if (!loop || !req || !done || (size_t)req->level >= WS_ARRAY_SIZE(level_names))
		return -EINVAL;
	if (req->n_files > 0 && !req->files)
		return -EINVAL;

	job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	job->loop = loop;
	job->level = req->level;
	job->done = done;
	job->line = line;
	job->userdata = userdata;

	if (req->level == VERIFY_EVAL)
		cmd = req->eval_command;
	else if (req->level == VERIFY_BUILD)
		cmd = req->build_command;
	r = dup_or_null(req->cwd, &job->cwd);
	if (r >= 0)
		r = dup_or_null(cmd, &job->command);
	if (r >= 0)
		r = dup_or_null(req->nix_instantiate ? req->nix_instantiate : "nix-instantiate",
				&job->program);
	if (r >= 0)
		r = env_build(&job->env);
	if (r >= 0 && req->level == VERIFY_PARSE) {
		job->files = calloc(req->n_files + 1, sizeof(*job->files));
		if (!job->files)
			r = -ENOMEM;
		for (size_t i = 0; r >= 0 && i < req->n_files; i++) {
			r = dup_or_null(req->files[i], &job->files[i]);
			if (r >= 0 && !job->files[i])
				r = -EINVAL;
			job->n_files = i + 1;
		}
	}
	if (r < 0) {
		job_free(job);
		return r;
	}

	r = uv_timer_init(loop, &job->timer);
	if (r < 0) {
		job_free(job);
		return r;
	}
	job->timer.data = job;
	/* the first step runs from the loop, so that done is never called from here */
	timer_arm(job, TIMER_STEP, 0);
	*ret_job = job;
	return 0;
}

void verify_cancel(struct verify_job *job)
{
	if (!job || job->finished || job->cancelled)
		return;
	job->cancelled = true;
	if (!job->running)
		return; /* the pending step (or completion) sees the flag */
	if (!job->proc_exited) {
		group_kill(job, SIGTERM);
		timer_arm(job, TIMER_KILL, VERIFY_KILL_GRACE_MS);
	} else if (!job->out_closing) {
		group_kill(job, SIGKILL);
		out_close(job);
	}
}
