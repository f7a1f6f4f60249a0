/* SPDX-License-Identifier: MIT */
/* sdglue against a real notify socket: an AF_UNIX datagram socket bound in a temporary
 * directory (or in the abstract namespace) that the test reads, message by message, in
 * order. Also the environment clean-up and the watchdog timer on a real loop. */
#include "harness.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <uv.h>

#include "log.h"
#include "sdglue.h"

struct nsock {
	int fd;
	char *dir;
	char path[108];
};

static void nsock_open(struct nsock *n, bool abstract)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;

	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(n->fd >= 0);
	n->dir = NULL;
	if (abstract) {
		snprintf(n->path, sizeof(n->path), "@ws-test-notify-%d", (int)getpid());
		memcpy(sa.sun_path, n->path, strlen(n->path));
		sa.sun_path[0] = '\0';
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(n->path));
	} else {
		n->dir = h_tmpdir();
		snprintf(n->path, sizeof(n->path), "%s/notify", n->dir);
		memcpy(sa.sun_path, n->path, strlen(n->path) + 1);
		len = sizeof(sa);
	}
	assert_int_equal(bind(n->fd, (struct sockaddr *)&sa, len), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", n->path, 1), 0);
}

static void nsock_close(struct nsock *n)
{
	close(n->fd);
	if (n->dir) {
		assert_int_equal(unlink(n->path), 0);
		assert_int_equal(rmdir(n->dir), 0);
		free(n->dir);
	}
}

/* The next datagram (malloc'd), or NULL when none arrives within @ms. */
static char *nsock_recv(struct nsock *n, int ms)
{
	struct pollfd p = { .fd = n->fd, .events = POLLIN };
	char buf[4096];
	ssize_t len;

	if (poll(&p, 1, ms) <= 0)
		return NULL;
	len = recv(n->fd, buf, sizeof(buf) - 1, 0);
	assert_true(len >= 0);
	buf[len] = '\0';
	return strdup(buf);
}

static void expect(struct nsock *n, const char *want)
{
	char *got = nsock_recv(n, 1000);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void check_sequence(struct nsock *n)
{
	char *got;

	sdglue_init();
	assert_null(getenv("NOTIFY_SOCKET")); /* children will not see it */

	sdglue_ready("serving 3 workspaces");
	sdglue_status("verify %s", "running");
	sdglue_status("two\nlines");
	sdglue_reloading();
	sdglue_ready(NULL);
	sdglue_stopping();

	expect(n, "READY=1\nSTATUS=serving 3 workspaces");
	expect(n, "STATUS=verify running");
	expect(n, "STATUS=two lines"); /* a newline would smuggle in another field */
	got = nsock_recv(n, 1000);
	assert_non_null(got);
	assert_true(strncmp(got, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
	assert_true(strtoull(got + 27, NULL, 10) > 0);
	assert_int_equal(strspn(got + 27, "0123456789"), strlen(got + 27));
	free(got);
	expect(n, "READY=1");
	expect(n, "STOPPING=1");
	assert_null(nsock_recv(n, 50));
}

static void test_notify_path(void **state)
{
	struct nsock n;

	nsock_open(&n, false);
	check_sequence(&n);
	nsock_close(&n);
}

static void test_notify_abstract(void **state)
{
	struct nsock n;

	nsock_open(&n, true);
	check_sequence(&n);
	nsock_close(&n);
}

static void test_no_notify_socket(void **state)
{
	struct nsock n;

	nsock_open(&n, false);
	assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
	sdglue_init();
	sdglue_ready("x");
	sdglue_status("y");
	sdglue_stopping();
	assert_null(nsock_recv(&n, 50));
	/* nor does an unusable address make trouble */
	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	sdglue_init();
	sdglue_ready("x");
	assert_null(nsock_recv(&n, 20));
	nsock_close(&n);
}

static void stop_cb(uv_timer_t *t)
{
	sdglue_watchdog_stop();
	uv_close((uv_handle_t *)t, NULL);
}

/* Runs a loop for @ms with the watchdog started; returns the WATCHDOG=1 count. */
static int run_watchdog(struct nsock *n, int ms)
{
	uv_loop_t loop;
	uv_timer_t t;
	char *got;
	int count = 0;

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(sdglue_watchdog_start(&loop), 0);
	/* the watchdog alone does not keep the loop alive */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_timer_init(&loop, &t), 0);
	assert_int_equal(uv_timer_start(&t, stop_cb, (uint64_t)ms, 0), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	while ((got = nsock_recv(n, 0))) {
		assert_string_equal(got, "WATCHDOG=1");
		free(got);
		count++;
	}
	return count;
}

static void test_watchdog(void **state)
{
	struct nsock n;
	char pid[32];
	int count;

	nsock_open(&n, false);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());

	/* 40 ms: a ping every 20 ms, the first at once */
	setenv("WATCHDOG_USEC", "40000", 1);
	setenv("WATCHDOG_PID", pid, 1);
	sdglue_init();
	assert_null(getenv("WATCHDOG_USEC"));
	assert_null(getenv("WATCHDOG_PID"));
	count = run_watchdog(&n, 110);
	assert_in_range(count, 4, 8);

	/* no WATCHDOG_PID: ours too */
	setenv("NOTIFY_SOCKET", n.path, 1);
	setenv("WATCHDOG_USEC", "40000", 1);
	sdglue_init();
	assert_in_range(run_watchdog(&n, 50), 2, 5);

	/* another process's watchdog: none */
	setenv("NOTIFY_SOCKET", n.path, 1);
	setenv("WATCHDOG_USEC", "40000", 1);
	setenv("WATCHDOG_PID", "1", 1);
	sdglue_init();
	assert_int_equal(run_watchdog(&n, 60), 0);

	/* not set at all: none */
	setenv("NOTIFY_SOCKET", n.path, 1);
	sdglue_init();
	assert_int_equal(run_watchdog(&n, 30), 0);
	nsock_close(&n);
}

static void test_listen_fd_absent(void **state)
{
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	assert_int_equal(sdglue_listen_fd(), 0);
	setenv("LISTEN_FDS", "0", 1);
	setenv("LISTEN_PID", "1", 1);
	setenv("LISTEN_FDNAMES", "x", 1);
	assert_int_equal(sdglue_listen_fd(), 0);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDNAMES"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_notify_path),
		cmocka_unit_test(test_notify_abstract),
		cmocka_unit_test(test_no_notify_socket),
		cmocka_unit_test(test_watchdog),
		cmocka_unit_test(test_listen_fd_absent),
	};

	log_init("test-sdglue");
	log_set_level(LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
