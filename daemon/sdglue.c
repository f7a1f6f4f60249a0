/* SPDX-License-Identifier: MIT */
/* systemd glue: takes the listening socket systemd passed (socket activation), and sends
 * READY/STATUS/STOPPING/RELOADING/WATCHDOG notifications to NOTIFY_SOCKET itself, one
 * datagram each. NOTIFY_SOCKET, WATCHDOG_* and LISTEN_* are removed from the environment
 * so children never inherit them. It does not decide when to notify: main does. */
#include "sdglue.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "ws_macros.h"

static char *notify_path;     /* owned: NOTIFY_SOCKET as systemd gave it, or NULL */
static uint64_t watchdog_usec; /* 0: no watchdog for us */
static uv_timer_t watchdog_timer;
static bool watchdog_running;

/* Strict decimal; -EINVAL on anything else. */
static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

int sdglue_listen_fd(void)
{
	int n, r;

	/* sd_listen_fds() checks LISTEN_PID, sets FD_CLOEXEC on every passed fd and unsets
	 * LISTEN_PID/LISTEN_FDS(/LISTEN_FDNAMES); the last is repeated for older versions. */
	n = sd_listen_fds(1);
	(void)unsetenv("LISTEN_PID");
	(void)unsetenv("LISTEN_FDS");
	(void)unsetenv("LISTEN_FDNAMES");
	if (n < 0)
		return log_errno(LOG_LVL_ERROR, n, "cannot take the sockets systemd passed");
	if (n == 0)
		return 0;
	if (n > 1) {
		log_error("systemd passed %d sockets; workspaced expects exactly one", n);
		return -EINVAL;
	}
	r = sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0);
	if (r < 0)
		return log_errno(LOG_LVL_ERROR, r, "cannot inspect the socket systemd passed");
	if (r == 0) {
		log_error("the socket systemd passed is not a listening Unix stream socket");
		return -EINVAL;
	}
	return SD_LISTEN_FDS_START;
}

void sdglue_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	const char *wd = getenv("WATCHDOG_USEC");
	const char *wdpid = getenv("WATCHDOG_PID");
	uint64_t v, pid;

	free(notify_path);
	notify_path = e && *e ? strdup(e) : NULL;
	watchdog_usec = 0;
	if (wd && parse_u64(wd, &v) == 0 && v > 0 &&
	    (!wdpid || (parse_u64(wdpid, &pid) == 0 && pid == (uint64_t)getpid())))
		watchdog_usec = v;
	(void)unsetenv("NOTIFY_SOCKET");
	(void)unsetenv("WATCHDOG_USEC");
	(void)unsetenv("WATCHDOG_PID");
}

/* Sends @msg as one datagram to the saved NOTIFY_SOCKET. No socket: nothing to do. */
static int notify_send(const char *msg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	WS_AUTOCLOSE int fd = -1;
	size_t plen;
	socklen_t salen;
	ssize_t n;

	if (!notify_path)
		return 0;
	plen = strlen(notify_path);
	if (plen < 2 || plen > sizeof(sa.sun_path) - 1 ||
	    (notify_path[0] != '/' && notify_path[0] != '@')) {
		log_debug("NOTIFY_SOCKET '%s' is not a Unix socket address, ignoring", notify_path);
		return -EAFNOSUPPORT;
	}
	memcpy(sa.sun_path, notify_path, plen);
	if (notify_path[0] == '@') {
		/* abstract namespace: leading NUL, the name is not NUL-terminated */
		sa.sun_path[0] = '\0';
		salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
	} else {
		salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return log_errno(LOG_LVL_DEBUG, -errno, "cannot create notify socket");
	n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
	if (n < 0)
		return log_errno(LOG_LVL_DEBUG, -errno, "cannot notify '%s'", notify_path);
	return 0;
}

/* STATUS= text on one line: a newline would start another field. */
static void one_line(char *s)
{
	for (; *s; s++)
		if (*s == '\n' || *s == '\r')
			*s = ' ';
}

void sdglue_ready(const char *status)
{
	WS_AUTOFREE char *msg = NULL;

	if (!status) {
		(void)notify_send("READY=1");
		return;
	}
	if (asprintf(&msg, "READY=1\nSTATUS=%s", status) < 0)
		return;
	one_line(msg + strlen("READY=1\n"));
	(void)notify_send(msg);
}

void sdglue_status(const char *fmt, ...)
{
	WS_AUTOFREE char *text = NULL, *msg = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	one_line(text);
	if (asprintf(&msg, "STATUS=%s", text) < 0)
		return;
	(void)notify_send(msg);
}

void sdglue_stopping(void)
{
	(void)notify_send("STOPPING=1");
}

void sdglue_reloading(void)
{
	char msg[64];
	struct timespec ts;

	/* systemd >= 253 wants the time of the reload with it (Type=notify-reload);
	 * older versions ignore the extra field. */
	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
		 (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
	(void)notify_send(msg);
}

static void watchdog_cb(uv_timer_t *t)
{
	(void)notify_send("WATCHDOG=1");
}

static void watchdog_close_cb(uv_handle_t *h)
{
	watchdog_running = false;
}

int sdglue_watchdog_start(uv_loop_t *loop)
{
	uint64_t ms;
	int r;

	if (watchdog_usec == 0 || watchdog_running)
		return 0;
	ms = watchdog_usec / 2000;
	if (ms == 0)
		ms = 1;
	r = uv_timer_init(loop, &watchdog_timer);
	if (r < 0)
		return log_errno(LOG_LVL_ERROR, r, "cannot create the watchdog timer");
	watchdog_running = true;
	/* The first ping goes out at once; the timer must not keep the loop alive. */
	r = uv_timer_start(&watchdog_timer, watchdog_cb, 0, ms);
	if (r < 0) {
		uv_close((uv_handle_t *)&watchdog_timer, watchdog_close_cb);
		return log_errno(LOG_LVL_ERROR, r, "cannot start the watchdog timer");
	}
	uv_unref((uv_handle_t *)&watchdog_timer);
	log_debug("watchdog: pinging every %" PRIu64 " ms", ms);
	return 0;
}

void sdglue_watchdog_stop(void)
{
	if (!watchdog_running || uv_is_closing((uv_handle_t *)&watchdog_timer))
		return;
	uv_close((uv_handle_t *)&watchdog_timer, watchdog_close_cb);
}
