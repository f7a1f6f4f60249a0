/* SPDX-License-Identifier: MIT */
/* Configuration: defaults from the environment, the config file, flags over the file,
 * reload keeping flags, and errors that name the flag or FILE:LINE. Each test gets a fresh
 * HOME in a temporary directory. */
#include "harness.h"

#include <sys/utsname.h>

#include "config.h"
#include "ipam.h"
#include "log.h"
#include "ws_proto.h"

struct env {
	char *home;
	char *cfgdir;
	char *cfgfile;
};

static void env_setup(struct env *e)
{
	e->home = h_tmpdir();
	assert_true(asprintf(&e->cfgdir, "%s/.config/workspaced", e->home) > 0);
	assert_true(asprintf(&e->cfgfile, "%s/config", e->cfgdir) > 0);
	setenv("HOME", e->home, 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
	unsetenv("XDG_CONFIG_HOME");
	unsetenv("XDG_STATE_HOME");
}

static void env_teardown(struct env *e)
{
	assert_int_equal(h_sh("rm -rf '%s'", e->home), 0);
	free(e->home);
	free(e->cfgdir);
	free(e->cfgfile);
}

static void write_config(struct env *e, const char *text)
{
	assert_int_equal(h_sh("mkdir -p '%s'", e->cfgdir), 0);
	h_write(e->cfgfile, text, strlen(text));
}

/* config_load() with a NULL-terminated list of arguments after argv[0]. */
static int load(struct ws_config *c, struct ws_err *err, ...)
{
	char *argv[32] = { "workspaced" };
	int argc = 1;
	va_list ap;

	va_start(ap, err);
	while ((argv[argc] = va_arg(ap, char *)))
		argc++;
	va_end(ap);
	return config_load(argc, argv, c, err);
}

static char *short_host(void)
{
	struct utsname u;

	assert_int_equal(uname(&u), 0);
	u.nodename[strcspn(u.nodename, ".")] = '\0';
	return strdup(u.nodename);
}

static void test_defaults(void **state)
{
	struct ws_config c;
	struct ws_err err = { 0 };
	struct ipam_cfg d;
	struct env e;
	char *want, *cwd = getcwd(NULL, 0), *host = short_host();

	env_setup(&e);
	assert_int_equal(load(&c, &err, "--repo", "./some//repo/", NULL), 0);
	assert_true(asprintf(&want, "%s/some/repo", cwd) > 0);
	assert_string_equal(c.repo, want); /* made absolute */
	free(want);
	assert_string_equal(c.machine, host);
	assert_true(asprintf(&want, "%s/sandboxed", e.home) > 0);
	assert_string_equal(c.sandbox_root, want);
	free(want);
	assert_string_equal(c.socket_path, "/run/user/1000/workspaced.sock");
	assert_string_equal(c.verify, "build");
	assert_true(asprintf(&want,
			     "nix build .#nixosConfigurations.%s.config.system.build.toplevel "
			     "--no-link",
			     host) > 0);
	assert_string_equal(c.build_command, want);
	free(want);
	assert_true(asprintf(&want,
			     "nix eval --raw .#nixosConfigurations.%s.config.system.build.toplevel"
			     ".drvPath",
			     host) > 0);
	assert_string_equal(c.eval_command, want);
	free(want);
	assert_true(asprintf(&want, "%s/.local/state/workspaced", e.home) > 0);
	assert_string_equal(c.state_dir, want);
	free(want);
	assert_null(c.config_file); /* a missing default file is fine */
	assert_null(c.group);
	assert_string_equal(c.privilege_command, "sudo");
	assert_int_equal(c.max_message, WS_MAX_MESSAGE_DEFAULT);
	assert_int_equal(c.log_level, LOG_LVL_INFO);
	ipam_cfg_default(&d);
	assert_memory_equal(&c.ipam, &d, sizeof(d));
	assert_null(c.check_files);
	assert_false(c.show_help);
	config_clear(&c);

	/* XDG_STATE_HOME and XDG_CONFIG_HOME when set */
	setenv("XDG_STATE_HOME", "/var/tmp/st", 1);
	setenv("XDG_CONFIG_HOME", e.home, 1);
	assert_int_equal(h_sh("mkdir -p '%s/workspaced' && echo 'machine = fromxdg' > "
			      "'%s/workspaced/config'",
			      e.home, e.home),
			 0);
	assert_int_equal(load(&c, &err, "--repo", "/r", NULL), 0);
	assert_string_equal(c.state_dir, "/var/tmp/st/workspaced");
	assert_string_equal(c.machine, "fromxdg");
	assert_true(asprintf(&want, "%s/workspaced/config", e.home) > 0);
	assert_string_equal(c.config_file, want);
	free(want);
	config_clear(&c);

	free(cwd);
	free(host);
	env_teardown(&e);
}

static void test_flags(void **state)
{
	struct ws_config c;
	struct ws_err err = { 0 };
	struct env e;

	env_setup(&e);
	assert_int_equal(load(&c, &err, "--repo", "/srv/flake", "--machine", "atlas",
			      "--sandbox-root", "/sb", "--socket", "/tmp/x.sock", "--verify",
			      "parse", "--build-command", "make", "--eval-command", "true",
			      "--state-dir", "/st", "-v", NULL),
			 0);
	assert_string_equal(c.repo, "/srv/flake");
	assert_string_equal(c.machine, "atlas");
	assert_string_equal(c.sandbox_root, "/sb");
	assert_string_equal(c.socket_path, "/tmp/x.sock");
	assert_string_equal(c.verify, "parse");
	assert_string_equal(c.build_command, "make");
	assert_string_equal(c.eval_command, "true");
	assert_string_equal(c.state_dir, "/st");
	assert_int_equal(c.log_level, LOG_LVL_DEBUG);
	config_clear(&c);

	assert_int_equal(load(&c, &err, "--repo=/r", "-q", NULL), 0);
	assert_int_equal(c.log_level, LOG_LVL_WARNING);
	config_clear(&c);
	assert_int_equal(load(&c, &err, "--repo", "/r", "-qq", NULL), 0);
	assert_int_equal(c.log_level, LOG_LVL_ERROR);
	config_clear(&c);

	/* --check: everything after it is a file; no repository needed */
	unsetenv("XDG_RUNTIME_DIR");
	assert_int_equal(load(&c, &err, "-v", "--check", "a.nix", "--repo", NULL), 0);
	assert_non_null(c.check_files);
	assert_string_equal(c.check_files[0], "a.nix");
	assert_string_equal(c.check_files[1], "--repo");
	assert_null(c.check_files[2]);
	config_clear(&c);

	assert_int_equal(load(&c, &err, "--help", NULL), 0);
	assert_true(c.show_help);
	config_clear(&c);
	assert_int_equal(load(&c, &err, "--version", NULL), 0);
	assert_true(c.show_version);
	config_clear(&c);
	env_teardown(&e);
}

static void test_file_and_precedence(void **state)
{
	struct ws_config c;
	struct ws_err err = { 0 };
	struct env e;
	char *want;
	uint32_t ip;

	env_setup(&e);
	write_config(&e, "# workspaced settings\n"
			 "repo = nixos-config\n"
			 "  machine=  filehost  \n"
			 "\n"
			 "verify = parse\n"
			 "build-command = nix build .#nixosConfigurations.filehost.config.system.build.toplevel\n"
			 "sandbox-root = ~/boxes\n"
			 "subnet = 10.20.0.0/16\n"
			 "range.vm = 10.20.1.10-10.20.1.20\n"
			 "group = root\n"
			 "privilege-command = \"doas\"\n"
			 "max-message-bytes = 2M\n"
			 "log-level = debug\n");
	assert_int_equal(load(&c, &err, "--machine", "flaghost", "--verify", "none", NULL), 0);
	assert_string_equal(c.config_file, e.cfgfile);
	assert_true(asprintf(&want, "%s/nixos-config", e.cfgdir) > 0);
	assert_string_equal(c.repo, want); /* relative to the file's directory */
	free(want);
	assert_string_equal(c.machine, "flaghost"); /* the flag wins */
	assert_string_equal(c.verify, "none");
	/* '#' inside a value is not a comment */
	assert_string_equal(c.build_command,
			    "nix build .#nixosConfigurations.filehost.config.system.build.toplevel");
	assert_true(asprintf(&want, "%s/boxes", e.home) > 0);
	assert_string_equal(c.sandbox_root, want);
	free(want);
	assert_int_equal(c.ipam.prefix, 16);
	assert_int_equal(ipam_parse_ip("10.20.0.0", &ip), 0);
	assert_int_equal(c.ipam.network, ip);
	assert_int_equal(ipam_parse_ip("10.20.1.10", &ip), 0);
	assert_int_equal(c.ipam.first[WS_TYPE_VM], ip);
	/* ranges not given follow the subnet */
	assert_int_equal(ipam_parse_ip("10.20.0.50", &ip), 0);
	assert_int_equal(c.ipam.first[WS_TYPE_CONTAINER], ip);
	assert_string_equal(c.group, "root");
	assert_string_equal(c.privilege_command, "doas");
	assert_int_equal(c.max_message, 2 * 1024 * 1024);
	assert_int_equal(c.log_level, LOG_LVL_DEBUG);
	config_clear(&c);

	/* an explicit --config elsewhere; -q beats the file's log level */
	{
		char *other;

		assert_true(asprintf(&other, "%s/other.conf", e.home) > 0);
		h_write(other, "repo = /abs\nlog-level = debug\n", 30);
		assert_int_equal(load(&c, &err, "--config", other, "-q", NULL), 0);
		assert_string_equal(c.config_file, other);
		assert_string_equal(c.repo, "/abs");
		assert_int_equal(c.log_level, LOG_LVL_WARNING);
		config_clear(&c);
		free(other);
	}
	env_teardown(&e);
}

/* Loads with the given config text and arguments; expects failure whose message contains
 * every one of @needles (NULL-terminated after the arguments' NULL). */
static void expect_error(struct env *e, const char *text, const char *const *args,
			 const char *const *needles)
{
	char *argv[16] = { "workspaced" };
	struct ws_config c;
	struct ws_err err = { 0 };
	int argc = 1;

	if (text)
		write_config(e, text);
	for (; *args; args++)
		argv[argc++] = (char *)(uintptr_t)*args;
	assert_true(config_load(argc, argv, &c, &err) < 0);
	for (; *needles; needles++)
		if (!strstr(err.message, *needles))
			fail_msg("message '%s' lacks '%s'", err.message, *needles);
	ws_err_clear(&err);
	config_clear(&c);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void test_errors(void **state)
{
	struct ws_config c;
	struct ws_err err = { 0 };
	struct env e;
	char *where, longsock[160];

	env_setup(&e);
	assert_true(asprintf(&where, "%s:3:", e.cfgfile) > 0);
	expect_error(&e, "repo = /r\n\nfoo = 1\n", ARGS("-v"), ARGS(where, "unknown key 'foo'"));
	/* file and line travel in the error too */
	write_config(&e, "repo = /r\n\nfoo = 1\n");
	assert_true(load(&c, &err, NULL) < 0);
	assert_string_equal(err.file, e.cfgfile);
	assert_int_equal(err.line, 3);
	ws_err_clear(&err);
	config_clear(&c);
	free(where);

	assert_true(asprintf(&where, "%s:2:", e.cfgfile) > 0);
	expect_error(&e, "repo = /r\njust words\n", ARGS("-v"), ARGS(where, "key = value"));
	expect_error(&e, "repo = /r\nverify = fast\n", ARGS("-v"), ARGS(where, "'fast'", "build"));
	expect_error(&e, "repo = /r\nrepo = /s\n", ARGS("-v"), ARGS(where, "already set on line 1"));
	expect_error(&e, "repo = /r\nsubnet = 10.0.0.0/33\n", ARGS("-v"), ARGS(where, "subnet"));
	expect_error(&e, "repo = /r\nrange.vm = 192.168.99.10-192.168.99.20\n", ARGS("-v"),
		     ARGS(where, "range"));
	expect_error(&e, "repo = /r\ngroup = no-such-group-here\n", ARGS("-v"),
		     ARGS(where, "unknown group"));
	expect_error(&e, "repo = /r\nmax-message-bytes = lots\n", ARGS("-v"),
		     ARGS(where, "max-message-bytes"));
	expect_error(&e, "repo = /r\nlog-level = loud\n", ARGS("-v"), ARGS(where, "loud"));
	expect_error(&e, "repo = /r\nmachine = ../etc\n", ARGS("-v"), ARGS(where, "machine"));
	expect_error(&e, "repo = /r\nsocket =\n", ARGS("-v"), ARGS(where, "needs a value"));
	free(where);
	assert_int_equal(unlink(e.cfgfile), 0);

	expect_error(&e, NULL, ARGS("--repo", "/r", "--verify", "fast"), ARGS("--verify", "fast"));
	expect_error(&e, NULL, ARGS("--repo", "/r", "--bogus"), ARGS("unknown option '--bogus'"));
	expect_error(&e, NULL, ARGS("--repo", "/r", "-x"), ARGS("unknown option '-x'"));
	expect_error(&e, NULL, ARGS("--repo"), ARGS("--repo needs a value"));
	expect_error(&e, NULL, ARGS("--repo", "/r", "stray"), ARGS("unexpected argument 'stray'"));
	expect_error(&e, NULL, ARGS("--check"), ARGS("--check needs"));
	expect_error(&e, NULL, ARGS("--verify", "none"), ARGS("--repo"));
	expect_error(&e, NULL, ARGS("--repo", "/r", "--config", "/nonexistent/ws.conf"),
		     ARGS("/nonexistent/ws.conf", "does not exist"));

	/* socket path over 107 bytes: names the path and the limit */
	memset(longsock, 'x', sizeof(longsock) - 1);
	longsock[0] = '/';
	longsock[sizeof(longsock) - 1] = '\0';
	expect_error(&e, NULL, ARGS("--repo", "/r", "--socket", longsock), ARGS(longsock, "107"));
	setenv("XDG_RUNTIME_DIR", longsock, 1);
	expect_error(&e, NULL, ARGS("--repo", "/r"), ARGS(longsock, "107"));
	unsetenv("XDG_RUNTIME_DIR");
	expect_error(&e, NULL, ARGS("--repo", "/r"), ARGS("XDG_RUNTIME_DIR", "--socket"));
	/* but --socket makes it fine */
	assert_int_equal(load(&c, &err, "--repo", "/r", "--socket", "/s.sock", NULL), 0);
	config_clear(&c);
	env_teardown(&e);
}

static void test_reload(void **state)
{
	struct ws_config c;
	struct ws_err err = { 0 };
	struct env e;

	env_setup(&e);
	write_config(&e, "repo = /r\nmachine = one\nverify = parse\n");
	assert_int_equal(load(&c, &err, "--verify", "none", "--state-dir", "st", NULL), 0);
	assert_string_equal(c.machine, "one");
	assert_string_equal(c.verify, "none");

	write_config(&e, "repo = /r2\nmachine = two\nverify = eval\nstate-dir = /elsewhere\n");
	assert_int_equal(config_reload(&c, &err), 0);
	assert_string_equal(c.repo, "/r2");
	assert_string_equal(c.machine, "two");
	assert_string_equal(c.verify, "none");   /* flags keep their values */
	assert_non_null(strstr(c.state_dir, "/st")); /* from the flag, made absolute */
	assert_string_equal(c.state_dir + strlen(c.state_dir) - 3, "/st");
	assert_non_null(strstr(c.build_command, ".two.")); /* follows the new machine */

	/* a broken file on reload leaves everything as it was */
	write_config(&e, "repo = /r3\nmachine = three\nwhat\n");
	assert_true(config_reload(&c, &err) < 0);
	assert_non_null(strstr(err.message, ":3:"));
	ws_err_clear(&err);
	assert_string_equal(c.machine, "two");
	assert_string_equal(c.repo, "/r2");

	/* the file disappearing: the defaults and flags remain, repo is then missing */
	assert_int_equal(unlink(e.cfgfile), 0);
	assert_true(config_reload(&c, &err) < 0);
	assert_non_null(strstr(err.message, "--repo"));
	ws_err_clear(&err);
	assert_string_equal(c.machine, "two");
	config_clear(&c);
	env_teardown(&e);
}

static void test_usage(void **state)
{
	static const char *const want[] = { "--repo DIR", "--machine NAME", "--sandbox-root DIR",
					    "--socket PATH", "--verify LEVEL",
					    "--build-command CMD", "--eval-command CMD",
					    "--state-dir DIR", "--config FILE", "--verbose",
					    "--quiet", "--help", "--version", "--check FILE",
					    "~/sandboxed", "$XDG_RUNTIME_DIR/workspaced.sock",
					    "default: build", "range.incus", "privilege-command",
					    "max-message-bytes", "log-level", "group" };
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct env e;

	env_setup(&e);
	config_usage(f);
	fclose(f);
	for (size_t i = 0; i < WS_ARRAY_SIZE(want); i++)
		if (!strstr(buf, want[i]))
			fail_msg("--help lacks '%s'", want[i]);
	assert_non_null(strstr(buf, e.cfgfile)); /* the config file path, resolved */
	free(buf);
	env_teardown(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_file_and_precedence),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_usage),
	};

	log_set_level(LOG_LVL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
