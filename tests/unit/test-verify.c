/* SPDX-License-Identifier: MIT */
/* Tests for verify.c: real child processes on a real libuv loop (nix-instantiate when it is
 * installed), streamed lines, the log tail, cancellation, a scrubbed environment and no
 * inherited descriptors. Every test runs its loop to the end and needs uv_loop_close() == 0. */
#include <stdbool.h>

#include "harness.h"

#include <dirent.h>
#include <signal.h>
#include <time.h>

#include <json-c/json.h>
#include <uv.h>

#include "verify.h"
#include "ws_macros.h"

struct ctx {
	int done_calls;
	int ok;
	struct json_object *result; /* owned */
	char lines[65536];          /* every streamed line, each followed by '\n' */
	size_t lines_len;
	int n_lines;
	/* for the non-blocking test */
	uv_timer_t ticker;
	int ticks;
	int cancel_at_tick;
	struct verify_job *job;
	uint64_t started, ended;
	uv_loop_t *loop;
};

static void on_line(void *userdata, const char *line)
{
	struct ctx *c = userdata;
	size_t n = strlen(line);

	assert_null(strchr(line, '\n'));
	if (c->lines_len + n + 2 < sizeof(c->lines)) {
		memcpy(c->lines + c->lines_len, line, n);
		c->lines_len += n;
		c->lines[c->lines_len++] = '\n';
		c->lines[c->lines_len] = '\0';
	}
	c->n_lines++;
}

static void on_done(void *userdata, int ok, struct json_object *result)
{
	struct ctx *c = userdata;

	c->done_calls++;
	c->ok = ok;
	c->result = result;
	c->job = NULL;
	if (c->loop)
		c->ended = uv_now(c->loop);
}

static void ctx_clear(struct ctx *c)
{
	json_object_put(c->result);
	memset(c, 0, sizeof(*c));
}

static const char *res_str(struct ctx *c, const char *key)
{
	struct json_object *v = NULL;

	if (!json_object_object_get_ex(c->result, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static bool res_int(struct ctx *c, const char *key, int *ret)
{
	struct json_object *v = NULL;

	if (!json_object_object_get_ex(c->result, key, &v))
		return false;
	assert_true(json_object_is_type(v, json_type_int));
	*ret = json_object_get_int(v);
	return true;
}

static bool res_bool(struct ctx *c, const char *key)
{
	struct json_object *v = NULL;

	assert_true(json_object_object_get_ex(c->result, key, &v));
	assert_true(json_object_is_type(v, json_type_boolean));
	return json_object_get_boolean(v);
}

static uint64_t h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Starts @req, runs the loop to completion, and checks that done ran exactly once. */
static void run(const struct verify_req *req, struct ctx *c)
{
	uv_loop_t loop;
	struct verify_job *job = NULL;

	assert_int_equal(uv_loop_init(&loop), 0);
	c->loop = &loop;
	assert_int_equal(verify_start(&loop, req, on_done, on_line, c, &job), 0);
	assert_non_null(job);
	/* never from inside verify_start */
	assert_int_equal(c->done_calls, 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(c->done_calls, 1);
	assert_non_null(c->result);
	assert_int_equal(uv_loop_close(&loop), 0);
	c->loop = NULL;
	/* the result says what ok says */
	assert_int_equal(res_bool(c, "ok"), c->ok != 0);
	assert_non_null(res_str(c, "message"));
}

static void test_levels(void **state)
{
	assert_int_equal(verify_level_from_string("none"), VERIFY_NONE);
	assert_int_equal(verify_level_from_string("parse"), VERIFY_PARSE);
	assert_int_equal(verify_level_from_string("eval"), VERIFY_EVAL);
	assert_int_equal(verify_level_from_string("build"), VERIFY_BUILD);
	assert_int_equal(verify_level_from_string("Build"), -EINVAL);
	assert_int_equal(verify_level_from_string(""), -EINVAL);
	assert_int_equal(verify_level_from_string(NULL), -EINVAL);
	assert_string_equal(verify_level_to_string(VERIFY_EVAL), "eval");
}

static void test_none(void **state)
{
	struct verify_req req = { .level = VERIFY_NONE };
	struct ctx c = { 0 };
	int st;

	run(&req, &c);
	assert_true(c.ok);
	assert_string_equal(res_str(&c, "level"), "none");
	assert_false(res_int(&c, "exitStatus", &st));
	ctx_clear(&c);
}

static void test_parse_ok(void **state)
{
	const char *files[] = { WS_TEST_DATA "/fixtures/nix/01-no-block.nix",
				WS_TEST_DATA "/fixtures/nix/09-mixed-merge.nix" };
	struct verify_req req = { .level = VERIFY_PARSE, .cwd = WS_TEST_DATA, .files = files,
				  .n_files = 2 };
	struct ctx c = { 0 };
	int st = -1;

	if (!h_have("nix-instantiate"))
		skip();
	run(&req, &c);
	assert_true(c.ok);
	assert_string_equal(res_str(&c, "level"), "parse");
	assert_true(res_int(&c, "exitStatus", &st));
	assert_int_equal(st, 0);
	assert_null(res_str(&c, "log"));
	ctx_clear(&c);
}

static void test_parse_bad(void **state)
{
	const char *files[] = { WS_TEST_DATA "/fixtures/nix/01-no-block.nix",
				WS_TEST_DATA "/fixtures/nix/14-unparsable.nix",
				WS_TEST_DATA "/fixtures/nix/02-nested-block.nix" };
	struct verify_req req = { .level = VERIFY_PARSE, .files = files, .n_files = 3 };
	struct ctx c = { 0 };
	int st = 0;

	if (!h_have("nix-instantiate"))
		skip();
	run(&req, &c);
	assert_false(c.ok);
	assert_true(res_int(&c, "exitStatus", &st));
	assert_int_not_equal(st, 0);
	assert_string_equal(res_str(&c, "file"), files[1]);
	assert_non_null(strstr(res_str(&c, "message"), "14-unparsable.nix"));
	/* nix-instantiate's diagnostic, with the position, is in the tail and was streamed */
	assert_non_null(strstr(res_str(&c, "log"), "syntax error"));
	assert_non_null(strstr(res_str(&c, "log"), "14-unparsable.nix:7"));
	assert_non_null(strstr(c.lines, "syntax error"));
	ctx_clear(&c);
}

static void test_parse_missing_program(void **state)
{
	const char *files[] = { WS_TEST_DATA "/fixtures/nix/01-no-block.nix" };
	const char *progs[] = { "ws-no-such-nix-instantiate", "/nonexistent/nix-instantiate" };

	for (size_t i = 0; i < 2; i++) {
		struct verify_req req = { .level = VERIFY_PARSE, .files = files, .n_files = 1,
					  .nix_instantiate = progs[i] };
		struct ctx c = { 0 };
		int st;

		run(&req, &c);
		assert_false(c.ok);
		assert_non_null(strstr(res_str(&c, "message"), "not found"));
		assert_non_null(strstr(res_str(&c, "message"), progs[i]));
		assert_non_null(strstr(res_str(&c, "message"), "--verify none"));
		/* nothing ran, so there is no exit status to report */
		assert_false(res_int(&c, "exitStatus", &st));
		ctx_clear(&c);
	}
}

static void test_build_lines_and_status(void **state)
{
	struct verify_req req = { .level = VERIFY_BUILD, .cwd = "/",
				  .build_command = "echo line1; echo line2 >&2; printf 'partial'; "
						   "exit 3" };
	struct ctx c = { 0 };
	int st = 0;

	run(&req, &c);
	assert_false(c.ok);
	assert_string_equal(res_str(&c, "level"), "build");
	assert_true(res_int(&c, "exitStatus", &st));
	assert_int_equal(st, 3);
	assert_false(res_int(&c, "signal", &st));
	assert_string_equal(c.lines, "line1\nline2\npartial\n");
	assert_int_equal(c.n_lines, 3);
	assert_string_equal(res_str(&c, "log"), "line1\nline2\npartial\n");
	assert_non_null(strstr(res_str(&c, "message"), "status 3"));
	ctx_clear(&c);
}

static void test_eval_ok_in_cwd(void **state)
{
	struct verify_req req = { .level = VERIFY_EVAL, .eval_command = "pwd" };
	struct ctx c = { 0 };
	char dir[4096], base[256];
	int st = -1;

	snprintf(dir, sizeof(dir), "%s/ws-verify-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	assert_non_null(mkdtemp(dir));
	req.cwd = dir;
	snprintf(base, sizeof(base), "%s\n", strrchr(dir, '/'));

	run(&req, &c);
	assert_true(c.ok);
	assert_true(res_int(&c, "exitStatus", &st));
	assert_int_equal(st, 0);
	assert_null(res_str(&c, "log"));
	/* the command ran in req->cwd */
	assert_non_null(strstr(c.lines, base));
	assert_int_equal(rmdir(dir), 0);
	ctx_clear(&c);
}

static void test_tail_is_bounded(void **state)
{
	struct verify_req req = { .level = VERIFY_BUILD, .cwd = "/",
				  .build_command = "i=0; while [ $i -lt 500 ]; do i=$((i+1)); "
						   "echo \"line $i\"; done; exit 1" };
	struct ctx c = { 0 };
	const char *log;
	int n = 0;

	run(&req, &c);
	assert_false(c.ok);
	assert_int_equal(c.n_lines, 500);
	log = res_str(&c, "log");
	for (const char *p = log; *p; p++)
		n += *p == '\n';
	assert_int_equal(n, 40);
	assert_true(strlen(log) <= 8192);
	assert_non_null(strstr(log, "line 500\n"));
	assert_non_null(strstr(log, "line 461\n"));
	assert_null(strstr(log, "line 460\n"));
	ctx_clear(&c);
}

static void tick_cb(uv_timer_t *t)
{
	struct ctx *c = t->data;

	c->ticks++;
	if (c->ticks == c->cancel_at_tick && c->job)
		verify_cancel(c->job);
	if (!c->job)
		uv_close((uv_handle_t *)t, NULL);
}

static void test_long_command_does_not_block(void **state)
{
	/* the shell forks sleep (no exec): cancel must end both */
	struct verify_req req = { .level = VERIFY_BUILD, .cwd = "/",
				  .build_command = "sleep 5.0123; echo after" };
	struct ctx c = { 0 };
	uv_loop_t loop;
	int sig = 0, st;

	assert_int_equal(uv_loop_init(&loop), 0);
	c.loop = &loop;
	c.cancel_at_tick = 5;
	c.ticker.data = &c;
	assert_int_equal(uv_timer_init(&loop, &c.ticker), 0);
	assert_int_equal(uv_timer_start(&c.ticker, tick_cb, 40, 40), 0);
	c.started = uv_now(&loop);
	assert_int_equal(verify_start(&loop, &req, on_done, on_line, &c, &c.job), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);

	/* the timer kept firing while the child ran; cancel ended it long before 5 s */
	assert_int_equal(c.done_calls, 1);
	assert_true(c.ticks >= 5);
	assert_true(c.ended - c.started < 2500);
	assert_false(c.ok);
	assert_true(res_int(&c, "signal", &sig));
	assert_int_equal(sig, SIGTERM);
	assert_true(res_int(&c, "exitStatus", &st));
	assert_int_equal(st, 128 + SIGTERM);
	assert_non_null(strstr(res_str(&c, "message"), "cancelled"));
	/* no sleep left behind */
	assert_null(strstr(c.lines, "after"));
	assert_int_not_equal(h_sh("pgrep -f 'sleep 5[.]0123' >/dev/null"), 0);
	ctx_clear(&c);
}

static void test_background_leftover(void **state)
{
	/* exits at once but leaves a child holding the pipe: not waited for, and not left */
	struct verify_req req = { .level = VERIFY_BUILD, .cwd = "/",
				  .build_command = "sleep 7.0123 & echo started" };
	struct ctx c = { 0 };
	uint64_t t0;
	int st = -1;

	t0 = h_now_ms();
	run(&req, &c);
	assert_true(h_now_ms() - t0 < 3000);
	assert_true(c.ok);
	assert_true(res_int(&c, "exitStatus", &st));
	assert_int_equal(st, 0);
	assert_string_equal(c.lines, "started\n");
	assert_int_not_equal(h_sh("pgrep -f 'sleep 7[.]0123' >/dev/null"), 0);
	ctx_clear(&c);
}

static void test_cancel_before_start(void **state)
{
	struct verify_req req = { .level = VERIFY_BUILD, .cwd = "/", .build_command = "true" };
	struct ctx c = { 0 };
	uv_loop_t loop;
	struct verify_job *job = NULL;
	int st;

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(verify_start(&loop, &req, on_done, NULL, &c, &job), 0);
	verify_cancel(job);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(c.done_calls, 1);
	assert_false(c.ok);
	assert_false(res_int(&c, "exitStatus", &st));
	ctx_clear(&c);
}

static void test_environment_scrubbed(void **state)
{
	struct verify_req req = { .level = VERIFY_EVAL, .cwd = "/", .eval_command = "env" };
	struct ctx c = { 0 };

	assert_int_equal(setenv("NOTIFY_SOCKET", "/run/ws-test-notify", 1), 0);
	assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
	assert_int_equal(setenv("LISTEN_PID", "1", 1), 0);
	assert_int_equal(setenv("LISTEN_FDNAMES", "ws", 1), 0);
	assert_int_equal(setenv("WATCHDOG_USEC", "1000000", 1), 0);
	assert_int_equal(setenv("WATCHDOG_PID", "1", 1), 0);
	assert_int_equal(setenv("WS_TEST_KEPT", "yes", 1), 0);
	assert_int_equal(setenv("NOTIFY_SOCKETX", "kept-too", 1), 0);
	run(&req, &c);
	assert_true(c.ok);
	assert_non_null(strstr(c.lines, "\nWS_TEST_KEPT=yes\n"));
	assert_non_null(strstr(c.lines, "NOTIFY_SOCKETX=kept-too\n"));
	assert_null(strstr(c.lines, "NOTIFY_SOCKET="));
	assert_null(strstr(c.lines, "LISTEN_"));
	assert_null(strstr(c.lines, "WATCHDOG_"));
	for (const char *v = "NOTIFY_SOCKET\0LISTEN_FDS\0LISTEN_PID\0LISTEN_FDNAMES\0"
			     "WATCHDOG_USEC\0WATCHDOG_PID\0WS_TEST_KEPT\0NOTIFY_SOCKETX\0";
	     *v; v += strlen(v) + 1)
		unsetenv(v);
	ctx_clear(&c);
}

/* Descriptors this process got without O_CLOEXEC from whoever started it: those are not
 * ours to close, and any child inherits them. Returns a bitmap of fds below 1024. */
static void foreign_fds(unsigned char *map)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;

	assert_non_null(d);
	memset(map, 0, 1024);
	while ((de = readdir(d))) {
		int n = atoi(de->d_name);
		int fl;

		if (de->d_name[0] == '.' || n < 3 || n >= 1024 || n == dirfd(d))
			continue;
		fl = fcntl(n, F_GETFD);
		if (fl >= 0 && !(fl & FD_CLOEXEC))
			map[n] = 1;
	}
	closedir(d);
}

static void test_no_inherited_fds(void **state)
{
	struct verify_req req = { .level = VERIFY_EVAL, .cwd = "/",
				  .eval_command = "readlink /proc/self/fd/0; ls /proc/self/fd" };
	struct ctx c = { 0 };
	unsigned char foreign[1024];
	int fd, fd50, lowest_free = 3, seen = 0;
	char *save = NULL;

	/* descriptors of ours, opened the way the daemon opens everything */
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	fd50 = fcntl(fd, F_DUPFD_CLOEXEC, 50);
	assert_true(fd50 >= 50);
	foreign_fds(foreign);
	assert_false(foreign[fd50]);
	/* the child's `ls` reads the directory through the lowest free descriptor */
	while (foreign[lowest_free])
		lowest_free++;

	run(&req, &c);
	(void)close(fd);
	(void)close(fd50);
	assert_true(c.ok);
	/* stdin is /dev/null */
	assert_true(strncmp(c.lines, "/dev/null\n", 10) == 0);
	for (char *tok = strtok_r(c.lines + 10, "\n", &save); tok;
	     tok = strtok_r(NULL, "\n", &save)) {
		int n = atoi(tok);

		if (n <= 2)
			seen |= 1 << n;
		else if (n != lowest_free && (n >= 1024 || !foreign[n]))
			fail_msg("descriptor %d was inherited by the child", n);
	}
	assert_int_equal(seen, 7);
	ctx_clear(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_levels),
		cmocka_unit_test(test_none),
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_missing_program),
		cmocka_unit_test(test_build_lines_and_status),
		cmocka_unit_test(test_eval_ok_in_cwd),
		cmocka_unit_test(test_tail_is_bounded),
		cmocka_unit_test(test_long_command_does_not_block),
		cmocka_unit_test(test_background_leftover),
		cmocka_unit_test(test_cancel_before_start),
		cmocka_unit_test(test_environment_scrubbed),
		cmocka_unit_test(test_no_inherited_fds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
