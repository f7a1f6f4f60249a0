/* SPDX-License-Identifier: MIT */
/* The daemon's configuration: defaults, then the config file, then command-line flags,
 * each value checked where it is read so that errors name the flag or FILE:LINE. The
 * command line is kept so a reload (SIGHUP) re-reads the file under the same flags. It
 * does not act on the values (no socket, no repository access): main does. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "log.h"
#include "ws_proto.h"

#define CONFIG_FILE_MAX (64 * 1024)
#define CONFIG_MAX_MESSAGE_MIN 1024
#define CONFIG_MAX_MESSAGE_MAX (256u * 1024 * 1024)

/* Every setting, in the order values are applied (the subnet before the ranges). */
enum cfg_key {
	K_REPO,
	K_MACHINE,
	K_SANDBOX_ROOT,
	K_SOCKET,
	K_VERIFY,
	K_BUILD_COMMAND,
	K_EVAL_COMMAND,
	K_STATE_DIR,
	K_SUBNET,
	K_RANGE_VM,
	K_RANGE_CONTAINER,
	K_RANGE_INCUS,
	K_GROUP,
	K_PRIVILEGE_COMMAND,
	K_MAX_MESSAGE,
	K_LOG_LEVEL,
	K_COUNT
};

static const char *const key_names[K_COUNT] = {
	[K_REPO] = "repo",
	[K_MACHINE] = "machine",
	[K_SANDBOX_ROOT] = "sandbox-root",
	[K_SOCKET] = "socket",
	[K_VERIFY] = "verify",
	[K_BUILD_COMMAND] = "build-command",
	[K_EVAL_COMMAND] = "eval-command",
	[K_STATE_DIR] = "state-dir",
	[K_SUBNET] = "subnet",
	[K_RANGE_VM] = "range.vm",
	[K_RANGE_CONTAINER] = "range.container",
	[K_RANGE_INCUS] = "range.incus",
	[K_GROUP] = "group",
	[K_PRIVILEGE_COMMAND] = "privilege-command",
	[K_MAX_MESSAGE] = "max-message-bytes",
	[K_LOG_LEVEL] = "log-level",
};

/* What the command line said; kept for config_reload(). */
struct config_flags {
	char *val[K_COUNT];    /* owned; absolute for paths; NULL when not given */
	char *config_file;     /* owned; --config, absolute */
	char **check;          /* owned, NULL-terminated; --check FILE... */
	int verbose, quiet;
	bool help, version;
};

/* Where a value came from, for error messages: "--repo" or "FILE:LINE". */
struct origin {
	const char *file;      /* NULL: the command line */
	unsigned line;
	enum cfg_key key;
};

static int bad(struct ws_err *err, const struct origin *o, const char *fmt, ...) WS_PRINTF(3, 4);
static int bad(struct ws_err *err, const struct origin *o, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (o && o->file)
		return ws_fail_at(err, -EINVAL, 0, o->file, (int)o->line, 0, "%s:%u: %s", o->file,
				  o->line, msg);
	if (o)
		return ws_fail(err, -EINVAL, 0, "--%s: %s", key_names[o->key], msg);
	return ws_fail(err, -EINVAL, 0, "%s", msg);
}

static const char *home_dir(void)
{
	const char *h = getenv("HOME");
	struct passwd *pw;

	if (h && h[0] == '/')
		return h;
	pw = getpwuid(getuid());
	return pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
}

/* An absolute variable from the environment, or NULL (the XDG rules ignore relative ones). */
static const char *abs_env(const char *name)
{
	const char *v = getenv(name);

	return v && v[0] == '/' ? v : NULL;
}

/* Drops "./" components and trailing slashes; the rest is kept as written. */
static void tidy_path(char *p)
{
	char *r = p, *w = p;
	size_t n;

	while (*r) {
		if (r[0] == '.' && r[1] == '/' && (r == p || r[-1] == '/')) {
			r += 2;
			continue;
		}
		if (r[0] == '/' && w > p && w[-1] == '/') {
			r++;
			continue;
		}
		*w++ = *r++;
	}
	*w = '\0';
	n = strlen(p);
	if (n >= 2 && p[n - 1] == '.' && p[n - 2] == '/')
		p[n - 1] = '\0', n--;
	while (n > 1 && p[n - 1] == '/')
		p[--n] = '\0';
}

/* Makes @in absolute: "~/x" under the home directory, a relative path under @base (the
 * working directory for flags, the config file's directory for the file). */
static int make_abs(const char *in, const char *base, char **ret)
{
	WS_AUTOFREE char *cwd = NULL;
	char *out = NULL;
	int n;

	if (in[0] == '~' && (in[1] == '/' || in[1] == '\0')) {
		const char *h = home_dir();

		if (!h)
			return -ENOENT;
		n = asprintf(&out, "%s/%s", h, in + 1);
	} else if (in[0] == '/') {
		n = (out = strdup(in)) ? 0 : -1;
	} else {
		if (!base) {
			cwd = getcwd(NULL, 0);
			if (!cwd)
				return -errno;
			base = cwd;
		}
		n = asprintf(&out, "%s/%s", base, in);
	}
	if (n < 0)
		return -ENOMEM;
	tidy_path(out);
	*ret = out;
	return 0;
}

static int set_str(char **field, const char *v)
{
	char *s = strdup(v);

	if (!s)
		return -ENOMEM;
	free(*field);
	*field = s;
	return 0;
}

static bool machine_name_ok(const char *s)
{
	if (!*s || *s == '.' || *s == '-' || strlen(s) > 253)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static int parse_level(const char *v)
{
	if (!strcmp(v, "error"))
		return LOG_LVL_ERROR;
	if (!strcmp(v, "warning") || !strcmp(v, "warn"))
		return LOG_LVL_WARNING;
	if (!strcmp(v, "info"))
		return LOG_LVL_INFO;
	if (!strcmp(v, "debug"))
		return LOG_LVL_DEBUG;
	return -EINVAL;
}

/* "1048576", "512K", "4M" (powers of 1024). */
static int parse_size(const char *v, size_t *ret)
{
	char *end;
	unsigned long long n;

	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end == 'K' || *end == 'k')
		n *= 1024, end++;
	else if (*end == 'M' || *end == 'm')
		n *= 1024 * 1024, end++;
	if (*end || n < CONFIG_MAX_MESSAGE_MIN || n > CONFIG_MAX_MESSAGE_MAX)
		return -EINVAL;
	*ret = (size_t)n;
	return 0;
}

/* A new subnet moves the default ranges along (same offsets) unless they no longer fit;
 * explicit ranges, applied after the subnet, replace them. */
static void rebase_ranges(struct ipam_cfg *c)
{
	struct ipam_cfg d;
	uint64_t size = c->prefix >= 32 ? 1 : (uint64_t)1 << (32 - c->prefix);

	ipam_cfg_default(&d);
	for (int t = 0; t < WS_TYPE_COUNT; t++) {
		uint64_t first = d.first[t] - d.network, last = d.last[t] - d.network;

		if (last + 1 < size) {
			c->first[t] = c->network + (uint32_t)first;
			c->last[t] = c->network + (uint32_t)last;
		} else {
			c->first[t] = c->last[t] = 0;
		}
	}
}

static int check_socket_path(const char *p, const struct origin *o, struct ws_err *err)
{
	size_t n = strlen(p);

	if (n > WS_SOCKET_PATH_MAX)
		return bad(err, o,
			   "socket path '%s' is %zu bytes long; a Unix socket path may be at most "
			   "%d bytes",
			   p, n, WS_SOCKET_PATH_MAX);
	return 0;
}

/* Checks @v for @o->key and stores it in @c. @base: directory for relative paths. */
static int apply(struct ws_config *c, const struct origin *o, const char *v, const char *base,
		 struct ws_err *err)
{
	char **path_field = NULL;
	int r;

	if (!*v)
		return bad(err, o, "'%s' needs a value", key_names[o->key]);
	switch (o->key) {
	case K_REPO:
		path_field = &c->repo;
		break;
	case K_SANDBOX_ROOT:
		path_field = &c->sandbox_root;
		break;
	case K_STATE_DIR:
		path_field = &c->state_dir;
		break;
	case K_SOCKET:
		path_field = &c->socket_path;
		break;
	case K_MACHINE:
		if (!machine_name_ok(v))
			return bad(err, o,
				   "machine name '%s' is not a plain directory name (letters, "
				   "digits, '-', '_', '.')",
				   v);
		return set_str(&c->machine, v);
	case K_VERIFY:
		if (strcmp(v, "none") && strcmp(v, "parse") && strcmp(v, "eval") &&
		    strcmp(v, "build"))
			return bad(err, o, "verify level '%s' is not one of none, parse, eval, build",
				   v);
		return set_str(&c->verify, v);
	case K_BUILD_COMMAND:
		return set_str(&c->build_command, v);
	case K_EVAL_COMMAND:
		return set_str(&c->eval_command, v);
	case K_PRIVILEGE_COMMAND:
		return set_str(&c->privilege_command, v);
	case K_SUBNET:
		if (ipam_parse_subnet(v, &c->ipam) < 0)
			return bad(err, o, "subnet '%s' is not an IPv4 network like 192.168.83.0/24",
				   v);
		rebase_ranges(&c->ipam);
		return 0;
	case K_RANGE_VM:
	case K_RANGE_CONTAINER:
	case K_RANGE_INCUS: {
		enum ws_type t = o->key == K_RANGE_VM	     ? WS_TYPE_VM
				 : o->key == K_RANGE_CONTAINER ? WS_TYPE_CONTAINER
							       : WS_TYPE_INCUS;

		if (ipam_parse_range(v, &c->ipam, t) < 0)
			return bad(err, o,
				   "range '%s' is not FIRST-LAST (like 192.168.83.10-192.168.83.49) "
				   "inside the subnet",
				   v);
		return 0;
	}
	case K_GROUP: {
		char *end;
		unsigned long gid = strtoul(v, &end, 10);

		if (!((*v >= '0' && *v <= '9' && !*end && gid < UINT32_MAX) || getgrnam(v)))
			return bad(err, o, "unknown group '%s'", v);
		return set_str(&c->group, v);
	}
	case K_MAX_MESSAGE:
		if (parse_size(v, &c->max_message) < 0)
			return bad(err, o,
				   "max-message-bytes '%s' is not a size between %d and %u bytes "
				   "(K and M suffixes allowed)",
				   v, CONFIG_MAX_MESSAGE_MIN, CONFIG_MAX_MESSAGE_MAX);
		return 0;
	case K_LOG_LEVEL:
		r = parse_level(v);
		if (r < 0)
			return bad(err, o, "log level '%s' is not one of error, warning, info, debug",
				   v);
		c->log_level = r;
		return 0;
	case K_COUNT:
		break;
	}
	if (!path_field)
		return -EINVAL;
	{
		WS_AUTOFREE char *p = NULL;

		r = make_abs(v, base, &p);
		if (r < 0)
			return bad(err, o, "cannot make '%s' absolute: %s", v, strerror(-r));
		if (o->key == K_SOCKET) {
			r = check_socket_path(p, o, err);
			if (r < 0)
				return r;
		}
		free(*path_field);
		*path_field = ws_steal(&p);
	}
	return 0;
}

static void trim(char **s)
{
	char *b = *s, *e;

	while (*b == ' ' || *b == '\t')
		b++;
	e = b + strlen(b);
	while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	*s = b;
}

struct file_values {
	char *val[K_COUNT];     /* point into text */
	unsigned line[K_COUNT];
	char *text;             /* owned */
};

static void file_values_clear(struct file_values *fv)
{
	free(fv->text);
	memset(fv, 0, sizeof(*fv));
}

/* Reads `key = value` lines. A missing file is -ENOENT (without filling @err). */
static int read_file(const char *path, struct file_values *fv, struct ws_err *err)
{
	FILE *f;
	size_t len;
	char *line, *next;
	unsigned lineno = 0;
	struct origin o = { .file = path };

	memset(fv, 0, sizeof(*fv));
	f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return -ENOENT;
		return ws_fail(err, -errno, 0, "cannot open config file '%s': %s", path,
			       strerror(errno));
	}
	fv->text = malloc(CONFIG_FILE_MAX + 1);
	if (!fv->text) {
		fclose(f);
		return -ENOMEM;
	}
	len = fread(fv->text, 1, CONFIG_FILE_MAX + 1, f);
	if (ferror(f)) {
		fclose(f);
		return ws_fail(err, -EIO, 0, "cannot read config file '%s'", path);
	}
	fclose(f);
	if (len > CONFIG_FILE_MAX)
		return ws_fail(err, -EFBIG, 0, "config file '%s' is larger than %d bytes", path,
			       CONFIG_FILE_MAX);
	fv->text[len] = '\0';
	if (memchr(fv->text, '\0', len))
		return ws_fail(err, -EINVAL, 0, "config file '%s' contains a NUL byte", path);

	for (line = fv->text; line; line = next) {
		char *eq, *key, *val;
		int k;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		o.line = lineno;
		trim(&line);
		if (!*line || *line == '#')
			continue;
		eq = strchr(line, '=');
		if (!eq)
			return bad(err, &o, "expected 'key = value', got '%s'", line);
		*eq = '\0';
		key = line;
		val = eq + 1;
		trim(&key);
		trim(&val);
		/* a value may be quoted to keep leading or trailing blanks */
		if (val[0] == '"' && strlen(val) >= 2 && val[strlen(val) - 1] == '"') {
			val[strlen(val) - 1] = '\0';
			val++;
		}
		for (k = 0; k < K_COUNT; k++)
			if (!strcmp(key, key_names[k]))
				break;
		if (k == K_COUNT)
			return bad(err, &o, "unknown key '%s'", key);
		if (fv->val[k])
			return bad(err, &o, "'%s' is already set on line %u", key, fv->line[k]);
		fv->val[k] = val;
		fv->line[k] = lineno;
	}
	return 0;
}

static char *default_config_file(void)
{
	const char *x = abs_env("XDG_CONFIG_HOME"), *h = home_dir();
	char *p = NULL;

	if (x)
		return asprintf(&p, "%s/workspaced/config", x) < 0 ? NULL : p;
	if (h)
		return asprintf(&p, "%s/.config/workspaced/config", h) < 0 ? NULL : p;
	return NULL;
}

char *config_default_build_command(const char *host)
{
	char *s = NULL;

	if (asprintf(&s, "nix build .#nixosConfigurations.%s.config.system.build.toplevel --no-link",
		     host) < 0)
		return NULL;
	return s;
}

char *config_default_eval_command(const char *host)
{
	char *s = NULL;

	if (asprintf(&s,
		     "nix eval --raw .#nixosConfigurations.%s.config.system.build.toplevel.drvPath",
		     host) < 0)
		return NULL;
	return s;
}

static int short_hostname(char **ret)
{
	struct utsname u;
	char *dot;

	if (uname(&u) < 0)
		return -errno;
	dot = strchr(u.nodename, '.');
	if (dot)
		*dot = '\0';
	if (!u.nodename[0] || !machine_name_ok(u.nodename))
		return -EINVAL;
	*ret = strdup(u.nodename);
	return *ret ? 0 : -ENOMEM;
}

/* Fills what neither the file nor the flags gave. */
static int fill_defaults(struct ws_config *c, const struct config_flags *fl,
			 struct ws_err *err)
{
	const char *h = home_dir();
	bool check = fl->check != NULL;
	int r;

	if (!c->machine) {
		r = short_hostname(&c->machine);
		if (r < 0)
			return ws_fail(err, -EINVAL, 0,
				       "cannot tell the machine from the host name; pass --machine "
				       "NAME");
	}
	if (!c->sandbox_root) {
		if (!h || asprintf(&c->sandbox_root, "%s/sandboxed", h) < 0)
			return ws_fail(err, -EINVAL, 0,
				       "HOME is not set; pass --sandbox-root DIR");
	}
	if (!c->state_dir) {
		const char *x = abs_env("XDG_STATE_HOME");

		if (x)
			r = asprintf(&c->state_dir, "%s/workspaced", x);
		else if (h)
			r = asprintf(&c->state_dir, "%s/.local/state/workspaced", h);
		else
			r = -1;
		if (r < 0)
			return ws_fail(err, -EINVAL, 0,
				       "neither XDG_STATE_HOME nor HOME is set; pass --state-dir "
				       "DIR");
	}
	if (!c->socket_path && !check) {
		const char *x = getenv("XDG_RUNTIME_DIR");

		if (!x || !*x)
			return ws_fail(err, -EINVAL, 0,
				       "XDG_RUNTIME_DIR is not set, so there is no default socket "
				       "path; pass --socket PATH or set 'socket' in the config file");
		if (x[0] != '/')
			return ws_fail(err, -EINVAL, 0,
				       "XDG_RUNTIME_DIR '%s' is not absolute; pass --socket PATH", x);
		if (asprintf(&c->socket_path, "%s/%s", x, WS_SOCKET_NAME) < 0)
			return -ENOMEM;
		tidy_path(c->socket_path);
		r = check_socket_path(c->socket_path, NULL, err);
		if (r < 0)
			return r;
	}
	if (!c->repo && !check)
		return ws_fail(err, -EINVAL, 0,
			       "no repository: pass --repo DIR or set 'repo' in %s",
			       c->config_file ? c->config_file : "the config file");
	if (!c->build_command && !(c->build_command = config_default_build_command(c->machine)))
		return -ENOMEM;
	if (!c->eval_command && !(c->eval_command = config_default_eval_command(c->machine)))
		return -ENOMEM;
	return 0;
}

/* Defaults, then the file, then the flags, into @c (fresh). */
static int build(const struct config_flags *fl, struct ws_config *c, struct ws_err *err)
{
	struct file_values fv = { 0 };
	bool explicit_file = fl->config_file != NULL;
	WS_AUTOFREE char *file_dir = NULL;
	int r;

	memset(c, 0, sizeof(*c));
	c->max_message = WS_MAX_MESSAGE_DEFAULT;
	c->log_level = LOG_LVL_INFO;
	ipam_cfg_default(&c->ipam);
	if (set_str(&c->verify, "build") < 0 || set_str(&c->privilege_command, "sudo") < 0)
		return -ENOMEM;

	c->config_file = explicit_file ? strdup(fl->config_file) : default_config_file();
	if (c->config_file) {
		r = read_file(c->config_file, &fv, err);
		if (r == -ENOENT) {
			if (explicit_file)
				return ws_fail(err, -ENOENT, 0, "config file '%s' does not exist",
					       c->config_file);
			free(c->config_file); /* a missing default file is fine */
			c->config_file = NULL;
		} else if (r < 0) {
			file_values_clear(&fv);
			return r;
		} else {
			char *slash;

			file_dir = strdup(c->config_file);
			if (!file_dir) {
				file_values_clear(&fv);
				return -ENOMEM;
			}
			slash = strrchr(file_dir, '/');
			if (slash)
				*(slash == file_dir ? slash + 1 : slash) = '\0';
		}
	}

	for (int k = 0; k < K_COUNT; k++) {
		struct origin o = { .key = (enum cfg_key)k };
		const char *v;

		if (fl->val[k]) {
			v = fl->val[k];
		} else if (fv.val[k]) {
			v = fv.val[k];
			o.file = c->config_file;
			o.line = fv.line[k];
		} else {
			continue;
		}
		r = apply(c, &o, v, o.file ? file_dir : NULL, err);
		if (r < 0) {
			file_values_clear(&fv);
			return r;
		}
	}
	file_values_clear(&fv);

	if (fl->verbose || fl->quiet) {
		static const int levels[] = { LOG_LVL_ERROR, LOG_LVL_WARNING, LOG_LVL_INFO,
					      LOG_LVL_DEBUG };
		int i = 2 + fl->verbose - fl->quiet;

		c->log_level = levels[i < 0 ? 0 : i > 3 ? 3 : i];
	}
	if (fl->check) {
		size_t n = 0;

		while (fl->check[n])
			n++;
		c->check_files = calloc(n + 1, sizeof(char *));
		if (!c->check_files)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++)
			if (!(c->check_files[i] = strdup(fl->check[i])))
				return -ENOMEM;
	}
	return fill_defaults(c, fl, err);
}

static void flags_free(struct config_flags *fl)
{
	if (!fl)
		return;
	for (int k = 0; k < K_COUNT; k++)
		free(fl->val[k]);
	free(fl->config_file);
	if (fl->check)
		for (char **p = fl->check; *p; p++)
			free(*p);
	free(fl->check);
	free(fl);
}

enum { OPT_CONFIG = 1000, OPT_VERSION, OPT_CHECK, OPT_KEY_BASE = 2000 };

static const struct option long_options[] = {
	{ "repo", required_argument, NULL, OPT_KEY_BASE + K_REPO },
	{ "machine", required_argument, NULL, OPT_KEY_BASE + K_MACHINE },
	{ "sandbox-root", required_argument, NULL, OPT_KEY_BASE + K_SANDBOX_ROOT },
	{ "socket", required_argument, NULL, OPT_KEY_BASE + K_SOCKET },
	{ "verify", required_argument, NULL, OPT_KEY_BASE + K_VERIFY },
	{ "build-command", required_argument, NULL, OPT_KEY_BASE + K_BUILD_COMMAND },
	{ "eval-command", required_argument, NULL, OPT_KEY_BASE + K_EVAL_COMMAND },
	{ "state-dir", required_argument, NULL, OPT_KEY_BASE + K_STATE_DIR },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "verbose", no_argument, NULL, 'v' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "check", no_argument, NULL, OPT_CHECK },
	{ 0 },
};

static int parse_args(int argc, char **argv, struct config_flags *fl, struct ws_err *err)
{
	bool check = false;
	int opt, r;

	optind = 0; /* glibc: start over, so that a second parse works */
	opterr = 0;
	while (!check && (opt = getopt_long(argc, argv, "+vqh", long_options, NULL)) != -1) {
		switch (opt) {
		case 'v':
			fl->verbose++;
			break;
		case 'q':
			fl->quiet++;
			break;
		case 'h':
			fl->help = true;
			break;
		case OPT_VERSION:
			fl->version = true;
			break;
		case OPT_CHECK:
			check = true;
			break;
		case OPT_CONFIG:
			free(fl->config_file);
			fl->config_file = NULL;
			if (!*optarg)
				return ws_fail(err, -EINVAL, 0, "--config needs a file name");
			r = make_abs(optarg, NULL, &fl->config_file);
			if (r < 0)
				return ws_fail(err, r, 0, "--config: cannot use '%s': %s", optarg,
					       strerror(-r));
			break;
		case '?':
			if (optopt >= OPT_KEY_BASE || optopt == OPT_CONFIG)
				return ws_fail(err, -EINVAL, 0, "%s needs a value; see --help",
					       argv[optind - 1]);
			if (optopt)
				return ws_fail(err, -EINVAL, 0, "unknown option '-%c'; see --help",
					       optopt);
			return ws_fail(err, -EINVAL, 0, "unknown option '%s'; see --help",
				       argv[optind - 1]);
		default: {
			enum cfg_key k = (enum cfg_key)(opt - OPT_KEY_BASE);
			struct origin o = { .key = k };
			bool is_path = k == K_REPO || k == K_SANDBOX_ROOT || k == K_SOCKET ||
				       k == K_STATE_DIR;

			if (opt < OPT_KEY_BASE || opt >= OPT_KEY_BASE + K_COUNT)
				return ws_fail(err, -EINVAL, 0, "bad option");
			if (!*optarg)
				return bad(err, &o, "needs a value");
			free(fl->val[k]);
			fl->val[k] = NULL;
			r = is_path ? make_abs(optarg, NULL, &fl->val[k])
				    : ((fl->val[k] = strdup(optarg)) ? 0 : -ENOMEM);
			if (r < 0)
				return bad(err, &o, "cannot use '%s': %s", optarg, strerror(-r));
			break;
		}
		}
	}
	if (check) {
		int n = argc - optind;

		if (n == 0)
			return ws_fail(err, -EINVAL, 0, "--check needs at least one file");
		fl->check = calloc((size_t)n + 1, sizeof(char *));
		if (!fl->check)
			return -ENOMEM;
		for (int i = 0; i < n; i++)
			if (!(fl->check[i] = strdup(argv[optind + i])))
				return -ENOMEM;
	} else if (optind < argc) {
		return ws_fail(err, -EINVAL, 0, "unexpected argument '%s'; see --help",
			       argv[optind]);
	}
	return 0;
}

int config_load(int argc, char **argv, struct ws_config *c, struct ws_err *err)
{
	struct config_flags *fl = calloc(1, sizeof(*fl));
	struct ws_config tmp;
	int r;

	memset(c, 0, sizeof(*c));
	if (!fl)
		return -ENOMEM;
	r = parse_args(argc, argv, fl, err);
	if (r < 0) {
		flags_free(fl);
		return r;
	}
	if (fl->help || fl->version) {
		c->show_help = fl->help;
		c->show_version = fl->version;
		c->flags = fl;
		return 0;
	}
	r = build(fl, &tmp, err);
	if (r < 0) {
		config_clear(&tmp);
		flags_free(fl);
		return r;
	}
	*c = tmp;
	c->flags = fl;
	return 0;
}

int config_reload(struct ws_config *c, struct ws_err *err)
{
	struct ws_config tmp;
	int r;

	if (!c->flags)
		return ws_fail(err, -EINVAL, 0, "configuration was not loaded");
	r = build(c->flags, &tmp, err);
	if (r < 0) {
		config_clear(&tmp);
		return r;
	}
	tmp.flags = ws_steal(&c->flags);
	tmp.show_help = c->show_help;
	tmp.show_version = c->show_version;
	config_clear(c);
	*c = tmp;
	return 0;
}

void config_clear(struct ws_config *c)
{
	if (!c)
		return;
	free(c->config_file);
	free(c->repo);
	free(c->machine);
	free(c->sandbox_root);
	free(c->socket_path);
	free(c->verify);
	free(c->build_command);
	free(c->eval_command);
	free(c->state_dir);
	free(c->group);
	free(c->privilege_command);
	if (c->check_files)
		for (char **p = c->check_files; *p; p++)
			free(*p);
	free(c->check_files);
	flags_free(c->flags);
	memset(c, 0, sizeof(*c));
}

void config_usage(FILE *f)
{
	WS_AUTOFREE char *cfg = default_config_file();

	fprintf(f,
		"Usage: workspaced [OPTION]...\n"
		"       workspaced [OPTION]... --check FILE...\n"
		"\n"
		"Owns the workspace declarations of a NixOS flake repository and serves JSON-RPC\n"
		"on a Unix socket (see wsctl(1)).\n"
		"\n"
		"  --repo DIR            the flake repository (required here or in the config file)\n"
		"  --machine NAME        edit machines/NAME/ (default: the short host name)\n"
		"  --sandbox-root DIR    where NAME/ssh-host-keys/ live (default: ~/sandboxed)\n"
		"  --socket PATH         the Unix socket, at most %d bytes\n"
		"                        (default: $XDG_RUNTIME_DIR/%s)\n"
		"  --verify LEVEL        none, parse, eval or build (default: build)\n"
		"  --build-command CMD   run by 'build' (default: nix build\n"
		"                        .#nixosConfigurations.HOST.config.system.build.toplevel\n"
		"                        --no-link)\n"
		"  --eval-command CMD    run by 'eval' (default: nix eval --raw\n"
		"                        .#nixosConfigurations.HOST.config.system.build.toplevel"
		".drvPath)\n"
		"  --state-dir DIR       the daemon's own state (default: $XDG_STATE_HOME/workspaced\n"
		"                        or ~/.local/state/workspaced)\n"
		"  --config FILE         the config file (default: %s;\n"
		"                        a missing default file is fine)\n"
		"  -v, --verbose         log debug messages\n"
		"  -q, --quiet           log warnings and errors only (-qq: errors only)\n"
		"  --check FILE...       parse the given Nix files, report and exit\n"
		"  -h, --help            show this help\n"
		"  --version             show the version\n"
		"\n"
		"The config file holds 'key = value' lines ('#' starts a comment line). Keys: the\n"
		"long option names above (repo, machine, sandbox-root, socket, verify,\n"
		"build-command, eval-command, state-dir) and:\n"
		"  subnet = 192.168.83.0/24              (default)\n"
		"  range.vm = 192.168.83.10-192.168.83.49\n"
		"  range.container = 192.168.83.50-192.168.83.89\n"
		"  range.incus = 192.168.83.90-192.168.83.129\n"
		"  group = NAME           socket mode 0660 for this group (default: none, 0600)\n"
		"  privilege-command = sudo\n"
		"  max-message-bytes = %d  (K and M suffixes allowed)\n"
		"  log-level = info       (error, warning, info, debug)\n"
		"Options given on the command line override the file; SIGHUP re-reads it.\n",
		WS_SOCKET_PATH_MAX, WS_SOCKET_NAME,
		cfg ? cfg : "$XDG_CONFIG_HOME/workspaced/config", WS_MAX_MESSAGE_DEFAULT);
}
