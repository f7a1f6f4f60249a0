// SPDX-License-Identifier: MIT
/* workspaced: start-up checks, the event loop, signals and shutdown, and `--check`. Parsing
 * flags belongs to config.c, the socket to rpc.c, the work to methods.c; main wires them and
 * owns the one struct daemon. */
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <sys/file.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "config.h"
#include "daemon.h"
#include "flake.h"
#include "fsutil.h"
#include "gitstage.h"
#include "hostkeys.h"
#include "log.h"
#include "methods.h"
#include "nix_tree.h"
#include "rpc.h"
#include "sdglue.h"
#include "state.h"
#include "unitstate.h"

#define CHECK_MAX_BYTES (64 * 1024 * 1024)
#define HOSTKEY_DEBOUNCE_MS 10
#define MALLOC_KEEP_BYTES (64 << 20)

static uv_signal_t sig_int, sig_term, sig_hup;
static bool signals_started;

/* `workspaced --check FILE...`: our parser's verdict on each file, nothing started. */
static int check_files(char **files)
{
	int bad = 0;

	for (char **f = files; *f; f++) {
		WS_AUTOFREE char *buf = NULL;
		struct ws_err err = {0};
		size_t len = 0;
		int r;

		WS_AUTOCLOSE int fd = open(*f, O_RDONLY | O_CLOEXEC | O_NOCTTY);

		/* any readable file, a pipe too (--check /dev/stdin) */
		r = fd < 0 ? -errno : fsutil_read_fd(fd, CHECK_MAX_BYTES, &buf, &len);
		if (r < 0) {
			printf("%s: cannot read: %s\n", *f, strerror(-r));
			bad = 1;
			continue;
		}
		r = nix_check_buffer(buf, len, *f, &err);
		if (r < 0) {
			printf("%s:%d:%d: %s\n", *f, err.line, err.column, err.message);
			bad = 1;
		} else {
			printf("%s: ok\n", *f);
		}
		ws_err_clear(&err);
	}
	fflush(stdout);
	return bad;
}

static void hostkeys_error_cb(void *userdata, const struct ws_err *err)
{
	(void)userdata;
	log_warning("host-key watcher: %s", err->message);
}

static void close_cb(uv_handle_t *h)
{
	(void)h;
}

static void rpc_closed_cb(void *ud)
{
	(void)ud;
}

static void hk_closed_cb(void *ud)
{
	(void)ud;
}

void daemon_idle(struct daemon *d)
{
	static bool closing;

	if (closing)
		return;
	closing = true;
	log_info("shutting down");
	sdglue_watchdog_stop();
	if (d->rpc)
		rpc_server_close(d->rpc, rpc_closed_cb, d);
	if (d->hk)
		hostkeys_close(d->hk, hk_closed_cb, d);
	unitstate_free(d->units);
	d->units = NULL;
	methods_free(d->m);
	if (signals_started) {
		uv_close((uv_handle_t *)&sig_int, close_cb);
		uv_close((uv_handle_t *)&sig_term, close_cb);
		uv_close((uv_handle_t *)&sig_hup, close_cb);
	}
}

static void stop_signal_cb(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (d->stopping)
		return;
	d->stopping = true;
	sdglue_stopping();
	log_info("%s received, finishing in-flight writes", strsignal(signum));
	if (methods_idle(d->m))
		daemon_idle(d);
}

static void hup_signal_cb(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;
	struct ws_err err = {0};

	sdglue_reloading();
	d->cfg_gen++;
	if (config_reload(&d->cfg, &err) < 0)
		log_error("reloading the configuration failed, keeping the old one: %s",
			  err.message);
	else
		log_info("configuration reloaded%s%s", d->cfg.config_file ? " from " : "",
			 d->cfg.config_file ? d->cfg.config_file : "");
	ws_err_clear(&err);
	log_set_level(d->cfg.log_level);
	methods_machine_changed(d);
	sdglue_ready("reloaded");
}

/* One daemon per repository and per state directory: an exclusive flock on @path (held
 * until exit; the kernel drops it if we die), with our pid inside for the message of the
 * daemon that finds it taken. Returns the fd or a negative errno. */
static int take_lock(const char *path, const char *what, const char *where, struct ws_err *err)
{
	char pid[32] = "";
	int fd, n;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return ws_fail(err, -errno, 0, "cannot open the lock file '%s': %m", path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = -errno;

		n = (int)pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? strcspn(pid, "\n") : 0] = '\0';
		(void)close(fd);
		if (r == -EWOULDBLOCK)
			return ws_fail(err, -EBUSY, WS_E_BUSY,
				       "another workspaced%s%s%s already serves %s '%s' (lock '%s'); "
				       "only one daemon may serve it",
				       pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "", what, where,
				       path);
		return ws_fail(err, r, 0, "cannot lock '%s': %s", path, strerror(-r));
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		/* the lock holds without the pid: it only makes the message nicer */
	}
	return fd;
}

static int startup_checks(struct daemon *d, struct ws_err *err)
{
	struct stat st;
	int r;

	if (stat(d->cfg.repo, &st) < 0 || !S_ISDIR(st.st_mode))
		return ws_fail(err, -ENOENT, 0, "the repository '%s' does not exist or is not a "
			       "directory (--repo)", d->cfg.repo);
	{
		/* one spelling of the path everywhere (messages, daemon.info, the deploy hint) */
		char *canon = realpath(d->cfg.repo, NULL);

		if (canon) {
			free(d->cfg.repo);
			d->cfg.repo = canon;
		}
	}
	if (asprintf(&d->machine_file_rel, "machines/%s/default.nix", d->cfg.machine) < 0 ||
	    asprintf(&d->machine_dir, "%s/machines/%s", d->cfg.repo, d->cfg.machine) < 0 ||
	    asprintf(&d->machine_file, "%s/default.nix", d->machine_dir) < 0)
		return -ENOMEM;
	r = gitstage_open(d->cfg.repo, &d->git, err);
	if (r < 0)
		return r;
	{
		/* the lock lives in the git directory, next to the index it protects */
		WS_AUTOFREE char *gitdir = strdup(gitstage_index_path(d->git));
		WS_AUTOFREE char *lock = NULL;
		char *slash = gitdir ? strrchr(gitdir, '/') : NULL;

		if (!slash)
			return -ENOMEM;
		*slash = '\0';
		lock = fsutil_join(gitdir, "workspaced.lock");
		if (!lock)
			return -ENOMEM;
		d->repo_lock = take_lock(lock, "the repository", d->cfg.repo, err);
		if (d->repo_lock < 0)
			return d->repo_lock;
	}
	if (stat(d->machine_dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return ws_fail(err, -ENOENT, 0,
			       "'%s' does not exist: the repository has no machine '%s' (set "
			       "--machine to the directory name under machines/)",
			       d->machine_dir, d->cfg.machine);
	if (stat(d->machine_file, &st) < 0 || !S_ISREG(st.st_mode))
		return ws_fail(err, -ENOENT, 0,
			       "'%s' does not exist: the machine's configuration must be in "
			       "machines/%s/default.nix",
			       d->machine_file, d->cfg.machine);
	r = fsutil_mkdir_p(d->cfg.state_dir, 0700);
	if (r < 0)
		return ws_fail(err, r, 0, "cannot create the state directory '%s': %s",
			       d->cfg.state_dir, strerror(-r));
	d->state_file = fsutil_join(d->cfg.state_dir, "state.json");
	if (!d->state_file)
		return -ENOMEM;
	{
		WS_AUTOFREE char *lock = fsutil_join(d->cfg.state_dir, "lock");

		if (!lock)
			return -ENOMEM;
		d->state_lock = take_lock(lock, "the state directory", d->cfg.state_dir, err);
		if (d->state_lock < 0)
			return d->state_lock;
	}
	return state_load(d->state_file, &d->state, err);
}

static int start_listening(struct daemon *d, struct ws_err *err)
{
	size_t n_methods = 0;
	const struct rpc_method *table = methods_table(&n_methods);
	struct rpc_limits limits = {.max_message = d->cfg.max_message};
	gid_t gid = (gid_t)-1;
	int fd, r;

	r = rpc_server_new(d->loop, table, n_methods, &limits, d, &d->rpc);
	if (r < 0)
		return ws_fail(err, r, 0, "cannot create the server: %s", strerror(-r));
	fd = sdglue_listen_fd();
	if (fd < 0)
		return ws_fail(err, fd, 0, "cannot use the socket(s) systemd passed (LISTEN_FDS)");
	if (fd > 0) {
		log_info("using the socket passed by systemd");
		return rpc_server_listen_fd(d->rpc, fd, err);
	}
	if (d->cfg.group) {
		struct group *g = getgrnam(d->cfg.group);
		char *end = NULL;
		unsigned long n = strtoul(d->cfg.group, &end, 10);

		if (g)
			gid = g->gr_gid;
		else if (end && end != d->cfg.group && *end == '\0')
			gid = (gid_t)n;
		else
			return ws_fail(err, -ENOENT, 0, "unknown group '%s' (config key group)",
				       d->cfg.group);
	}
	return rpc_server_listen_path(d->rpc, d->cfg.socket_path,
				      gid == (gid_t)-1 ? 0600 : 0660, gid, err);
}

static void log_stale_tmp(const char *path)
{
	log_info("removed %s, a temporary file left by a write that did not finish", path);
}

int main(int argc, char **argv)
{
	struct daemon d = {.repo_lock = -1, .state_lock = -1};
	struct ws_err err = {0};
	int r, ret = 1;

	/* A write parses the machine file on the pool: a few large blocks per write. Served
	 * from the heap and kept there (not mmap'd and unmapped each time), the next write
	 * finds its pages already faulted in; methods.c gives them back with malloc_trim()
	 * once writes pause. */
	(void)mallopt(M_MMAP_THRESHOLD, MALLOC_KEEP_BYTES);
	(void)mallopt(M_TRIM_THRESHOLD, MALLOC_KEEP_BYTES);
	sdglue_init();
	log_init("workspaced");
	r = config_load(argc, argv, &d.cfg, &err);
	if (r < 0) {
		fprintf(stderr, "workspaced: %s\nTry 'workspaced --help'.\n", err.message);
		ret = 2;
		goto out;
	}
	if (d.cfg.show_help) {
		config_usage(stdout);
		ret = 0;
		goto out;
	}
	if (d.cfg.show_version) {
		printf("workspaced %s (protocol %d)\n", WS_VERSION, WS_PROTO_VERSION);
		ret = 0;
		goto out;
	}
	if (d.cfg.check_files) {
		ret = check_files(d.cfg.check_files);
		goto out;
	}
	log_set_level(d.cfg.log_level);
	(void)signal(SIGPIPE, SIG_IGN);
	fsutil_umask_keep(); /* one thread still: see rpc_server_listen_path() */

	r = startup_checks(&d, &err);
	if (r < 0) {
		log_error("%s", err.message[0] ? err.message : strerror(-r));
		goto out;
	}
	/* the repository's lock is ours now: a temporary named next to default.nix is one a
	 * daemon killed mid-write left */
	(void)fsutil_remove_stale_tmps(d.machine_dir, "default.nix", log_stale_tmp);
	d.loop = uv_default_loop();
	d.started = time(NULL);
	r = methods_new(&d, &d.m);
	if (r < 0) {
		log_error("cannot start: %s", strerror(-r));
		goto out;
	}
	/* before the socket exists: a client may signal us as soon as it can connect */
	uv_signal_init(d.loop, &sig_int);
	uv_signal_init(d.loop, &sig_term);
	uv_signal_init(d.loop, &sig_hup);
	sig_int.data = sig_term.data = sig_hup.data = &d;
	uv_signal_start(&sig_int, stop_signal_cb, SIGINT);
	uv_signal_start(&sig_term, stop_signal_cb, SIGTERM);
	uv_signal_start(&sig_hup, hup_signal_cb, SIGHUP);
	signals_started = true;
	r = start_listening(&d, &err);
	if (r < 0) {
		log_error("%s", err.message[0] ? err.message : strerror(-r));
		daemon_idle(&d);
		(void)uv_run(d.loop, UV_RUN_DEFAULT);
		goto out_loop;
	}
	r = hostkeys_new(d.loop, d.cfg.sandbox_root, HOSTKEY_DEBOUNCE_MS, methods_hostkeys_cb,
			 &d, &d.hk, &err);
	if (r < 0) {
		log_warning("host keys will not be written back automatically: %s", err.message);
		ws_err_clear(&err);
		d.hk = NULL;
	}
	if (d.hk)
		hostkeys_set_error_cb(d.hk, hostkeys_error_cb);
	r = unitstate_new(d.loop, methods_unit_changed_cb, &d, &d.units);
	if (r < 0) {
		log_warning("unit states will show as unknown: %s", strerror(-r));
		d.units = NULL;
	}
	methods_start_watching(d.m);


	(void)sdglue_watchdog_start(d.loop);
	log_info("serving %s on %s (machine %s)", d.cfg.repo, d.cfg.socket_path, d.cfg.machine);
	{
		char status[96];

		snprintf(status, sizeof(status), "watching %zu workspaces",
			 methods_n_workspaces(d.m));
		sdglue_ready(status);
	}

	uv_run(d.loop, UV_RUN_DEFAULT);
	ret = 0;
out_loop:
	if (d.rpc)
		rpc_server_free(d.rpc);
	if (d.hk)
		hostkeys_free(d.hk);
	/* let close callbacks of unreferenced handles (the watchdog timer) run */
	for (int i = 0; i < 10 && uv_loop_alive(d.loop); i++)
		uv_run(d.loop, UV_RUN_NOWAIT);
	(void)uv_run(d.loop, UV_RUN_NOWAIT);
	r = uv_loop_close(d.loop);
	if (r < 0)
		log_warning("the event loop still had handles at exit: %s", uv_strerror(r));
out:
	if (d.repo_lock >= 0)
		(void)close(d.repo_lock);
	if (d.state_lock >= 0)
		(void)close(d.state_lock);
	state_free(d.state);
	gitstage_free(d.git);
	free(d.machine_dir);
	free(d.machine_file);
	free(d.machine_file_rel);
	free(d.state_file);
	config_clear(&d.cfg);
	ws_err_clear(&err);
	return ret;
}
