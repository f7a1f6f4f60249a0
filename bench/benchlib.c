/* SPDX-License-Identifier: MIT */
/* Plumbing for wsbench (see benchlib.h). Child processes are started with fork/exec so
 * that their whole cost, exec and dynamic linking included, is what gets timed. The
 * signal path only uses async-signal-safe calls: it kills the tracked children and runs
 * rm -rf on the scratch directory (fork, exec, waitpid). */
#include "benchlib.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BL_MAX_CHILDREN 32

static pid_t children[BL_MAX_CHILDREN];
static char scratch[PATH_MAX];
static pid_t main_pid;

uint64_t bl_now_ns(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int bl_samples_add(struct bl_samples *s, uint64_t v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uint64_t *nv = realloc(s->v, cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		s->v = nv;
		s->cap = cap;
	}
	s->v[s->n++] = v;
	s->sorted = false;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void samples_sort(struct bl_samples *s)
{
	if (!s->sorted && s->n > 1)
		qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
	s->sorted = true;
}

uint64_t bl_median(struct bl_samples *s)
{
	if (s->n == 0)
		return 0;
	samples_sort(s);
	if (s->n % 2)
		return s->v[s->n / 2];
	return (s->v[s->n / 2 - 1] + s->v[s->n / 2]) / 2;
}

uint64_t bl_p99(struct bl_samples *s)
{
	size_t rank;

	if (s->n == 0)
		return 0;
	samples_sort(s);
	/* nearest rank: ceil(0.99 n) */
	rank = (s->n * 99 + 99) / 100;
	return s->v[rank - 1];
}

void bl_samples_clear(struct bl_samples *s)
{
	free(s->v);
	*s = (struct bl_samples){0};
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int bl_write_file(const char *path, const void *buf, size_t len)
{
	WS_AUTOCLOSE int fd = -1;
	int r;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	r = write_all(fd, buf, len);
	if (r < 0)
		return r;
	r = close(fd);
	fd = -1;
	return r < 0 ? -errno : 0;
}

int bl_read_file(const char *path, char **ret_buf, size_t *ret_len)
{
	WS_AUTOCLOSE int fd = -1;
	WS_AUTOFREE char *buf = NULL;
	size_t len = 0, cap = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);

			if (!nb)
				return -ENOMEM;
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*ret_len = len;
	*ret_buf = ws_steal(&buf);
	return 0;
}

int bl_mkdirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int rm_one_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

int bl_rm_rf(const char *path)
{
	if (nftw(path, rm_one_cb, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return errno == ENOENT ? 0 : -errno;
	return 0;
}

static int wait_status(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 255;
}

int bl_exec(const char *const argv[])
{
	char *v[32];
	size_t n = 0;

	while (argv[n] && n < WS_ARRAY_SIZE(v) - 1)
		n++;
	/* exec takes char *const[] for historical reasons; it never writes the strings */
	memcpy(v, argv, n * sizeof(*v));
	v[n] = NULL;
	if (strchr(v[0], '/'))
		execv(v[0], v);
	else
		execvp(v[0], v);
	return -errno;
}

int bl_run(const char *const argv[], bool quiet, uint64_t *ret_ns, int *ret_status)
{
	uint64_t t0;
	pid_t pid;
	int st;

	t0 = bl_now_ns();
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		bl_child_signals();
		if (null >= 0) {
			(void)dup2(null, STDIN_FILENO);
			if (quiet) {
				(void)dup2(null, STDOUT_FILENO);
				(void)dup2(null, STDERR_FILENO);
			}
		}
		(void)bl_exec(argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	*ret_ns = bl_now_ns() - t0;
	*ret_status = wait_status(st);
	return 0;
}

void bl_set_scratch(const char *dir)
{
	size_t n = strlen(dir);

	/* a path too long to store is never removed, rather than removed truncated */
	if (n >= sizeof(scratch))
		n = 0;
	memcpy(scratch, dir, n);
	scratch[n] = '\0';
}

void bl_track_child(pid_t pid)
{
	for (size_t i = 0; i < BL_MAX_CHILDREN; i++) {
		if (children[i] == 0) {
			children[i] = pid;
			return;
		}
	}
}

void bl_untrack_child(pid_t pid)
{
	for (size_t i = 0; i < BL_MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

static void kill_children(void)
{
	for (size_t i = 0; i < BL_MAX_CHILDREN; i++) {
		int st;

		if (children[i] <= 0)
			continue;
		(void)kill(children[i], SIGKILL);
		(void)waitpid(children[i], &st, 0);
		children[i] = 0;
	}
}

static void fatal_signal_handler(int sig)
{
	static const char msg[] = "\nwsbench: interrupted, cleaning up\n";
	char *const argv[] = {(char *)"rm", (char *)"-rf", scratch, NULL};

	/* a forked child that has not exec'd yet (the echo server) owns none of this */
	if (getpid() != main_pid)
		_exit(128 + sig);
	(void)write(STDERR_FILENO, msg, sizeof(msg) - 1);
	kill_children();
	if (scratch[0] == '/') {
		pid_t pid = fork();
		int st;

		if (pid == 0) {
			execv("/bin/rm", argv);
			_exit(127);
		}
		if (pid > 0)
			(void)waitpid(pid, &st, 0);
	}
	_exit(128 + sig);
}

void bl_install_signals(void)
{
	struct sigaction sa = {0};

	main_pid = getpid();
	sa.sa_handler = fatal_signal_handler;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	(void)sigaction(SIGPIPE, &sa, NULL);
}

void bl_child_signals(void)
{
	struct sigaction sa = {0};

	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGINT, &sa, NULL);
	(void)sigaction(SIGTERM, &sa, NULL);
	(void)sigaction(SIGHUP, &sa, NULL);
	(void)sigaction(SIGPIPE, &sa, NULL);
}

void bl_cleanup(bool keep)
{
	kill_children();
	if (!keep && scratch[0] == '/')
		(void)bl_rm_rf(scratch);
}

int bl_stop_child(pid_t pid, int timeout_ms)
{
	uint64_t end = bl_now_ns() + (uint64_t)timeout_ms * 1000000u;
	int st;

	(void)kill(pid, SIGTERM);
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			bl_untrack_child(pid);
			return -errno;
		}
		if (bl_now_ns() > end) {
			(void)kill(pid, SIGKILL);
			(void)waitpid(pid, &st, 0);
			break;
		}
		(void)poll(NULL, 0, 5);
	}
	bl_untrack_child(pid);
	return wait_status(st);
}

int64_t bl_cpu_ns(pid_t pid)
{
	WS_AUTOFREE char *text = NULL;
	unsigned long long ut, st;
	char path[64];
	const char *p;
	size_t len;
	long hz = sysconf(_SC_CLK_TCK);
	int r;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	r = bl_read_file(path, &text, &len);
	if (r < 0)
		return r;
	/* the command name may hold anything: fields start after its last ')' */
	p = strrchr(text, ')');
	if (!p || hz <= 0 ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -EIO;
	return (int64_t)((ut + st) * (1000000000ull / (unsigned long long)hz));
}

long bl_rss_kib(pid_t pid)
{
	WS_AUTOFREE char *text = NULL;
	char path[64];
	size_t len;
	const char *p;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	r = bl_read_file(path, &text, &len);
	if (r < 0)
		return r;
	p = strstr(text, "\nVmRSS:");
	if (!p)
		return -ENOENT;
	return strtol(p + 7, NULL, 10);
}

int bl_conn_open(const char *path, struct bl_conn *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	*c = (struct bl_conn){.fd = -1};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		(void)close(fd);
		return r;
	}
	c->fd = fd;
	return 0;
}

void bl_conn_close(struct bl_conn *c)
{
	if (c->fd >= 0)
		(void)close(c->fd);
	free(c->buf);
	*c = (struct bl_conn){.fd = -1};
}

int bl_conn_send(struct bl_conn *c, const char *buf, size_t len)
{
	return write_all(c->fd, buf, len);
}

int bl_conn_line(struct bl_conn *c, int timeout_ms, char **ret_line, size_t *ret_len)
{
	uint64_t end = timeout_ms < 0 ? 0 : bl_now_ns() + (uint64_t)timeout_ms * 1000000u;
	size_t scanned = 0;

	if (c->consumed) {
		memmove(c->buf, c->buf + c->consumed, c->len - c->consumed);
		c->len -= c->consumed;
		c->consumed = 0;
	}
	for (;;) {
		char *nl = c->len > scanned ? memchr(c->buf + scanned, '\n', c->len - scanned) : NULL;
		ssize_t n;

		if (nl) {
			*nl = '\0';
			c->consumed = (size_t)(nl - c->buf) + 1;
			*ret_line = c->buf;
			*ret_len = (size_t)(nl - c->buf);
			return 0;
		}
		scanned = c->len;
		if (c->cap - c->len < 4096) {
			size_t cap = c->cap ? c->cap * 2 : 65536;
			char *nb = realloc(c->buf, cap);

			if (!nb)
				return -ENOMEM;
			c->buf = nb;
			c->cap = cap;
		}
		if (timeout_ms >= 0) {
			struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
			uint64_t now = bl_now_ns();
			int r;

			if (now >= end)
				return -ETIMEDOUT;
			r = poll(&pfd, 1, (int)((end - now) / 1000000u) + 1);
			if (r < 0 && errno != EINTR)
				return -errno;
			if (r <= 0)
				continue;
		}
		n = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPIPE;
		c->len += (size_t)n;
	}
}

void bl_base64(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*out++ = tab[v >> 18 & 63];
		*out++ = tab[v >> 12 & 63];
		*out++ = tab[v >> 6 & 63];
		*out++ = tab[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);

		*out++ = tab[v >> 18 & 63];
		*out++ = tab[v >> 12 & 63];
		*out++ = i + 1 < len ? tab[v >> 6 & 63] : '=';
		*out++ = '=';
	}
	*out = '\0';
}

char *bl_strf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0) {
		fputs("wsbench: out of memory\n", stderr);
		abort();
	}
	return s;
}
