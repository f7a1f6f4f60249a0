/* SPDX-License-Identifier: MIT */
/* Tests for unitstate.c against a private dbus-daemon (its own config in a temporary
 * directory, selected through DBUS_SYSTEM_BUS_ADDRESS) and fake-systemd1, which plays
 * org.freedesktop.systemd1: initial states, PropertiesChanged, NoSuchUnit, UnitNew, a
 * changed watch set, the bus going away, and no bus at all. Skipped without dbus-daemon. */
#include <stdbool.h>

#include "harness.h"

#include <poll.h>
#include <signal.h>
#include <time.h>

#include <systemd/sd-bus.h>
#include <uv.h>

#include "unitstate.h"
#include "ws_macros.h"

#ifndef WS_FAKE_SYSTEMD1
#error "WS_FAKE_SYSTEMD1 must name the fake-systemd1 helper"
#endif

#define DEV "container@dev.service"
#define VM "microvm@vm1.service"
#define INCUS "incus-workspace-late.service"

struct change {
	char unit[128], active[64], sub[64];
};

struct ctx {
	uv_loop_t loop;
	uv_timer_t tick;
	struct unitstate *us;
	struct change changes[256];
	size_t n_changes;
};

struct bus {
	char dir[4096];
	char conf[4200], sock[4200];
	pid_t daemon, fake;
};

static void on_changed(void *userdata, const char *unit, const char *active, const char *sub)
{
	struct ctx *c = userdata;
	struct change *ch;

	assert_true(c->n_changes < WS_ARRAY_SIZE(c->changes));
	ch = &c->changes[c->n_changes++];
	snprintf(ch->unit, sizeof(ch->unit), "%s", unit);
	snprintf(ch->active, sizeof(ch->active), "%s", active);
	snprintf(ch->sub, sizeof(ch->sub), "%s", sub);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reads one line from @fd within @timeout_ms (the child's "I am ready"). */
static void read_line(int fd, char *buf, size_t size, int timeout_ms)
{
	size_t len = 0;
	uint64_t end = now_ms() + (uint64_t)timeout_ms;

	while (len + 1 < size) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(end - now_ms());
		ssize_t n;

		if (left <= 0 || poll(&p, 1, left) <= 0)
			fail_msg("no line from the child within %d ms", timeout_ms);
		n = read(fd, buf + len, 1);
		if (n <= 0)
			fail_msg("the child closed its output");
		if (buf[len] == '\n')
			break;
		len++;
	}
	buf[len] = '\0';
}

/* Starts argv with its stdout in a pipe and returns its first line. */
static pid_t spawn_reading(char *const argv[], char *line, size_t size)
{
	int fds[2];
	pid_t pid;

	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fds[1], 1);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	read_line(fds[0], line, size, 5000);
	close(fds[0]);
	return pid;
}

static void stop_child(pid_t *pid)
{
	if (*pid <= 0)
		return;
	(void)kill(*pid, SIGTERM);
	(void)waitpid(*pid, NULL, 0);
	*pid = 0;
}

/* Starts the private bus (on b->sock) and the fake manager with @fake_units. */
static void bus_launch(struct bus *b, char *const *fake_units)
{
	char *dbus = NULL, line[1024], conf_arg[4300], addr[4300];

	dbus = h_sh_out("command -v dbus-daemon");
	dbus[strcspn(dbus, "\n")] = '\0';
	(void)unlink(b->sock);
	snprintf(conf_arg, sizeof(conf_arg), "--config-file=%s", b->conf);
	{
		char *argv[] = { dbus, (char *)"--nofork", (char *)"--nopidfile", conf_arg,
				 (char *)"--print-address=1", NULL };

		b->daemon = spawn_reading(argv, line, sizeof(line));
	}
	free(dbus);
	assert_non_null(strstr(line, b->sock));
	/* without the guid, so that a restarted bus on the same path is accepted */
	snprintf(addr, sizeof(addr), "unix:path=%s", b->sock);
	assert_int_equal(setenv("DBUS_SYSTEM_BUS_ADDRESS", addr, 1), 0);

	{
		char *argv[16] = { (char *)WS_FAKE_SYSTEMD1 };
		size_t n = 1;

		for (; fake_units && fake_units[n - 1] && n < 15; n++)
			argv[n] = fake_units[n - 1];
		b->fake = spawn_reading(argv, line, sizeof(line));
	}
	assert_string_equal(line, "ready");
}

static bool bus_start(struct bus *b, char *const *fake_units)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	FILE *f;

	if (!h_have("dbus-daemon"))
		return false;
	memset(b, 0, sizeof(*b));
	snprintf(b->dir, sizeof(b->dir), "%s/ws-unitstate-XXXXXX", tmp);
	assert_non_null(mkdtemp(b->dir));
	snprintf(b->conf, sizeof(b->conf), "%s/bus.conf", b->dir);
	snprintf(b->sock, sizeof(b->sock), "%s/bus", b->dir);
	f = fopen(b->conf, "we");
	assert_non_null(f);
	fprintf(f, "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
		   " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
		   "<busconfig>\n"
		   "  <type>session</type>\n"
		   "  <listen>unix:path=%s</listen>\n"
		   "  <auth>EXTERNAL</auth>\n"
		   "  <policy context=\"default\">\n"
		   "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
		   "    <allow eavesdrop=\"true\"/>\n"
		   "    <allow own=\"*\"/>\n"
		   "  </policy>\n"
		   "</busconfig>\n",
		b->sock);
	assert_int_equal(fclose(f), 0);
	bus_launch(b, fake_units);
	return true;
}

static void bus_stop(struct bus *b)
{
	stop_child(&b->fake);
	stop_child(&b->daemon);
	(void)unlink(b->sock);
	(void)unlink(b->conf);
	assert_int_equal(rmdir(b->dir), 0);
	unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
}

/* The test's own (blocking) line to the fake manager. */
static void fake_set(const char *unit, const char *active, const char *sub)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus *bus = NULL;
	int r;

	assert_int_equal(sd_bus_open_system(&bus), 0);
	r = sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
			       "org.workspaced.FakeSystemd1", "SetUnitState", &e, NULL, "sss", unit,
			       active, sub);
	if (r < 0)
		fail_msg("SetUnitState: %s", e.message ? e.message : strerror(-r));
	sd_bus_error_free(&e);
	sd_bus_flush_close_unref(bus);
}

static unsigned fake_subscribers(void)
{
	sd_bus_message *reply = NULL;
	sd_bus *bus = NULL;
	uint32_t n = 0;

	assert_int_equal(sd_bus_open_system(&bus), 0);
	assert_true(sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
				       "org.workspaced.FakeSystemd1", "Subscribers", NULL, &reply,
				       "") >= 0);
	assert_true(sd_bus_message_read(reply, "u", &n) >= 0);
	sd_bus_message_unref(reply);
	sd_bus_flush_close_unref(bus);
	return n;
}

static void tick_cb(uv_timer_t *t)
{
}

static void ctx_init(struct ctx *c)
{
	memset(c, 0, sizeof(*c));
	assert_int_equal(uv_loop_init(&c->loop), 0);
	assert_int_equal(uv_timer_init(&c->loop, &c->tick), 0);
	assert_int_equal(unitstate_new(&c->loop, on_changed, c, &c->us), 0);
}

static void ctx_done(struct ctx *c)
{
	unitstate_free(c->us);
	uv_close((uv_handle_t *)&c->tick, NULL);
	assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&c->loop), 0);
}

static bool state_is(struct ctx *c, const char *unit, const char *active, const char *sub)
{
	const char *a, *s;

	unitstate_get(c->us, unit, &a, &s);
	return strcmp(a, active) == 0 && strcmp(s, sub) == 0;
}

static bool saw_change(struct ctx *c, size_t from, const char *unit, const char *active,
		       const char *sub)
{
	for (size_t i = from; i < c->n_changes; i++)
		if (strcmp(c->changes[i].unit, unit) == 0 &&
		    strcmp(c->changes[i].active, active) == 0 && strcmp(c->changes[i].sub, sub) == 0)
			return true;
	return false;
}

/* Runs the loop until @unit has the state (or fails after 5 s). */
static void run_until_state(struct ctx *c, const char *unit, const char *active, const char *sub)
{
	uint64_t end = now_ms() + 5000;

	assert_int_equal(uv_timer_start(&c->tick, tick_cb, 20, 20), 0);
	while (!state_is(c, unit, active, sub)) {
		if (now_ms() > end) {
			const char *a, *s;

			unitstate_get(c->us, unit, &a, &s);
			fail_msg("%s is %s/%s, not %s/%s", unit, a, s, active, sub);
		}
		uv_run(&c->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&c->tick);
}

static void test_unit_name(void **state)
{
	char *s = NULL;

	assert_int_equal(unitstate_unit_name("vm", "a1", &s), 0);
	assert_string_equal(s, "microvm@a1.service");
	free(s);
	assert_int_equal(unitstate_unit_name("container", "dev", &s), 0);
	assert_string_equal(s, "container@dev.service");
	free(s);
	assert_int_equal(unitstate_unit_name("incus", "x", &s), 0);
	assert_string_equal(s, "incus-workspace-x.service");
	free(s);
	s = NULL;
	assert_int_equal(unitstate_unit_name("jail", "x", &s), -EINVAL);
	assert_null(s);
}

static void test_no_bus(void **state)
{
	const char *units[] = { DEV, VM };
	struct ctx c;
	uint64_t t0;

	assert_int_equal(setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/ws-test/bus", 1),
			 0);
	ctx_init(&c);
	assert_int_equal(unitstate_watch(c.us, units, 2), 0);
	/* nothing keeps the loop alive, nothing fails, everything is unknown */
	t0 = now_ms();
	assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
	assert_true(now_ms() - t0 < 500);
	assert_false(unitstate_connected(c.us));
	assert_true(state_is(&c, DEV, "unknown", "unknown"));
	assert_true(state_is(&c, VM, "unknown", "unknown"));
	assert_true(state_is(&c, "other.service", "unknown", "unknown"));
	assert_int_equal(c.n_changes, 0);
	ctx_done(&c);
	unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
}

static int iterations;

static void count_cb(uv_prepare_t *p)
{
	iterations++;
}

static void count_stop_cb(uv_timer_t *t)
{
	uv_prepare_stop(t->data);
}

static void test_states_and_changes(void **state)
{
	char *fake_units[] = { (char *)DEV "=active/running", (char *)VM "=inactive/dead", NULL };
	const char *units[] = { DEV, VM, INCUS };
	const char *fewer[] = { DEV, INCUS };
	struct ctx c;
	struct bus b;
	uv_prepare_t counter;
	size_t mark;

	if (!bus_start(&b, fake_units))
		skip();
	ctx_init(&c);
	assert_true(state_is(&c, DEV, "unknown", "unknown"));
	assert_int_equal(unitstate_watch(c.us, units, 3), 0);

	/* initial states; a unit systemd does not know is inactive/dead */
	run_until_state(&c, DEV, "active", "running");
	run_until_state(&c, VM, "inactive", "dead");
	run_until_state(&c, INCUS, "inactive", "dead");
	assert_true(unitstate_connected(c.us));
	assert_true(saw_change(&c, 0, DEV, "active", "running"));
	assert_true(fake_subscribers() >= 1);

	/* PropertiesChanged -> changed_cb with the new state */
	mark = c.n_changes;
	fake_set(DEV, "deactivating", "stop-sigterm");
	run_until_state(&c, DEV, "deactivating", "stop-sigterm");
	assert_true(saw_change(&c, mark, DEV, "deactivating", "stop-sigterm"));
	assert_int_equal(c.n_changes, mark + 1);

	/* a unit loaded later is picked up through UnitNew */
	mark = c.n_changes;
	fake_set(INCUS, "activating", "start");
	run_until_state(&c, INCUS, "activating", "start");
	assert_true(saw_change(&c, mark, INCUS, "activating", "start"));

	/* a unit no longer watched is unknown and silent; the others keep their state */
	assert_int_equal(unitstate_watch(c.us, fewer, 2), 0);
	assert_true(state_is(&c, VM, "unknown", "unknown"));
	assert_true(state_is(&c, DEV, "deactivating", "stop-sigterm"));
	mark = c.n_changes;
	fake_set(VM, "active", "running");
	fake_set(DEV, "inactive", "dead"); /* sent after VM's, so it arrives after it */
	run_until_state(&c, DEV, "inactive", "dead");
	assert_false(saw_change(&c, mark, VM, "active", "running"));
	assert_true(state_is(&c, VM, "unknown", "unknown"));

	/* the bus goes away: states become unknown, no crash, no busy loop */
	mark = c.n_changes;
	stop_child(&b.daemon);
	run_until_state(&c, DEV, "unknown", "unknown");
	run_until_state(&c, INCUS, "unknown", "unknown");
	assert_true(saw_change(&c, mark, DEV, "unknown", "unknown"));
	assert_false(unitstate_connected(c.us));
	assert_int_equal(uv_prepare_init(&c.loop, &counter), 0);
	assert_int_equal(uv_prepare_start(&counter, count_cb), 0);
	iterations = 0;
	c.tick.data = &counter;
	assert_int_equal(uv_timer_start(&c.tick, count_stop_cb, 300, 0), 0);
	assert_int_equal(uv_run(&c.loop, UV_RUN_DEFAULT), 0);
	assert_true(iterations < 10);
	uv_close((uv_handle_t *)&counter, NULL);
	c.tick.data = NULL;

	/* it comes back: the states are read again (and UnitNew followed again) */
	stop_child(&b.fake);
	bus_launch(&b, fake_units);
	run_until_state(&c, DEV, "active", "running");
	run_until_state(&c, INCUS, "inactive", "dead");
	assert_true(unitstate_connected(c.us));
	fake_set(INCUS, "active", "running");
	run_until_state(&c, INCUS, "active", "running");

	ctx_done(&c);
	bus_stop(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unit_name),
		cmocka_unit_test(test_no_bus),
		cmocka_unit_test(test_states_and_changes),
	};

	/* a broken pipe to a child that died must fail a test, not kill the binary */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
