/* SPDX-License-Identifier: MIT */
/* wsbench: measures the real workspaced and wsctl binaries against baselines taken in the
 * same run (a raw echo server, a trivial C program, the I/O floor of one atomic write plus
 * one index write, nix-instantiate) and prints one table: value, baseline, ratio, target.
 * It is never pass/fail and never part of ctest; its exit status only says whether it
 * could run. Everything it creates lives under one scratch directory that it removes. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <git2.h>
#include <json-c/json.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchlib.h"
#include "nix_tree.h"
#include "ws_proto.h"

#ifndef WSBENCH_BUILD_TYPE
#define WSBENCH_BUILD_TYPE "unknown"
#endif

#define MACHINE "bench"
#define MACHINE_REL "machines/" MACHINE "/default.nix"
#define VARIANT_PREFIX "# wsbench machine file, variant "
#define START_TIMEOUT_MS 15000
#define EVENT_TIMEOUT_MS 10000
#define MAX_ROWS 40
#define MAX_NOTES 40

enum row_kind {
	ROW_RATIO_MAX,   /* value / baseline must stay <= target */
	ROW_SPEEDUP_MIN, /* baseline / value must reach >= target */
	ROW_ABS_MAX,     /* value itself must stay <= target (same unit as value) */
	ROW_INFO,        /* no target; ratio value / baseline */
	ROW_SPEEDUP_INFO,/* no target; ratio baseline / value */
};

enum row_unit { UNIT_NS, UNIT_KIB };

struct row {
	char *name;             /* owned; includes what the baseline is */
	enum row_kind kind;
	enum row_unit unit;
	double value, base;     /* base < 0: no baseline */
	double target;
	char *skipped;          /* owned; why the row has no value, or NULL */
};

struct bench {
	const char *daemon, *wsctl, *trivial, *nix; /* binaries; nix NULL when missing */
	char *root;             /* owned: the scratch directory */
	char *config;           /* owned: the daemon's config file */
	bool quick;
	struct row rows[MAX_ROWS];
	size_t n_rows;
	char *notes[MAX_NOTES]; /* owned */
	size_t n_notes;
};

struct daemon {
	pid_t pid;
	char *socket;           /* owned */
	char *log;              /* owned */
};

static int fail(int r, const char *fmt, ...) WS_PRINTF(2, 3);
static int fail(int r, const char *fmt, ...)
{
	va_list ap;

	fputs("wsbench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (r < 0)
		fprintf(stderr, ": %s", strerror(-r));
	fputc('\n', stderr);
	return r < 0 ? r : -EIO;
}

static void note(struct bench *b, const char *fmt, ...) WS_PRINTF(2, 3);
static void note(struct bench *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (b->n_notes == MAX_NOTES)
		return;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) >= 0)
		b->notes[b->n_notes++] = s;
	va_end(ap);
}

static struct row *add_row(struct bench *b, enum row_kind kind, enum row_unit unit, double value,
			   double base, double target, const char *fmt, ...) WS_PRINTF(7, 8);
static struct row *add_row(struct bench *b, enum row_kind kind, enum row_unit unit, double value,
			   double base, double target, const char *fmt, ...)
{
	struct row *rw;
	va_list ap;

	if (b->n_rows == MAX_ROWS)
		return NULL;
	rw = &b->rows[b->n_rows++];
	*rw = (struct row){.kind = kind, .unit = unit, .value = value, .base = base,
			   .target = target};
	va_start(ap, fmt);
	if (vasprintf(&rw->name, fmt, ap) < 0)
		rw->name = NULL;
	va_end(ap);
	return rw;
}

static void skip_row(struct bench *b, enum row_kind kind, double target, const char *why,
		     const char *name)
{
	struct row *rw = add_row(b, kind, UNIT_NS, 0, -1, target, "%s", name);

	if (rw)
		rw->skipped = strdup(why);
}

/* ---- generated repositories ---- */

/* A machine file declaring @n vm workspaces PREFIX0..PREFIX(n-1), in the nested block
 * layout, addresses counting up from 10.0.0.10. Malloc'd. */
static char *gen_machine(size_t n, const char *prefix, size_t *ret_len)
{
	size_t cap = 256 + n * 128, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return NULL;
	len += (size_t)snprintf(buf + len, cap - len,
				VARIANT_PREFIX "0\n"
				"{ config, lib, pkgs, ... }:\n"
				"\n"
				"{\n"
				"  networking.hostName = \"" MACHINE "\";\n"
				"\n"
				"  sandboxed-workspace = {\n"
				"    enable = true;\n");
	for (size_t i = 0; i < n; i++) {
		uint32_t ip = (10u << 24) + 10 + (uint32_t)i;

		len += (size_t)snprintf(buf + len, cap - len,
					"    workspaces.%s%zu = {\n"
					"      type = \"vm\";\n"
					"      config = ./workspaces/%s%zu.nix;\n"
					"      ip = \"%u.%u.%u.%u\";\n"
					"    };\n",
					prefix, i, prefix, i, ip >> 24, ip >> 16 & 255, ip >> 8 & 255,
					ip & 255);
	}
	len += (size_t)snprintf(buf + len, cap - len, "  };\n}\n");
	*ret_len = len;
	return buf;
}

static int git_cli(const char *repo, const char *const *args)
{
	const char *argv[24];
	size_t n = 0;
	uint64_t ns;
	int r, st;

	argv[n++] = "git";
	argv[n++] = "-C";
	argv[n++] = repo;
	argv[n++] = "-c";
	argv[n++] = "user.name=wsbench";
	argv[n++] = "-c";
	argv[n++] = "user.email=wsbench@example.invalid";
	argv[n++] = "-c";
	argv[n++] = "commit.gpgsign=false";
	for (; *args && n < WS_ARRAY_SIZE(argv) - 1; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	r = bl_run(argv, true, &ns, &st);
	if (r < 0)
		return fail(r, "cannot run git");
	if (st != 0)
		return fail(-EIO, "git %s in '%s' exited with %d", argv[9], repo, st);
	return 0;
}

/* A flake repository at @dir: flake.nix, machines/bench/default.nix with @n entries and
 * their workspace files, all committed with the git CLI. */
static int make_repo(const char *dir, size_t n, const char *prefix)
{
	static const char *const init[] = {"init", "-q", "-b", "main", NULL};
	static const char *const add[] = {"add", "-A", NULL};
	static const char *const commit[] = {"commit", "-q", "-m", "wsbench: initial", NULL};
	static const char ws_text[] = "{ ... }:\n{\n}\n";
	WS_AUTOFREE char *wsdir = bl_strf("%s/machines/" MACHINE "/workspaces", dir);
	WS_AUTOFREE char *flake = bl_strf("%s/flake.nix", dir);
	WS_AUTOFREE char *machine = bl_strf("%s/" MACHINE_REL, dir);
	WS_AUTOFREE char *text = NULL;
	size_t len;
	int r;

	r = bl_mkdirs(wsdir, 0755);
	if (r < 0)
		return fail(r, "cannot create '%s'", wsdir);
	r = bl_write_file(flake, "{ outputs = { self }: { }; }\n", 29);
	if (r < 0)
		return fail(r, "cannot write '%s'", flake);
	text = gen_machine(n, prefix, &len);
	if (!text)
		return fail(-ENOMEM, "cannot generate a machine file");
	r = bl_write_file(machine, text, len);
	if (r < 0)
		return fail(r, "cannot write '%s'", machine);
	for (size_t i = 0; i < n; i++) {
		WS_AUTOFREE char *p = bl_strf("%s/%s%zu.nix", wsdir, prefix, i);

		r = bl_write_file(p, ws_text, sizeof(ws_text) - 1);
		if (r < 0)
			return fail(r, "cannot write '%s'", p);
	}
	r = git_cli(dir, init);
	if (r < 0)
		return r;
	r = git_cli(dir, add);
	if (r < 0)
		return r;
	return git_cli(dir, commit);
}

/* True when the blob staged for @rel in @repo's index contains @needle. */
static int index_blob_contains(const char *repo, const char *rel, const char *needle)
{
	git_repository *g = NULL;
	git_index *idx = NULL;
	git_blob *blob = NULL;
	const git_index_entry *e;
	int r = 0;

	if (git_repository_open(&g, repo) < 0 || git_repository_index(&idx, g) < 0) {
		r = fail(-EIO, "cannot open the index of '%s'", repo);
		goto out;
	}
	e = git_index_get_bypath(idx, rel, 0);
	if (!e || git_blob_lookup(&blob, g, &e->id) < 0) {
		r = fail(-ENOENT, "'%s' is not in the index of '%s'", rel, repo);
		goto out;
	}
	r = memmem(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob), needle,
		   strlen(needle)) != NULL;
out:
	git_blob_free(blob);
	git_index_free(idx);
	git_repository_free(g);
	return r;
}

/* ---- the I/O floor ---- */

/* What any correct implementation of a repository edit must pay: @len bytes written to
 * @rel atomically (temporary in the same directory, write, fsync, rename, fsync of the
 * directory) and that one path staged (git_index_read, add_bypath, index write). @buf's
 * first line is the variant marker, flipped every time so that each write is a change. */
struct floor {
	git_repository *g;
	git_index *idx;
	char *path, *dir, *tmpl;
	int n;
};

static void floor_close(struct floor *f)
{
	git_index_free(f->idx);
	git_repository_free(f->g);
	free(f->path);
	free(f->dir);
	free(f->tmpl);
	*f = (struct floor){0};
}

static int floor_open(struct floor *f, const char *repo)
{
	*f = (struct floor){0};
	f->path = bl_strf("%s/" MACHINE_REL, repo);
	f->dir = bl_strf("%s/machines/" MACHINE, repo);
	f->tmpl = bl_strf("%s/.default.nix.XXXXXX", f->dir);
	if (git_repository_open(&f->g, repo) < 0 || git_repository_index(&f->idx, f->g) < 0) {
		int r = fail(-EIO, "floor: cannot open '%s': %s", repo,
			     git_error_last() ? git_error_last()->message : "?");

		floor_close(f);
		return r;
	}
	return 0;
}

/* One write of the floor; its time goes to @s. */
static int floor_step(struct floor *f, char *buf, size_t len, struct bl_samples *s)
{
	size_t voff = sizeof(VARIANT_PREFIX) - 1;
	char tmp[PATH_MAX];
	uint64_t t0;
	int fd, dfd, r;

	if (len <= voff || strncmp(buf, VARIANT_PREFIX, voff) != 0)
		return fail(-EINVAL, "floor: the content has no variant line");
	buf[voff] = (char)('1' + f->n++ % 2);
	snprintf(tmp, sizeof(tmp), "%s", f->tmpl);
	t0 = bl_now_ns();
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return fail(-errno, "floor: cannot create a temporary in '%s'", f->dir);
	if (write(fd, buf, len) != (ssize_t)len || fsync(fd) < 0 || close(fd) < 0 ||
	    rename(tmp, f->path) < 0) {
		r = fail(-errno, "floor: cannot replace '%s'", f->path);
		(void)unlink(tmp);
		return r;
	}
	dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		r = fail(-errno, "floor: cannot sync '%s'", f->dir);
		if (dfd >= 0)
			(void)close(dfd);
		return r;
	}
	(void)close(dfd);
	if (git_index_read(f->idx, 0) < 0 || git_index_add_bypath(f->idx, MACHINE_REL) < 0 ||
	    git_index_write(f->idx) < 0)
		return fail(-EIO, "floor: cannot stage: %s",
			    git_error_last() ? git_error_last()->message : "?");
	return bl_samples_add(s, bl_now_ns() - t0);
}

static int measure_floor(const char *repo, char *buf, size_t len, int iters,
			 struct bl_samples *s)
{
	struct floor f;
	int r = floor_open(&f, repo);

	for (int i = 0; r >= 0 && i < iters; i++)
		r = floor_step(&f, buf, len, s);
	floor_close(&f);
	return r;
}

/* ---- the daemon ---- */

static int daemon_start(struct bench *b, const char *repo, const char *tag, struct daemon *d)
{
	WS_AUTOFREE char *state = bl_strf("%s/%s-state", b->root, tag);
	WS_AUTOFREE char *sandbox = bl_strf("%s/%s-sandboxed", b->root, tag);
	uint64_t end;
	pid_t pid;
	int r;

	*d = (struct daemon){.pid = -1};
	d->socket = bl_strf("%s/run/%s.sock", b->root, tag);
	d->log = bl_strf("%s/%s-daemon.log", b->root, tag);
	r = bl_mkdirs(sandbox, 0755);
	if (r < 0)
		return fail(r, "cannot create '%s'", sandbox);
	pid = fork();
	if (pid < 0)
		return fail(-errno, "fork");
	if (pid == 0) {
		const char *argv[] = {b->daemon, "--repo", repo, "--machine", MACHINE,
				      "--socket", d->socket, "--state-dir", state,
				      "--sandbox-root", sandbox, "--verify", "none",
				      "--config", b->config, "-q", NULL};
		int lfd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

		bl_child_signals();
		if (lfd >= 0) {
			(void)dup2(lfd, STDOUT_FILENO);
			(void)dup2(lfd, STDERR_FILENO);
		}
		if (null >= 0)
			(void)dup2(null, STDIN_FILENO);
		(void)bl_exec(argv);
		_exit(127);
	}
	bl_track_child(pid);
	d->pid = pid;
	end = bl_now_ns() + (uint64_t)START_TIMEOUT_MS * 1000000u;
	for (;;) {
		struct bl_conn c;
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid) {
			WS_AUTOFREE char *log = NULL;
			size_t len;

			bl_untrack_child(pid);
			d->pid = -1;
			if (bl_read_file(d->log, &log, &len) == 0)
				fprintf(stderr, "%s", log);
			return fail(-ECHILD, "workspaced exited during start-up (status %d)",
				    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		}
		if (bl_conn_open(d->socket, &c) == 0) {
			bl_conn_close(&c);
			return 0;
		}
		if (bl_now_ns() > end)
			return fail(-ETIMEDOUT, "workspaced did not listen on '%s'", d->socket);
		(void)usleep(2000);
	}
}

static void daemon_stop(struct daemon *d)
{
	if (d->pid > 0) {
		int st = bl_stop_child(d->pid, 10000);

		if (st != 0)
			fprintf(stderr, "wsbench: workspaced exited with status %d (log: %s)\n", st,
				d->log);
	}
	free(d->socket);
	free(d->log);
	*d = (struct daemon){.pid = -1};
}

/* Sends @req (one line, with '\n') and returns the first reply that is not a notification. */
static int rpc_call(struct bl_conn *c, const char *req, int timeout_ms, char **ret_line,
		    size_t *ret_len)
{
	int r;

	r = bl_conn_send(c, req, strlen(req));
	if (r < 0)
		return r;
	for (;;) {
		r = bl_conn_line(c, timeout_ms, ret_line, ret_len);
		if (r < 0)
			return r;
		if (!strstr(*ret_line, "\"method\""))
			return 0;
	}
}

/* ---- 1. JSON-RPC round trip next to an echo server ---- */

/* The echo server (a forked child): every line it receives is answered at once with a
 * line of @reply_len bytes, the size of the daemon's answer. Blocking reads and writes,
 * no parsing: the least a request/response over this socket can cost. */
static void echo_serve(int lfd, size_t reply_len)
{
	static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"";
	char *reply = malloc(reply_len + 1);
	char in[65536];

	if (!reply || reply_len < sizeof(head) + 2)
		_exit(1);
	memset(reply, 'x', reply_len);
	memcpy(reply, head, sizeof(head) - 1);
	memcpy(reply + reply_len - 2, "\"}", 2);
	reply[reply_len] = '\n';
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		ssize_t n;

		if (fd < 0)
			continue;
		while ((n = read(fd, in, sizeof(in))) > 0) {
			for (ssize_t i = 0; i < n; i++) {
				if (in[i] == '\n' && write(fd, reply, reply_len + 1) < 0)
					break;
			}
		}
		(void)close(fd);
	}
}

static int echo_start(const char *path, size_t reply_len, pid_t *ret_pid)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	pid_t pid;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(-errno, "socket");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
		int r = -errno;

		(void)close(fd);
		return fail(r, "cannot listen on '%s'", path);
	}
	pid = fork();
	if (pid < 0) {
		int r = -errno;

		(void)close(fd);
		return fail(r, "fork");
	}
	if (pid == 0) {
		bl_child_signals();
		echo_serve(fd, reply_len);
	}
	(void)close(fd);
	bl_track_child(pid);
	*ret_pid = pid;
	return 0;
}

static int measure_rtt(struct bl_conn *c, int n, struct bl_samples *s)
{
	static int id;

	for (int i = 0; i < n; i++) {
		char req[128], *line;
		size_t len;
		uint64_t t0;
		int r;

		snprintf(req, sizeof(req), "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"daemon.info\"}\n",
			 ++id);
		t0 = bl_now_ns();
		r = rpc_call(c, req, 5000, &line, &len);
		if (r < 0)
			return fail(r, "round trip");
		if (!strstr(line, "\"result\""))
			return fail(-EPROTO, "unexpected reply: %s", line);
		if (s) {
			r = bl_samples_add(s, bl_now_ns() - t0);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int bench_rpc(struct bench *b, const struct daemon *d)
{
	WS_AUTOFREE char *echo_path = bl_strf("%s/run/echo.sock", b->root);
	struct bl_samples sd = {0}, se = {0};
	struct bl_conn cd = {.fd = -1}, ce = {.fd = -1};
	int rounds = b->quick ? 2 : 5, per = 1000;
	pid_t echo = -1;
	char *line;
	size_t len;
	int r;

	r = bl_conn_open(d->socket, &cd);
	if (r < 0) {
		r = fail(r, "cannot connect to '%s'", d->socket);
		goto out;
	}
	r = rpc_call(&cd, "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"daemon.info\"}\n", 5000,
		     &line, &len);
	if (r < 0) {
		r = fail(r, "daemon.info");
		goto out;
	}
	r = echo_start(echo_path, len, &echo);
	if (r < 0)
		goto out;
	r = bl_conn_open(echo_path, &ce);
	if (r < 0) {
		r = fail(r, "cannot connect to the echo server");
		goto out;
	}
	/* warm up both, then alternate blocks so that drift hits both sides alike */
	r = measure_rtt(&ce, 200, NULL);
	if (r >= 0)
		r = measure_rtt(&cd, 200, NULL);
	for (int i = 0; r >= 0 && i < rounds; i++) {
		r = measure_rtt(&ce, per, &se);
		if (r >= 0)
			r = measure_rtt(&cd, per, &sd);
	}
	if (r < 0)
		goto out;
	add_row(b, ROW_RATIO_MAX, UNIT_NS, (double)bl_median(&sd), (double)bl_median(&se), 1.5,
		"daemon.info round trip, median (echo)");
	add_row(b, ROW_RATIO_MAX, UNIT_NS, (double)bl_p99(&sd), (double)bl_p99(&se), 1.5,
		"daemon.info round trip, p99 (echo)");
	note(b, "1: %zu sequential requests on one connection to each; replies of %zu bytes on "
		"both sides.", sd.n, len + 1);
out:
	bl_conn_close(&cd);
	bl_conn_close(&ce);
	if (echo > 0)
		(void)bl_stop_child(echo, 1000);
	(void)unlink(echo_path);
	bl_samples_clear(&sd);
	bl_samples_clear(&se);
	return r;
}

/* ---- 2. wsctl list as a process next to a trivial program ---- */

static int bench_wsctl(struct bench *b, const struct daemon *d)
{
	const char *wsctl_argv[] = {b->wsctl, "--socket", d->socket, "list", NULL};
	const char *triv_argv[] = {b->trivial, NULL};
	struct bl_samples sw = {0}, st = {0};
	int runs = b->quick ? 20 : 50, r = 0;

	for (int i = -3; i < runs; i++) {
		uint64_t ns;
		int status;

		r = bl_run(wsctl_argv, true, &ns, &status);
		if (r < 0 || status != 0) {
			r = fail(r < 0 ? r : -EIO, "'%s list' failed (status %d)", b->wsctl,
				 r < 0 ? -1 : status);
			goto out;
		}
		if (i >= 0 && (r = bl_samples_add(&sw, ns)) < 0)
			goto out;
		r = bl_run(triv_argv, true, &ns, &status);
		if (r < 0 || status != 0) {
			r = fail(r < 0 ? r : -EIO, "'%s' failed", b->trivial);
			goto out;
		}
		if (i >= 0 && (r = bl_samples_add(&st, ns)) < 0)
			goto out;
	}
	add_row(b, ROW_RATIO_MAX, UNIT_NS, (double)bl_median(&sw), (double)bl_median(&st), 1.5,
		"wsctl list process, median (trivial.c)");
	note(b, "2: fork/exec/wait, median of %d runs each, output to /dev/null; the daemon "
		"declares 10 workspaces.", runs);
out:
	bl_samples_clear(&sw);
	bl_samples_clear(&st);
	return r;
}

/* ---- 4. idle RSS ---- */

/* VmRSS of trivial.c while it waits: the floor of any C process. */
static long trivial_rss(const struct bench *b)
{
	int in[2], out[2];
	char buf[64];
	long kib;
	pid_t pid;
	int st;

	if (pipe2(in, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(out, O_CLOEXEC) < 0) {
		(void)close(in[0]);
		(void)close(in[1]);
		return -errno;
	}
	pid = fork();
	if (pid == 0) {
		bl_child_signals();
		(void)dup2(in[0], STDIN_FILENO);
		(void)dup2(out[1], STDOUT_FILENO);
		const char *argv[] = {b->trivial, "wait", NULL};

		(void)bl_exec(argv);
		_exit(127);
	}
	(void)close(in[0]);
	(void)close(out[1]);
	if (pid < 0) {
		(void)close(in[1]);
		(void)close(out[0]);
		return -EAGAIN;
	}
	/* its line says it is up and about to wait */
	kib = read(out[0], buf, sizeof(buf)) > 0 ? bl_rss_kib(pid) : -EIO;
	(void)close(in[1]);
	(void)close(out[0]);
	(void)waitpid(pid, &st, 0);
	return kib;
}

static int bench_rss(struct bench *b, const struct daemon *d)
{
	struct bl_conn c;
	char *line;
	size_t len;
	long kib, base;
	int r;

	r = bl_conn_open(d->socket, &c);
	if (r < 0)
		return fail(r, "cannot connect to '%s'", d->socket);
	for (int i = 0; i < 10 && r >= 0; i++)
		r = rpc_call(&c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.info\"}\n", 5000,
			     &line, &len);
	if (r >= 0)
		r = rpc_call(&c, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"workspace.list\"}\n",
			     5000, &line, &len);
	bl_conn_close(&c);
	if (r < 0)
		return fail(r, "requests before the RSS reading");
	(void)usleep(100000);
	kib = bl_rss_kib(d->pid);
	if (kib < 0)
		return fail((int)kib, "cannot read VmRSS of %d", (int)d->pid);
	base = trivial_rss(b);
	add_row(b, ROW_ABS_MAX, UNIT_KIB, (double)kib, base > 0 ? (double)base : -1, 12 * 1024,
		"workspaced idle RSS (trivial.c waiting)");
	return 0;
}

/* ---- 3. workspace.create next to the I/O floor ---- */

#define QUIET_MS 50

/* One workspace.create of c@name_no (verify none) with request id @id; its round trip in
 * *ret_ns. The reply must say the files were staged. */
static int create_one(struct bl_conn *c, size_t n, int id, int name_no, uint64_t *ret_ns)
{
	WS_AUTOFREE char *req = bl_strf(
		"{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"workspace.create\",\"params\":"
		"{\"name\":\"c%d\",\"type\":\"vm\",\"verify\":\"none\"}}\n",
		id, name_no);
	struct json_object *reply, *res, *staged;
	uint64_t t0 = bl_now_ns();
	size_t len;
	char *line;
	bool ok;
	int r;

	r = rpc_call(c, req, 60000, &line, &len);
	if (r < 0)
		return fail(r, "workspace.create on %zu entries", n);
	*ret_ns = bl_now_ns() - t0;
	reply = json_tokener_parse(line);
	ok = reply && json_object_object_get_ex(reply, "result", &res) &&
	     json_object_object_get_ex(res, "staged", &staged) && json_object_get_boolean(staged);
	json_object_put(reply);
	if (!ok)
		return fail(-EPROTO, "workspace.create on %zu entries: %s", n, line);
	return 0;
}

static int bench_create(struct bench *b, size_t n)
{
	WS_AUTOFREE char *tag = bl_strf("create%zu", n);
	WS_AUTOFREE char *repo = bl_strf("%s/%s/flake", b->root, tag);
	WS_AUTOFREE char *floor_repo = bl_strf("%s/%s/floor", b->root, tag);
	WS_AUTOFREE char *machine = bl_strf("%s/" MACHINE_REL, repo);
	WS_AUTOFREE char *text = NULL;
	struct bl_samples sc = {0}, sf = {0}, sb = {0};
	struct bl_conn c = {.fd = -1};
	struct daemon d = {.pid = -1};
	struct floor fl = {0};
	int creates = b->quick ? 10 : 30, r;
	int64_t cpu0 = -1, cpu1 = -1;
	long rss = -1;
	size_t len;

	r = make_repo(repo, n, "w");
	if (r >= 0)
		r = make_repo(floor_repo, n, "w");
	if (r < 0)
		goto out;
	r = floor_open(&fl, floor_repo);
	if (r < 0)
		goto out;
	r = daemon_start(b, repo, tag, &d);
	if (r < 0)
		goto out;
	r = bl_conn_open(d.socket, &c);
	if (r < 0) {
		r = fail(r, "cannot connect to '%s'", d.socket);
		goto out;
	}
	/* two warm-up creates, then the measured ones, each next to a floor write; every
	 * name is new. Each create and each floor write starts on a quiet machine (QUIET_MS
	 * after the step before): the latency of one request, where the work a step leaves
	 * behind (the daemon's after its reply, the disk's after a sync) does not fall on the
	 * other's clock. */
	for (int i = -2; i < creates; i++) {
		uint64_t ns;

		if (i >= 0)
			(void)usleep(QUIET_MS * 1000);
		r = create_one(&c, n, i + 10, i + 2, &ns);
		if (r < 0)
			goto out;
		if (i == -1)
			cpu0 = bl_cpu_ns(d.pid);
		if (i < 0)
			continue;
		r = bl_samples_add(&sc, ns);
		if (r < 0)
			goto out;
		/* the floor writes the file as the daemon left it: the same size */
		free(text);
		text = NULL;
		r = bl_read_file(machine, &text, &len);
		if (r < 0) {
			r = fail(r, "cannot read '%s'", machine);
			goto out;
		}
		(void)usleep(QUIET_MS * 1000);
		r = floor_step(&fl, text, len, &sf);
		if (r < 0)
			goto out;
	}
	cpu1 = bl_cpu_ns(d.pid);
	/* and as many back to back, the next sent as soon as the reply is in */
	for (int i = 0; i < creates; i++) {
		uint64_t ns;

		r = create_one(&c, n, creates + i + 10, creates + i + 2, &ns);
		if (r < 0)
			goto out;
		r = bl_samples_add(&sb, ns);
		if (r < 0)
			goto out;
	}
	rss = bl_rss_kib(d.pid);
	bl_conn_close(&c);
	daemon_stop(&d);
	/* the last create really is in the index */
	{
		WS_AUTOFREE char *needle = bl_strf("workspaces.c%d", 2 * creates + 1);

		r = index_blob_contains(repo, MACHINE_REL, needle);
		if (r < 0)
			goto out;
		if (r == 0) {
			r = fail(-EIO, "the staged %s does not declare c%d", MACHINE_REL,
				 2 * creates + 1);
			goto out;
		}
	}
	add_row(b, n == 1000 ? ROW_RATIO_MAX : ROW_INFO, UNIT_NS, (double)bl_median(&sc),
		(double)bl_median(&sf), 1.3, "workspace.create, %zu entries, median (floor)", n);
	if (cpu0 >= 0 && cpu1 >= cpu0)
		add_row(b, ROW_INFO, UNIT_NS, (double)(cpu1 - cpu0) / creates, -1, 0,
			"  daemon CPU per create, %zu entries (mean)", n);
	add_row(b, ROW_INFO, UNIT_NS, (double)bl_median(&sb), (double)bl_median(&sf), 0,
		"  back to back, %zu entries, median (floor)", n);
	if (n == 1000 && rss > 0)
		add_row(b, ROW_INFO, UNIT_KIB, (double)rss, -1, 0,
			"workspaced RSS after creates on %zu", n);
	if (n == 1000)
		note(b, "3: median of %d creates (verify none), each a new name; floor: one atomic "
			"write of a %zu-byte file + one index write in a repository of the same "
			"size, one after each create (the file as the daemon left it); each starts "
			"%d ms after the step before. Back to back: %d more creates, each sent as "
			"soon as the reply before is in (no floor writes between).", creates, len,
		     QUIET_MS, creates);
	r = 0;
out:
	bl_conn_close(&c);
	daemon_stop(&d);
	floor_close(&fl);
	bl_samples_clear(&sc);
	bl_samples_clear(&sf);
	bl_samples_clear(&sb);
	return r;
}

/* ---- 5. parse throughput next to nix-instantiate --parse ---- */

static int nix_median(const struct bench *b, const char *file, int runs, bool must_pass,
		      uint64_t *ret_ns)
{
	const char *argv[] = {b->nix, "--parse", file, NULL};
	struct bl_samples s = {0};
	int r = 0;

	for (int i = 0; i < runs; i++) {
		uint64_t ns;
		int st;

		r = bl_run(argv, true, &ns, &st);
		if (r < 0 || (must_pass && st != 0)) {
			r = fail(r < 0 ? r : -EIO, "nix-instantiate --parse '%s' failed", file);
			break;
		}
		r = bl_samples_add(&s, ns);
		if (r < 0)
			break;
	}
	if (r >= 0)
		*ret_ns = bl_median(&s);
	bl_samples_clear(&s);
	return r;
}

static int ours_median(const char *text, size_t len, double budget_s, uint64_t *ret_ns)
{
	struct bl_samples s = {0};
	uint64_t start = bl_now_ns();
	int r = 0;

	while (s.n < 5 || (s.n < 20000 && bl_now_ns() - start < (uint64_t)(budget_s * 1e9))) {
		struct ws_err err = {0};
		struct nix_tree *t = NULL;
		uint64_t t0 = bl_now_ns();

		r = nix_tree_parse(text, len, "bench.nix", &t, &err);
		if (r < 0) {
			r = fail(r, "our parser rejects the generated file: %s", err.message);
			ws_err_clear(&err);
			break;
		}
		nix_tree_free(t);
		r = bl_samples_add(&s, bl_now_ns() - t0);
		if (r < 0)
			break;
	}
	if (r >= 0)
		*ret_ns = bl_median(&s);
	bl_samples_clear(&s);
	return r;
}

static int bench_parse(struct bench *b)
{
	static const size_t sizes[] = {10, 100, 1000, 10000};
	WS_AUTOFREE char *empty = bl_strf("%s/empty.nix", b->root);
	uint64_t ours[4] = {0}, nix[4] = {0}, start = 0;
	size_t bytes[4] = {0};
	int runs = b->quick ? 3 : 9, r;

	if (b->nix) {
		r = bl_write_file(empty, "", 0);
		if (r < 0)
			return fail(r, "cannot write '%s'", empty);
		/* an empty file is a syntax error: start-up plus the least parsing possible */
		r = nix_median(b, empty, runs, false, &start);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < WS_ARRAY_SIZE(sizes); i++) {
		WS_AUTOFREE char *text = NULL;
		WS_AUTOFREE char *file = bl_strf("%s/parse-%zu.nix", b->root, sizes[i]);

		text = gen_machine(sizes[i], "w", &bytes[i]);
		if (!text)
			return fail(-ENOMEM, "cannot generate a machine file");
		r = ours_median(text, bytes[i], b->quick ? 0.1 : 0.4, &ours[i]);
		if (r < 0)
			return r;
		if (!b->nix)
			continue;
		r = bl_write_file(file, text, bytes[i]);
		if (r < 0)
			return fail(r, "cannot write '%s'", file);
		r = nix_median(b, file, runs, true, &nix[i]);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < WS_ARRAY_SIZE(sizes); i++) {
		bool last = i == WS_ARRAY_SIZE(sizes) - 1;
		char name[96];

		snprintf(name, sizeof(name), "parse %zu entries (nix-instantiate%s)", sizes[i],
			 last ? " - start-up" : "");
		if (!b->nix) {
			add_row(b, ROW_INFO, UNIT_NS, (double)ours[i], -1, 0, "%s", name);
			continue;
		}
		if (last)
			add_row(b, ROW_SPEEDUP_MIN, UNIT_NS, (double)ours[i],
				nix[i] > start ? (double)(nix[i] - start) : 0, 10, "%s", name);
		else
			add_row(b, sizes[i] == 1000 ? ROW_SPEEDUP_MIN : ROW_SPEEDUP_INFO, UNIT_NS,
				(double)ours[i], (double)nix[i], 40, "%s", name);
	}
	if (b->nix) {
		add_row(b, ROW_INFO, UNIT_NS, (double)start, -1, 0,
			"nix-instantiate --parse, empty file");
		add_row(b, ROW_INFO, UNIT_NS, (double)nix[3], -1, 0,
			"nix-instantiate --parse, 10000 entries");
	} else {
		note(b, "5: nix-instantiate not found: the nix rows are skipped.");
	}
	note(b, "5: in-process nix_tree_parse (median of repeated parses); the 10000-entry file "
		"is %zu bytes, %.0f MB/s; nix-instantiate: median of %d runs.",
	     bytes[3], ours[3] ? (double)bytes[3] / ((double)ours[3] / 1e9) / 1e6 : 0.0, runs);
	return 0;
}

/* ---- 6. host-key write-back latency ---- */

static void make_key(char *out, size_t size)
{
	unsigned char blob[51];
	char b64[80];

	memcpy(blob, "\0\0\0\x0bssh-ed25519\0\0\0\x20", 19);
	if (getrandom(blob + 19, 32, 0) != 32) {
		for (int i = 0; i < 32; i++)
			blob[19 + i] = (unsigned char)rand();
	}
	bl_base64(blob, sizeof(blob), b64);
	snprintf(out, size, "ssh-ed25519 %s", b64);
}

/* Waits for the event about @name; 1 registered, 0 refused (invalid or mismatch). */
static int wait_hostkey_event(struct bl_conn *c, const char *name)
{
	for (;;) {
		struct json_object *msg, *params, *v;
		const char *type = NULL, *ev_name = NULL;
		char *line;
		size_t len;
		int r;

		r = bl_conn_line(c, EVENT_TIMEOUT_MS, &line, &len);
		if (r < 0)
			return r;
		msg = json_tokener_parse(line);
		if (msg && json_object_object_get_ex(msg, "params", &params)) {
			if (json_object_object_get_ex(params, "type", &v))
				type = json_object_get_string(v);
			if (json_object_object_get_ex(params, "name", &v))
				ev_name = json_object_get_string(v);
		}
		r = -EAGAIN;
		if (type && ev_name && !strcmp(ev_name, name)) {
			if (!strcmp(type, "hostkey.registered"))
				r = 1;
			else if (!strcmp(type, "hostkey.invalid") || !strcmp(type, "hostkey.mismatch"))
				r = 0;
		}
		if (r == 0)
			fprintf(stderr, "wsbench: %s\n", line);
		json_object_put(msg);
		if (r != -EAGAIN)
			return r;
	}
}

static int bench_hostkey(struct bench *b)
{
	WS_AUTOFREE char *repo = bl_strf("%s/hostkey/flake", b->root);
	WS_AUTOFREE char *floor_repo = bl_strf("%s/hostkey/floor", b->root);
	WS_AUTOFREE char *machine = bl_strf("%s/" MACHINE_REL, repo);
	WS_AUTOFREE char *sandbox = bl_strf("%s/hostkey-sandboxed", b->root);
	WS_AUTOFREE char *text = NULL;
	WS_AUTOFREE char(*keys)[128] = NULL;
	struct bl_samples sk = {0}, sf = {0};
	struct bl_conn c = {.fd = -1};
	struct daemon d = {.pid = -1};
	int n = b->quick ? 50 : 200, r;
	int64_t cpu0 = -1, cpu1 = -1;
	char *line;
	size_t len;

	keys = calloc((size_t)n, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	r = make_repo(repo, (size_t)n, "k");
	if (r >= 0)
		r = make_repo(floor_repo, (size_t)n, "k");
	if (r < 0)
		goto out;
	for (int i = 0; i < n; i++) {
		WS_AUTOFREE char *dir = bl_strf("%s/k%d/ssh-host-keys", sandbox, i);

		r = bl_mkdirs(dir, 0755);
		if (r < 0) {
			r = fail(r, "cannot create '%s'", dir);
			goto out;
		}
		make_key(keys[i], sizeof(keys[i]));
	}
	r = daemon_start(b, repo, "hostkey", &d);
	if (r < 0)
		goto out;
	r = bl_conn_open(d.socket, &c);
	if (r >= 0)
		r = rpc_call(&c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.subscribe\"}\n",
			     5000, &line, &len);
	if (r < 0 || !strstr(line, "\"result\"")) {
		r = fail(r < 0 ? r : -EPROTO, "events.subscribe");
		goto out;
	}
	cpu0 = bl_cpu_ns(d.pid);
	for (int i = 0; i < n; i++) {
		WS_AUTOFREE char *path =
			bl_strf("%s/k%d/ssh-host-keys/ssh_host_ed25519_key.pub", sandbox, i);
		WS_AUTOFREE char *content = bl_strf("%s bench@wsbench\n", keys[i]);
		char name[16];
		uint64_t t0;
		int fd;

		snprintf(name, sizeof(name), "k%d", i);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content)) {
			r = fail(-errno, "cannot write '%s'", path);
			if (fd >= 0)
				(void)close(fd);
			goto out;
		}
		t0 = bl_now_ns();
		(void)close(fd);
		r = wait_hostkey_event(&c, name);
		if (r == -ETIMEDOUT) {
			note(b, "6: no hostkey.registered event within %d s of writing the key of "
				"%s: host-key write-back not available in this build.",
			     EVENT_TIMEOUT_MS / 1000, name);
			skip_row(b, ROW_RATIO_MAX, 2, "no event", "host key to index, median (floor)");
			r = 0;
			goto out;
		}
		if (r <= 0) {
			r = fail(r < 0 ? r : -EPROTO, "host key of %s was not registered", name);
			goto out;
		}
		r = bl_samples_add(&sk, bl_now_ns() - t0);
		if (r < 0)
			goto out;
	}
	cpu1 = bl_cpu_ns(d.pid);
	bl_conn_close(&c);
	daemon_stop(&d);
	r = index_blob_contains(repo, MACHINE_REL, keys[n - 1]);
	if (r <= 0) {
		r = fail(r < 0 ? r : -EIO, "the last host key is not staged in %s", MACHINE_REL);
		goto out;
	}
	r = bl_read_file(machine, &text, &len);
	if (r < 0) {
		r = fail(r, "cannot read '%s'", machine);
		goto out;
	}
	r = measure_floor(floor_repo, text, len, b->quick ? 20 : 50, &sf);
	if (r < 0)
		goto out;
	add_row(b, ROW_RATIO_MAX, UNIT_NS, (double)bl_median(&sk), (double)bl_median(&sf), 2,
		"host key to index, median (floor)");
	add_row(b, ROW_INFO, UNIT_NS, (double)bl_p99(&sk), (double)bl_p99(&sf), 0,
		"host key to index, p99 (floor)");
	if (cpu0 >= 0 && cpu1 >= cpu0)
		add_row(b, ROW_INFO, UNIT_NS, (double)(cpu1 - cpu0) / n, -1, 0,
			"  daemon CPU per host key (mean)");
	note(b, "6: %d keys, one at a time, from the writer's close() to the hostkey.registered "
		"event (sent after staging); %d workspaces declared; floor as in 3 on a "
		"%zu-byte file.", n, n, len);
out:
	bl_conn_close(&c);
	daemon_stop(&d);
	bl_samples_clear(&sk);
	bl_samples_clear(&sf);
	return r;
}

/* ---- the table ---- */

static void fmt_value(enum row_unit u, double v, char *buf, size_t size)
{
	if (u == UNIT_KIB)
		snprintf(buf, size, "%.1f MiB", v / 1024);
	else if (v < 1e3)
		snprintf(buf, size, "%.0f ns", v);
	else if (v < 1e6)
		snprintf(buf, size, "%.1f us", v / 1e3);
	else if (v < 1e9)
		snprintf(buf, size, "%.2f ms", v / 1e6);
	else
		snprintf(buf, size, "%.2f s", v / 1e9);
}

static void print_table(const struct bench *b)
{
	printf("\n%-48s %11s %11s %13s %15s  %s\n", "measurement (baseline)", "value", "baseline",
	       "ratio", "target", "met");
	for (size_t i = 0; i < 48 + 12 + 12 + 14 + 16 + 5; i++)
		putchar('-');
	putchar('\n');
	for (size_t i = 0; i < b->n_rows; i++) {
		const struct row *rw = &b->rows[i];
		char val[32] = "-", base[32] = "-", ratio[32] = "-", target[48] = "-";
		const char *met = "-";

		if (rw->skipped) {
			printf("%-48s %11s %11s %13s %15s  %s\n", rw->name ? rw->name : "?",
			       "skipped", "-", "-", "-", rw->skipped);
			continue;
		}
		fmt_value(rw->unit, rw->value, val, sizeof(val));
		if (rw->base >= 0)
			fmt_value(rw->unit, rw->base, base, sizeof(base));
		switch (rw->kind) {
		case ROW_RATIO_MAX:
		case ROW_ABS_MAX:
		case ROW_INFO:
			if (rw->base > 0)
				snprintf(ratio, sizeof(ratio), "%.2fx", rw->value / rw->base);
			break;
		case ROW_SPEEDUP_MIN:
		case ROW_SPEEDUP_INFO:
			if (rw->value > 0 && rw->base > 0)
				snprintf(ratio, sizeof(ratio),
					 rw->base / rw->value < 10 ? "%.1fx faster" : "%.0fx faster",
					 rw->base / rw->value);
			break;
		}
		switch (rw->kind) {
		case ROW_RATIO_MAX:
			snprintf(target, sizeof(target), "<= %.1fx", rw->target);
			met = rw->base > 0 && rw->value / rw->base <= rw->target ? "yes" : "NO";
			break;
		case ROW_SPEEDUP_MIN:
			snprintf(target, sizeof(target), ">= %.0fx faster", rw->target);
			met = rw->value > 0 && rw->base / rw->value >= rw->target ? "yes" : "NO";
			break;
		case ROW_ABS_MAX: {
			char t[32];

			fmt_value(rw->unit, rw->target, t, sizeof(t));
			snprintf(target, sizeof(target), "<= %s", t);
			met = rw->value <= rw->target ? "yes" : "NO";
			break;
		}
		case ROW_INFO:
		case ROW_SPEEDUP_INFO:
			break;
		}
		printf("%-48s %11s %11s %13s %15s  %s\n", rw->name ? rw->name : "?", val, base,
		       ratio, target, met);
	}
	if (b->n_notes)
		putchar('\n');
	for (size_t i = 0; i < b->n_notes; i++)
		printf("note %s\n", b->notes[i]);
}

/* ---- set-up ---- */

/* @name next to this program, or one directory up (bench/ sits under the build dir). */
static char *find_binary(const char *name)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *dir;

	if (n <= 0)
		return NULL;
	self[n] = '\0';
	dir = dirname(self);
	for (int up = 0; up < 2; up++) {
		char *p = bl_strf("%s%s/%s", dir, up ? "/.." : "", name);

		if (access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

static char *find_in_path(const char *name)
{
	const char *path = getenv("PATH");
	WS_AUTOFREE char *copy = strdup(path ? path : "/usr/bin:/bin");
	char *save = NULL;

	if (!copy)
		return NULL;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *p = bl_strf("%s/%s", d, name);

		if (access(p, X_OK) == 0)
			return p;
		free(p);
	}
	return NULL;
}

static int setup_env(struct bench *b)
{
	static const char *const drop[] = {"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
					   "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
					   "WORKSPACED_SOCKET", "GIT_DIR", "GIT_WORK_TREE",
					   "GIT_INDEX_FILE"};
	static const char *const xdg[][2] = {{"XDG_RUNTIME_DIR", "run"},
					      {"XDG_CONFIG_HOME", "config"},
					      {"XDG_STATE_HOME", "state"},
					      {"XDG_CACHE_HOME", "cache"}};
	static const char config[] =
		"# wsbench: a /16 so that thousands of entries fit\n"
		"subnet = 10.0.0.0/16\n"
		"range.vm = 10.0.0.10-10.0.127.254\n"
		"range.container = 10.0.128.10-10.0.191.254\n"
		"range.incus = 10.0.192.10-10.0.254.254\n"
		"log-level = warning\n";
	int r;

	for (size_t i = 0; i < WS_ARRAY_SIZE(drop); i++)
		(void)unsetenv(drop[i]);
	for (size_t i = 0; i < WS_ARRAY_SIZE(xdg); i++) {
		WS_AUTOFREE char *p = bl_strf("%s/%s", b->root, xdg[i][1]);

		r = bl_mkdirs(p, 0700);
		if (r < 0)
			return fail(r, "cannot create '%s'", p);
		if (setenv(xdg[i][0], p, 1) < 0)
			return -errno;
	}
	/* git's global configuration (hooks, signing, templates) stays out of the run */
	if (setenv("GIT_CONFIG_GLOBAL", "/dev/null", 1) < 0 ||
	    setenv("GIT_CONFIG_NOSYSTEM", "1", 1) < 0)
		return -errno;
	b->config = bl_strf("%s/workspaced.conf", b->root);
	r = bl_write_file(b->config, config, sizeof(config) - 1);
	if (r < 0)
		return fail(r, "cannot write '%s'", b->config);
	return 0;
}

static void print_header(const struct bench *b)
{
	struct utsname u;
	struct statfs sf;
	const char *fs = "?";

	if (uname(&u) < 0)
		memset(&u, 0, sizeof(u));
	if (statfs(b->root, &sf) == 0)
		fs = sf.f_type == 0x01021994 ? "tmpfs" : sf.f_type == 0xEF53 ? "ext2/3/4"
			: sf.f_type == 0x58465342 ? "xfs" : sf.f_type == 0x9123683E ? "btrfs"
							 : "other";
	printf("wsbench: %ld CPUs, %s %s, scratch %s (%s), build type %s%s\n",
	       sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, b->root, fs,
	       WSBENCH_BUILD_TYPE, b->quick ? ", --quick" : "");
	printf("  workspaced %s\n  wsctl      %s\n  trivial    %s\n  nix        %s\n",
	       b->daemon, b->wsctl, b->trivial, b->nix ? b->nix : "(not found)");
	if (strcmp(WSBENCH_BUILD_TYPE, "Release") != 0)
		printf("  (numbers are meant for a Release build: -DCMAKE_BUILD_TYPE=Release)\n");
	fflush(stdout);
}

static void progress(const char *fmt, ...) WS_PRINTF(1, 2);
static void progress(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputs("...\n", stdout);
	fflush(stdout);
}

static void usage(FILE *f)
{
	fputs("Usage: wsbench [--daemon PATH] [--wsctl PATH] [--trivial PATH] [--nix PATH]\n"
	      "               [--quick] [--keep] [--only LIST]\n"
	      "\n"
	      "Runs the real workspaced and wsctl on generated repositories in a scratch\n"
	      "directory and prints each measurement next to a baseline taken in the same run.\n"
	      "Binaries default to the ones next to this program (or one directory up).\n"
	      "  --quick      fewer iterations (for a smoke run; numbers are noisier)\n"
	      "  --keep       keep the scratch directory (logs, repositories)\n"
	      "  --only LIST  run only these measurements, e.g. --only 1,2,4 (1-6)\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"daemon", required_argument, NULL, 'd'}, {"wsctl", required_argument, NULL, 'w'},
		{"trivial", required_argument, NULL, 't'}, {"nix", required_argument, NULL, 'n'},
		{"quick", no_argument, NULL, 'q'},         {"keep", no_argument, NULL, 'k'},
		{"only", required_argument, NULL, 'o'},    {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	WS_AUTOFREE char *daemon_path = NULL, *wsctl_path = NULL, *trivial_path = NULL;
	WS_AUTOFREE char *nix_path = NULL;
	struct bench b = {0};
	struct daemon d = {.pid = -1};
	const char *tmpdir = getenv("TMPDIR");
	const char *only = "123456";
	bool keep = false;
	char tmpl[PATH_MAX];
	int c, r;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': b.daemon = optarg; break;
		case 'w': b.wsctl = optarg; break;
		case 't': b.trivial = optarg; break;
		case 'n': b.nix = optarg; break;
		case 'q': b.quick = true; break;
		case 'k': keep = true; break;
		case 'o': only = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (!b.daemon)
		b.daemon = daemon_path = find_binary("workspaced");
	if (!b.wsctl)
		b.wsctl = wsctl_path = find_binary("wsctl");
	if (!b.trivial)
		b.trivial = trivial_path = find_binary("wsbench-trivial");
	if (!b.nix)
		b.nix = nix_path = find_in_path("nix-instantiate");
	if (!b.daemon || !b.wsctl || !b.trivial) {
		fprintf(stderr, "wsbench: cannot find %s next to this program; pass its path\n",
			!b.daemon ? "workspaced (--daemon)" : !b.wsctl ? "wsctl (--wsctl)"
								   : "wsbench-trivial (--trivial)");
		return 2;
	}

	snprintf(tmpl, sizeof(tmpl), "%s/wsbench.XXXXXX",
		 tmpdir && tmpdir[0] == '/' && strlen(tmpdir) < 60 ? tmpdir : "/tmp");
	if (!mkdtemp(tmpl)) {
		fprintf(stderr, "wsbench: cannot create '%s': %s\n", tmpl, strerror(errno));
		return 1;
	}
	b.root = tmpl;
	bl_set_scratch(b.root);
	bl_install_signals();
	(void)git_libgit2_init();
	r = setup_env(&b);
	if (r < 0)
		goto out;
	print_header(&b);

	if (strpbrk(only, "124")) {
		WS_AUTOFREE char *repo = bl_strf("%s/small/flake", b.root);

		progress("starting workspaced on 10 entries");
		r = make_repo(repo, 10, "w");
		if (r >= 0)
			r = daemon_start(&b, repo, "small", &d);
		if (r < 0)
			goto out;
		if (strchr(only, '4') && (progress("4: idle RSS"), bench_rss(&b, &d)) < 0)
			note(&b, "4: failed, see above");
		if (strchr(only, '1') && (progress("1: JSON-RPC round trips"), bench_rpc(&b, &d)) < 0)
			note(&b, "1: failed, see above");
		if (strchr(only, '2') && (progress("2: wsctl list"), bench_wsctl(&b, &d)) < 0)
			note(&b, "2: failed, see above");
		daemon_stop(&d);
	}
	if (strchr(only, '3')) {
		static const size_t sizes[] = {10, 100, 1000};

		for (size_t i = 0; i < WS_ARRAY_SIZE(sizes); i++) {
			progress("3: workspace.create on %zu entries", sizes[i]);
			if (bench_create(&b, sizes[i]) < 0)
				note(&b, "3: failed on %zu entries, see above", sizes[i]);
		}
	}
	if (strchr(only, '5') && (progress("5: parsing"), bench_parse(&b)) < 0)
		note(&b, "5: failed, see above");
	if (strchr(only, '6') && (progress("6: host keys"), bench_hostkey(&b)) < 0)
		note(&b, "6: failed, see above");
	print_table(&b);
	r = 0;
out:
	daemon_stop(&d);
	bl_cleanup(keep);
	if (keep)
		printf("scratch directory kept: %s\n", b.root);
	(void)git_libgit2_shutdown();
	for (size_t i = 0; i < b.n_rows; i++) {
		free(b.rows[i].name);
		free(b.rows[i].skipped);
	}
	for (size_t i = 0; i < b.n_notes; i++)
		free(b.notes[i]);
	free(b.config);
	return r < 0 ? 1 : 0;
}
