/* SPDX-License-Identifier: MIT */
/* Host keys: SHA-256 against published vectors and sha256sum, key validation on real
 * ssh-keygen keys and hostile inputs, fingerprints against ssh-keygen -l, and the watcher on
 * real directories with real inotify and a real libuv loop (every row of
 * tests/data/cases/hostkeys.md that concerns the watcher and the validation). */
#include <stdbool.h>

#include "harness.h"

#include <sched.h>
#include <sys/inotify.h>
#include <uv.h>

#include "hostkeys.h"
#include "sha256.h"
#include "ws_proto.h"

#define DEBOUNCE_MS 50
#define SAFETY_MS 5000

/* ---- SHA-256 ---- */

static void hex(const uint8_t *d, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_sha(const char *msg, size_t len, const char *want)
{
	uint8_t d[SHA256_DIGEST_SIZE];
	char h[2 * SHA256_DIGEST_SIZE + 1];

	sha256_digest(msg, len, d);
	hex(d, sizeof(d), h);
	assert_string_equal(h, want);
}

static void test_sha256_vectors(void **state)
{
	static const char *abc56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	struct sha256 s;
	uint8_t d[SHA256_DIGEST_SIZE];
	char h[2 * SHA256_DIGEST_SIZE + 1], *million;
	size_t i;

	check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_sha(abc56, strlen(abc56),
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

	/* One million 'a', fed in uneven pieces that straddle block boundaries. */
	million = malloc(1000000);
	assert_non_null(million);
	memset(million, 'a', 1000000);
	sha256_init(&s);
	for (i = 0; i < 1000000;) {
		size_t n = (i % 7) * 13 + 1;

		if (n > 1000000 - i)
			n = 1000000 - i;
		sha256_update(&s, million + i, n);
		i += n;
	}
	sha256_final(&s, d);
	hex(d, sizeof(d), h);
	assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(million);
}

static void test_sha256_vs_sha256sum(void **state)
{
	static const size_t lens[] = { 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000 };
	char *dir = h_tmpdir(), path[4096], h[2 * SHA256_DIGEST_SIZE + 1];
	uint8_t buf[1000], d[SHA256_DIGEST_SIZE];
	size_t i;

	if (!h_have("sha256sum"))
		skip();
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	snprintf(path, sizeof(path), "%s/data", dir);
	for (i = 0; i < WS_ARRAY_SIZE(lens); i++) {
		char *out;

		h_write(path, (const char *)buf, lens[i]);
		out = h_sh_out("sha256sum '%s'", path);
		sha256_digest(buf, lens[i], d);
		hex(d, sizeof(d), h);
		assert_true(strlen(out) >= 64);
		out[64] = '\0';
		assert_string_equal(h, out);
		free(out);
	}
	assert_int_equal(h_sh("rm -rf '%s'", dir), 0);
	free(dir);
}

/* ---- keys ---- */

/* A fresh key of @type DIR/NAME(.pub); returns the .pub text (malloc'd). */
static char *make_key_type(const char *dir, const char *name, const char *type,
			   const char *comment)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(h_sh("ssh-keygen -t %s -N '' -C '%s' -f '%s' -q", type, comment, path), 0);
	snprintf(path, sizeof(path), "%s/%s.pub", dir, name);
	return h_read(path, NULL);
}

static char *make_key(const char *dir, const char *name, const char *comment)
{
	return make_key_type(dir, name, "ed25519", comment);
}

/* The first two fields of a .pub text (malloc'd). */
static char *first_two(const char *pub)
{
	const char *sp = strchr(pub, ' ');
	size_t n;

	assert_non_null(sp);
	n = strcspn(sp + 1, " \r\n");
	return strndup(pub, (size_t)(sp + 1 - pub) + n);
}

static void assert_canonical_chars(const char *canon)
{
	const char *p;

	assert_true(strncmp(canon, "ssh-ed25519 ", 12) == 0);
	for (p = canon + 12; *p; p++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789+/=", *p));
}

static int parse_str(const char *s, char **ret, struct ws_err *err)
{
	return hostkey_parse(s, strlen(s), ret, err);
}

static void assert_invalid(const char *s)
{
	struct ws_err err = { 0 };
	char *canon = NULL;

	assert_int_equal(parse_str(s, &canon, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
	assert_null(canon);
	ws_err_clear(&err);
}

static void test_parse(void **state)
{
	char *dir, *pub, *want, *canon = NULL, *b64, buf[1024];
	struct ws_err err = { 0 };
	size_t n;

	if (!h_have("ssh-keygen"))
		skip();
	dir = h_tmpdir();
	pub = make_key(dir, "k", "root@ws");
	want = first_two(pub);
	b64 = strchr(want, ' ') + 1;

	/* As ssh-keygen wrote it, with a trailing newline. */
	assert_int_equal(parse_str(pub, &canon, &err), 0);
	assert_string_equal(canon, want);
	assert_canonical_chars(canon);
	free(canon);

	/* No final newline, CRLF, no comment, a comment with spaces, a tab: the same value. */
	{
		static const char *const forms[][2] = {
			{ " ", " root@ws" }, { " ", " root@ws\r\n" }, { " ", "" }, { " ", "\n" },
			{ " ", " a comment, with \"quotes\"; and = signs\n" }, { "\t", "\tx\n" },
		};
		size_t i;

		for (i = 0; i < WS_ARRAY_SIZE(forms); i++) {
			snprintf(buf, sizeof(buf), "ssh-ed25519%s%s%s", forms[i][0], b64,
				 forms[i][1]);
			canon = NULL;
			assert_int_equal(parse_str(buf, &canon, &err), 0);
			assert_string_equal(canon, want);
			free(canon);
		}
	}

	/* The rows of hostkeys.md and their relatives. */
	assert_invalid("ssh-ed25519 AAAA\"; users.users.root.password = \"x\"; #");
	assert_invalid("ssh-ed25519 AAAA\"; users.users.root.password = \"x\"; #\n");
	assert_invalid("not a key");
	assert_invalid("not a key\n");
	assert_invalid("");
	assert_invalid("\n");
	assert_invalid("ssh-ed25519");
	assert_invalid("ssh-ed25519 \n");

	/* Lines around the key, two keys, leading white space, a lone \r. */
	snprintf(buf, sizeof(buf), "\n%s", pub);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "%s\n", pub);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "%s%s", pub, pub);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), " %s", pub);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s\r", b64);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s x\ry\n", b64);
	assert_invalid(buf);
	/* A NUL inside: the length says there is more than the string. */
	n = (size_t)snprintf(buf, sizeof(buf), "ssh-ed25519 %s", b64);
	buf[n] = '\0';
	buf[n + 1] = 'x';
	canon = NULL;
	assert_int_equal(hostkey_parse(buf, n + 2, &canon, &err), -EINVAL);
	ws_err_clear(&err);

	/* A type word that is not the embedded one. */
	snprintf(buf, sizeof(buf), "ssh-rsa %s\n", b64);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "ssh-ed25519-cert-v01@openssh.com %s\n", b64);
	assert_invalid(buf);

	/* Broken base64: truncated, an extra group, a foreign character, non-canonical bits. */
	snprintf(buf, sizeof(buf), "ssh-ed25519 %.64s\n", b64);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "ssh-ed25519 %sAAAA\n", b64);
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s\n", b64);
	buf[20] = '*';
	assert_invalid(buf);
	snprintf(buf, sizeof(buf), "ssh-ed25519 %s==\n", b64);
	assert_invalid(buf);

	/* A blob of one byte more (69 bytes of base64 cannot be: pad it properly). The encoding
	 * of blob + 1 byte is 72 characters ending in "==". */
	{
		static const char tbl[] =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		uint8_t blob[52];
		char enc[80];
		size_t i, o = 0;
		char *cmd_out = h_sh_out("printf '%%s' '%s' | base64 -d | od -An -v -tu1", b64);
		char *p = cmd_out;

		for (i = 0; i < 51; i++)
			blob[i] = (uint8_t)strtoul(p, &p, 10);
		free(cmd_out);
		blob[51] = 0;
		for (i = 0; i + 2 < 52; i += 3) {
			uint32_t v = (uint32_t)blob[i] << 16 | (uint32_t)blob[i + 1] << 8 |
				     blob[i + 2];

			enc[o++] = tbl[v >> 18];
			enc[o++] = tbl[(v >> 12) & 63];
			enc[o++] = tbl[(v >> 6) & 63];
			enc[o++] = tbl[v & 63];
		}
		enc[o++] = tbl[blob[51] >> 2];
		enc[o++] = tbl[(blob[51] & 3) << 4];
		enc[o++] = '=';
		enc[o++] = '=';
		enc[o] = '\0';
		/* Sanity: without the extra byte the same code gives the original. */
		assert_int_equal(strncmp(enc, b64, 64), 0);
		snprintf(buf, sizeof(buf), "ssh-ed25519 %s\n", enc);
		assert_invalid(buf);
	}

	/* Another key type's blob under the ed25519 type word. */
	{
		char *ec = make_key_type(dir, "ec", "ecdsa", "x");
		char *ec2 = first_two(ec);

		snprintf(buf, sizeof(buf), "ssh-ed25519 %s\n", strchr(ec2, ' ') + 1);
		assert_invalid(buf);
		assert_invalid(ec);
		free(ec);
		free(ec2);
	}

	/* Too large. */
	{
		size_t big = HOSTKEY_MAX_BYTES + 1;
		char *huge = malloc(big);

		assert_non_null(huge);
		memset(huge, 'A', big);
		memcpy(huge, want, strlen(want));
		huge[strlen(want)] = ' ';
		canon = NULL;
		assert_int_equal(hostkey_parse(huge, big, &canon, &err), -EINVAL);
		assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
		ws_err_clear(&err);
		free(huge);
	}

	free(pub);
	free(want);
	assert_int_equal(h_sh("rm -rf '%s'", dir), 0);
	free(dir);
}

static void test_read(void **state)
{
	char *dir, *pub, *want, *canon = NULL, path[4096], other[4096];
	struct ws_err err = { 0 };

	if (!h_have("ssh-keygen"))
		skip();
	dir = h_tmpdir();
	pub = make_key(dir, "ssh_host_ed25519_key", "root@ws");
	want = first_two(pub);

	snprintf(path, sizeof(path), "%s/ssh_host_ed25519_key.pub", dir);
	assert_int_equal(hostkey_read(path, &canon, &err), 0);
	assert_string_equal(canon, want);
	free(canon);

	/* The private key's name is refused before anything is opened, whatever it holds. */
	snprintf(other, sizeof(other), "%s/pubcopy", dir);
	h_write(other, pub, strlen(pub));
	canon = NULL;
	assert_int_equal(hostkey_read(other, &canon, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
	ws_err_clear(&err);

	/* Missing. */
	snprintf(path, sizeof(path), "%s/missing.pub", dir);
	assert_int_equal(hostkey_read(path, &canon, &err), -ENOENT);
	assert_int_equal(err.code, WS_E_HOSTKEY_MISSING);
	ws_err_clear(&err);
	snprintf(path, sizeof(path), "%s/nodir/missing.pub", dir);
	assert_int_equal(hostkey_read(path, &canon, &err), -ENOENT);
	assert_int_equal(err.code, WS_E_HOSTKEY_MISSING);
	ws_err_clear(&err);

	/* Empty: content may still be coming. */
	snprintf(path, sizeof(path), "%s/empty.pub", dir);
	h_write(path, "", 0);
	assert_int_equal(hostkey_read(path, &canon, &err), -EAGAIN);
	assert_int_equal(err.code, WS_E_HOSTKEY_MISSING);
	ws_err_clear(&err);

	/* A symbolic link to a valid key: not followed. */
	snprintf(path, sizeof(path), "%s/link.pub", dir);
	assert_int_equal(symlink("ssh_host_ed25519_key.pub", path), 0);
	assert_int_equal(hostkey_read(path, &canon, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
	assert_non_null(strstr(err.message, "symbolic link"));
	ws_err_clear(&err);

	/* A directory of keys that is a symbolic link: not followed either. */
	snprintf(path, sizeof(path), "%s/linkdir", dir);
	assert_int_equal(symlink(".", path), 0);
	snprintf(path, sizeof(path), "%s/linkdir/ssh_host_ed25519_key.pub", dir);
	assert_int_equal(hostkey_read(path, &canon, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
	ws_err_clear(&err);

	/* A fifo (would block a plain open) and a directory. */
	snprintf(path, sizeof(path), "%s/fifo.pub", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(hostkey_read(path, &canon, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
	ws_err_clear(&err);
	snprintf(path, sizeof(path), "%s/dir.pub", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(hostkey_read(path, &canon, &err), -EINVAL);
	ws_err_clear(&err);

	/* Larger than allowed, even with a valid key first. */
	snprintf(path, sizeof(path), "%s/big.pub", dir);
	assert_int_equal(h_sh("{ printf '%%s' '%.*s'; head -c %d /dev/zero | tr '\\0' A; } > '%s'",
			      (int)strlen(want), want, HOSTKEY_MAX_BYTES, path), 0);
	assert_int_equal(hostkey_read(path, &canon, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
	ws_err_clear(&err);

	/* Hostile content. */
	snprintf(path, sizeof(path), "%s/evil.pub", dir);
	h_write(path, "ssh-ed25519 AAAA\"; users.users.root.password = \"x\"; #", 53);
	assert_int_equal(hostkey_read(path, &canon, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_HOSTKEY_INVALID);
	assert_string_equal(err.file, path);
	ws_err_clear(&err);

	assert_null(canon);
	free(pub);
	free(want);
	assert_int_equal(h_sh("rm -rf '%s'", dir), 0);
	free(dir);
}

static void test_fingerprint(void **state)
{
	char *dir, *canon, *fp;
	struct ws_err err = { 0 };
	int i;

	if (!h_have("ssh-keygen"))
		skip();
	dir = h_tmpdir();
	for (i = 0; i < 5; i++) {
		char name[32], path[4096], *pub, *out, *sp, *end;

		snprintf(name, sizeof(name), "k%d", i);
		pub = make_key(dir, name, "c");
		snprintf(path, sizeof(path), "%s/%s.pub", dir, name);
		out = h_sh_out("ssh-keygen -l -E sha256 -f '%s'", path);
		/* "256 SHA256:... c (ED25519)" */
		sp = strchr(out, ' ');
		assert_non_null(sp);
		end = strchr(sp + 1, ' ');
		assert_non_null(end);
		*end = '\0';
		assert_int_equal(hostkey_parse(pub, strlen(pub), &canon, &err), 0);
		assert_int_equal(hostkey_fingerprint(canon, &fp), 0);
		assert_string_equal(fp, sp + 1);
		free(fp);
		free(canon);
		free(out);
		free(pub);
	}
	assert_int_equal(hostkey_fingerprint("ssh-ed25519 AAAA", &fp), -EINVAL);
	assert_int_equal(hostkey_fingerprint("not a key", &fp), -EINVAL);
	assert_int_equal(h_sh("rm -rf '%s'", dir), 0);
	free(dir);
}

static void test_path(void **state)
{
	char *p = hostkey_path("/home/u/sandboxed", "dev");

	assert_string_equal(p, "/home/u/sandboxed/dev/ssh-host-keys/ssh_host_ed25519_key.pub");
	free(p);
}

/* ---- the watcher ---- */

struct batch {
	char **names;
	size_t n;
	int r[16];            /* hostkey_read() of each name, at batch time */
	int code[16];
	char *canon[16];
};

struct tc {
	uv_loop_t loop;
	struct hostkeys *hk;
	char *tmp, *root;
	uv_timer_t safety, act;
	bool timed_out;
	void (*on_act)(struct tc *t);
	int step;
	struct batch batches[32];
	size_t n_batches;
	bool closed;
	int spawned, exited;
	int act_marker;       /* test-specific */
	char *key_a, *key_b;  /* .pub texts */
	char *want_a, *want_b;
};

static void tc_batch_cb(void *ud, const char *const *names, size_t n)
{
	struct tc *t = ud;
	struct batch *b;
	size_t i;

	assert_true(t->n_batches < WS_ARRAY_SIZE(t->batches));
	assert_true(n > 0 && n <= 16);
	b = &t->batches[t->n_batches++];
	b->names = calloc(n, sizeof(*b->names));
	b->n = n;
	for (i = 0; i < n; i++) {
		struct ws_err err = { 0 };
		char *path = hostkey_path(t->root, names[i]);

		b->names[i] = strdup(names[i]);
		b->canon[i] = NULL;
		b->r[i] = hostkey_read(path, &b->canon[i], &err);
		b->code[i] = err.code;
		ws_err_clear(&err);
		free(path);
	}
}

static void tc_safety_cb(uv_timer_t *h)
{
	struct tc *t = h->data;

	t->timed_out = true;
}

static void tc_act_cb(uv_timer_t *h)
{
	struct tc *t = h->data;

	t->on_act(t);
}

static void tc_setup(struct tc *t, const char *root_rel)
{
	struct ws_err err = { 0 };

	memset(t, 0, sizeof(*t));
	t->tmp = h_tmpdir();
	assert_true(asprintf(&t->root, "%s/%s", t->tmp, root_rel) > 0);
	assert_int_equal(uv_loop_init(&t->loop), 0);
	assert_int_equal(uv_timer_init(&t->loop, &t->safety), 0);
	assert_int_equal(uv_timer_init(&t->loop, &t->act), 0);
	t->safety.data = t->act.data = t;
	assert_int_equal(hostkeys_new(&t->loop, t->root, DEBOUNCE_MS, tc_batch_cb, t, &t->hk, &err),
			 0);
	t->key_a = make_key(t->tmp, "ka", "root@ws-a");
	t->key_b = make_key(t->tmp, "kb", "root@ws-b");
	t->want_a = first_two(t->key_a);
	t->want_b = first_two(t->key_b);
	assert_canonical_chars(t->want_a);
}

static void tc_names(struct tc *t, const char *const *names, size_t n)
{
	struct ws_err err = { 0 };

	assert_int_equal(hostkeys_set_names(t->hk, names, n, &err), 0);
}

static void tc_done_cb(void *ud)
{
	struct tc *t = ud;

	t->closed = true;
}

static void tc_teardown(struct tc *t)
{
	size_t i, j;

	hostkeys_close(t->hk, tc_done_cb, t);
	uv_close((uv_handle_t *)&t->safety, NULL);
	uv_close((uv_handle_t *)&t->act, NULL);
	assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
	assert_true(t->closed);
	hostkeys_free(t->hk);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	for (i = 0; i < t->n_batches; i++) {
		for (j = 0; j < t->batches[i].n; j++) {
			free(t->batches[i].names[j]);
			free(t->batches[i].canon[j]);
		}
		free(t->batches[i].names);
	}
	assert_int_equal(h_sh("rm -rf '%s'", t->tmp), 0);
	free(t->tmp);
	free(t->root);
	free(t->key_a);
	free(t->key_b);
	free(t->want_a);
	free(t->want_b);
}

/* Runs the loop until @n batches have arrived; fails after SAFETY_MS. */
static void tc_wait_batches(struct tc *t, size_t n)
{
	t->timed_out = false;
	assert_int_equal(uv_timer_start(&t->safety, tc_safety_cb, SAFETY_MS, 0), 0);
	while (t->n_batches < n && !t->timed_out)
		(void)uv_run(&t->loop, UV_RUN_ONCE);
	uv_timer_stop(&t->safety);
	if (t->n_batches < n)
		fail_msg("timed out waiting for batch %zu (got %zu)", n, t->n_batches);
}

/* Runs the loop for @ms whatever happens. */
static void tc_run_for(struct tc *t, uint64_t ms)
{
	t->timed_out = false;
	assert_int_equal(uv_timer_start(&t->safety, tc_safety_cb, ms, 0), 0);
	while (!t->timed_out)
		(void)uv_run(&t->loop, UV_RUN_ONCE);
}

static void tc_act_after(struct tc *t, uint64_t ms, void (*fn)(struct tc *t))
{
	t->on_act = fn;
	assert_int_equal(uv_timer_start(&t->act, tc_act_cb, ms, 0), 0);
}

static void tc_free_cb(uv_handle_t *h)
{
	free(h);
}

static void tc_exit_cb(uv_process_t *p, int64_t status, int sig)
{
	struct tc *t = p->data;

	assert_int_equal(status, 0);
	assert_int_equal(sig, 0);
	t->exited++;
	uv_close((uv_handle_t *)p, tc_free_cb);
}

/* Runs a shell command as a child of the loop, concurrently with the watcher. */
static void tc_spawn(struct tc *t, const char *fmt, ...) WS_PRINTF(2, 3);
static void tc_spawn(struct tc *t, const char *fmt, ...)
{
	uv_process_options_t o = { 0 };
	uv_process_t *p = calloc(1, sizeof(*p));
	char *cmd = NULL, *args[4];
	va_list ap;

	va_start(ap, fmt);
	assert_true(vasprintf(&cmd, fmt, ap) > 0);
	va_end(ap);
	args[0] = (char *)"/bin/sh";
	args[1] = (char *)"-c";
	args[2] = cmd;
	args[3] = NULL;
	o.file = args[0];
	o.args = args;
	o.exit_cb = tc_exit_cb;
	p->data = t;
	assert_int_equal(uv_spawn(&t->loop, p, &o), 0);
	t->spawned++;
	free(cmd);
}

static char *tc_keypath(struct tc *t, const char *name)
{
	return hostkey_path(t->root, name);
}

static void tc_mkkeys(struct tc *t, const char *name)
{
	assert_int_equal(h_sh("mkdir -p '%s/%s/ssh-host-keys'", t->root, name), 0);
}

static void tc_write_key(struct tc *t, const char *name, const char *text)
{
	char *p = tc_keypath(t, name);

	h_write(p, text, strlen(text));
	free(p);
}

static void assert_batch_is(const struct batch *b, const char *name)
{
	assert_int_equal(b->n, 1);
	assert_string_equal(b->names[0], name);
}

/* Start-up scan, then a plain write: the canonical value, also for CRLF and no newline. */
static void act_write_crlf(struct tc *t)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "%s\r\n", t->want_b);
	tc_write_key(t, "dev", buf);
}

static void act_write_nonl(struct tc *t)
{
	tc_write_key(t, "dev", t->want_a);
}

static void test_watch_scan_and_write(void **state)
{
	const char *names[] = { "dev" };
	struct tc t;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_write_key(&t, "dev", t.key_a);

	/* The key exists before the name is declared: the scan reports it. */
	tc_names(&t, names, 1);
	tc_wait_batches(&t, 1);
	assert_batch_is(&t.batches[0], "dev");
	assert_int_equal(t.batches[0].r[0], 0);
	assert_string_equal(t.batches[0].canon[0], t.want_a);

	tc_act_after(&t, 10, act_write_crlf);
	tc_wait_batches(&t, 2);
	assert_batch_is(&t.batches[1], "dev");
	assert_int_equal(t.batches[1].r[0], 0);
	assert_string_equal(t.batches[1].canon[0], t.want_b);

	tc_act_after(&t, 10, act_write_nonl);
	tc_wait_batches(&t, 3);
	assert_batch_is(&t.batches[2], "dev");
	assert_int_equal(t.batches[2].r[0], 0);
	assert_string_equal(t.batches[2].canon[0], t.want_a);

	/* Nothing more arrives on its own. */
	tc_run_for(&t, 200);
	assert_int_equal(t.n_batches, 3);
	tc_teardown(&t);
}

/* Created empty, the content 300 ms later (the delay driven by a uv_timer). */
static void act_empty_then_fill(struct tc *t)
{
	if (t->step++ == 0) {
		tc_write_key(t, "dev", "");
		tc_act_after(t, 300, act_empty_then_fill);
	} else {
		tc_write_key(t, "dev", t->key_a);
	}
}

static void test_watch_empty_then_content(void **state)
{
	const char *names[] = { "dev" };
	struct tc t;
	size_t i;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_names(&t, names, 1);
	tc_act_after(&t, 10, act_empty_then_fill);
	t.timed_out = false;
	assert_int_equal(uv_timer_start(&t.safety, tc_safety_cb, SAFETY_MS, 0), 0);
	while (!t.timed_out &&
	       !(t.n_batches > 0 && t.batches[t.n_batches - 1].r[0] == 0))
		(void)uv_run(&t.loop, UV_RUN_ONCE);
	uv_timer_stop(&t.safety);
	assert_true(t.n_batches >= 2);
	/* The batch that came while the file was empty: not a key, not invalid, just not yet. */
	assert_int_equal(t.batches[0].r[0], -EAGAIN);
	assert_int_equal(t.batches[0].code[0], WS_E_HOSTKEY_MISSING);
	assert_null(t.batches[0].canon[0]);
	for (i = 0; i + 1 < t.n_batches; i++)
		assert_int_equal(t.batches[i].r[0], -EAGAIN);
	assert_string_equal(t.batches[t.n_batches - 1].canon[0], t.want_a);
	tc_teardown(&t);
}

/* Written to a temporary name, renamed 200 ms later: the rename is caught, the temp is not. */
static void act_temp_then_rename(struct tc *t)
{
	char tmp[4096], *dst = tc_keypath(t, "dev");

	snprintf(tmp, sizeof(tmp), "%s/dev/ssh-host-keys/.ssh_host_ed25519_key.pub.XXXX", t->root);
	if (t->step++ == 0) {
		char priv[4096];

		/* Neither the temporary nor the private key's name is ever reported. */
		h_write(tmp, t->key_a, strlen(t->key_a));
		snprintf(priv, sizeof(priv), "%s/dev/ssh-host-keys/ssh_host_ed25519_key", t->root);
		h_write(priv, "private\n", 8);
		tc_act_after(t, 200, act_temp_then_rename);
	} else {
		t->act_marker = 1;
		assert_int_equal(rename(tmp, dst), 0);
	}
	free(dst);
}

static void test_watch_rename(void **state)
{
	const char *names[] = { "dev" };
	struct tc t;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_names(&t, names, 1);
	tc_act_after(&t, 10, act_temp_then_rename);
	tc_run_for(&t, 150);
	assert_int_equal(t.n_batches, 0);
	tc_wait_batches(&t, 1);
	assert_int_equal(t.act_marker, 1);
	assert_batch_is(&t.batches[0], "dev");
	assert_int_equal(t.batches[0].r[0], 0);
	assert_string_equal(t.batches[0].canon[0], t.want_a);
	tc_run_for(&t, 150);
	assert_int_equal(t.n_batches, 1);
	tc_teardown(&t);
}

/* The sandbox root (and its parent) missing at start; mkdir -p and the write in one shell
 * command running concurrently with the loop. */
static void act_mkdir_and_write(struct tc *t)
{
	tc_spawn(t, "mkdir -p '%s/dev/ssh-host-keys' && cp '%s/ka.pub' "
		    "'%s/dev/ssh-host-keys/ssh_host_ed25519_key.pub'",
		 t->root, t->tmp, t->root);
}

static void test_watch_missing_root(void **state)
{
	const char *names[] = { "dev", "other" };
	struct tc t;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "home/user/sandboxed");
	tc_names(&t, names, 2);
	tc_run_for(&t, 100);
	assert_int_equal(t.n_batches, 0);
	tc_act_after(&t, 10, act_mkdir_and_write);
	tc_wait_batches(&t, 1);
	assert_batch_is(&t.batches[0], "dev");
	assert_int_equal(t.batches[0].r[0], 0);
	assert_string_equal(t.batches[0].canon[0], t.want_a);
	/* And the directories are watched from now on. */
	tc_write_key(&t, "dev", t.key_b);
	tc_wait_batches(&t, 2);
	assert_batch_is(&t.batches[1], "dev");
	assert_string_equal(t.batches[1].canon[0], t.want_b);
	while (t.exited < t.spawned)
		(void)uv_run(&t.loop, UV_RUN_ONCE);
	tc_teardown(&t);
}

/* The same for every depth at which the path may start to exist, repeated to shake out the
 * mkdir-versus-watch race. */
static void test_watch_missing_race(void **state)
{
	static const char *pre[] = { "", "sandboxed", "sandboxed/dev" };
	const char *names[] = { "dev" };
	int round;

	if (!h_have("ssh-keygen"))
		skip();
	for (round = 0; round < 9; round++) {
		struct tc t;

		tc_setup(&t, "sandboxed");
		if (pre[round % 3][0])
			assert_int_equal(h_sh("mkdir -p '%s/%s'", t.tmp, pre[round % 3]), 0);
		tc_names(&t, names, 1);
		act_mkdir_and_write(&t);
		tc_wait_batches(&t, 1);
		assert_batch_is(&t.batches[0], "dev");
		while (t.exited < t.spawned)
			(void)uv_run(&t.loop, UV_RUN_ONCE);
		/* The last close may have arrived after a first batch with a partial file. */
		if (t.batches[t.n_batches - 1].r[0] != 0)
			tc_wait_batches(&t, t.n_batches + 1);
		assert_string_equal(t.batches[t.n_batches - 1].canon[0], t.want_a);
		tc_teardown(&t);
	}
}

/* A symbolic link where the key belongs: reported, refused, not followed. */
static void act_symlink(struct tc *t)
{
	char *dst = tc_keypath(t, "dev"), target[4096];

	snprintf(target, sizeof(target), "%s/ka.pub", t->tmp);
	assert_int_equal(symlink(target, dst), 0);
	free(dst);
}

static void test_watch_symlink(void **state)
{
	const char *names[] = { "dev" };
	struct tc t;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_names(&t, names, 1);
	tc_act_after(&t, 10, act_symlink);
	tc_wait_batches(&t, 1);
	assert_batch_is(&t.batches[0], "dev");
	assert_int_equal(t.batches[0].r[0], -EINVAL);
	assert_int_equal(t.batches[0].code[0], WS_E_HOSTKEY_INVALID);
	assert_null(t.batches[0].canon[0]);
	tc_teardown(&t);
}

/* Hostile and malformed contents arrive as batches and are refused by the read. */
static void act_hostile(struct tc *t)
{
	static const char *texts[] = { "ssh-ed25519 AAAA\"; users.users.root.password = \"x\"; #",
				       "not a key" };

	tc_write_key(t, "dev", texts[t->step++]);
}

static void test_watch_invalid(void **state)
{
	const char *names[] = { "dev" };
	struct tc t;
	int i;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_names(&t, names, 1);
	for (i = 0; i < 2; i++) {
		tc_act_after(&t, 10, act_hostile);
		tc_wait_batches(&t, (size_t)i + 1);
		assert_batch_is(&t.batches[i], "dev");
		assert_int_equal(t.batches[i].r[0], -EINVAL);
		assert_int_equal(t.batches[i].code[0], WS_E_HOSTKEY_INVALID);
		assert_null(t.batches[i].canon[0]);
	}
	tc_teardown(&t);
}

/* Directories that are no declared name (or no longer) are ignored; the declared one is
 * still seen afterwards. */
static void act_undeclared(struct tc *t)
{
	tc_spawn(t, "mkdir -p '%s/other/ssh-host-keys' && cp '%s/ka.pub' "
		    "'%s/other/ssh-host-keys/ssh_host_ed25519_key.pub' && "
		    "cp '%s/ka.pub' '%s/gone/ssh-host-keys/ssh_host_ed25519_key.pub'",
		 t->root, t->tmp, t->root, t->tmp, t->root);
}

static void test_watch_undeclared(void **state)
{
	const char *names[] = { "dev", "gone" };
	struct tc t;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_mkkeys(&t, "gone");
	tc_names(&t, names, 2);
	tc_names(&t, names, 1);
	tc_act_after(&t, 10, act_undeclared);
	tc_run_for(&t, 400);
	assert_int_equal(t.exited, 1);
	assert_int_equal(t.n_batches, 0);

	tc_write_key(&t, "dev", t.key_b);
	tc_wait_batches(&t, 1);
	assert_batch_is(&t.batches[0], "dev");
	assert_string_equal(t.batches[0].canon[0], t.want_b);
	tc_teardown(&t);
}

/* Ten key files closing together: one batch naming all ten. */
static void act_ten(struct tc *t)
{
	int i;

	for (i = 0; i < 10; i++) {
		char name[16];

		snprintf(name, sizeof(name), "ws%d", i);
		tc_write_key(t, name, i % 2 ? t->key_a : t->key_b);
	}
}

static void test_watch_ten_one_batch(void **state)
{
	const char *names[10];
	char bufs[10][16];
	bool seen[10] = { false };
	struct tc t;
	size_t i;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	for (i = 0; i < 10; i++) {
		snprintf(bufs[i], sizeof(bufs[i]), "ws%zu", i);
		names[i] = bufs[i];
		tc_mkkeys(&t, names[i]);
	}
	tc_names(&t, names, 10);
	tc_act_after(&t, 10, act_ten);
	tc_wait_batches(&t, 1);
	tc_run_for(&t, 200);
	assert_int_equal(t.n_batches, 1);
	assert_int_equal(t.batches[0].n, 10);
	for (i = 0; i < 10; i++) {
		int k = atoi(t.batches[0].names[i] + 2);

		assert_false(seen[k]);
		seen[k] = true;
		assert_int_equal(t.batches[0].r[i], 0);
		assert_string_equal(t.batches[0].canon[i], k % 2 ? t.want_a : t.want_b);
	}
	tc_teardown(&t);
}

/* ssh-host-keys deleted, then re-created with the key: caught, and watched again. */
static void act_recreate(struct tc *t)
{
	if (t->step++ == 0) {
		tc_spawn(t, "rm -rf '%s/dev/ssh-host-keys'", t->root);
		tc_act_after(t, 150, act_recreate);
	} else {
		tc_spawn(t, "mkdir '%s/dev/ssh-host-keys' && cp '%s/kb.pub' "
			    "'%s/dev/ssh-host-keys/ssh_host_ed25519_key.pub'",
			 t->root, t->tmp, t->root);
	}
}

static void act_replace_dir_at_once(struct tc *t)
{
	tc_spawn(t, "mv '%s/dev/ssh-host-keys' '%s/old-keys' && mkdir '%s/dev/ssh-host-keys' && "
		    "cp '%s/ka.pub' '%s/dev/ssh-host-keys/ssh_host_ed25519_key.pub'",
		 t->root, t->tmp, t->root, t->tmp, t->root);
}

static void test_watch_recreated_dir(void **state)
{
	const char *names[] = { "dev" };
	struct tc t;

	if (!h_have("ssh-keygen"))
		skip();
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_write_key(&t, "dev", t.key_a);
	tc_names(&t, names, 1);
	tc_wait_batches(&t, 1);
	assert_string_equal(t.batches[0].canon[0], t.want_a);

	tc_act_after(&t, 10, act_recreate);
	tc_wait_batches(&t, 2);
	assert_batch_is(&t.batches[1], "dev");
	while (t.exited < t.spawned)
		(void)uv_run(&t.loop, UV_RUN_ONCE);
	if (t.batches[t.n_batches - 1].r[0] != 0)
		tc_wait_batches(&t, t.n_batches + 1);
	assert_string_equal(t.batches[t.n_batches - 1].canon[0], t.want_b);

	/* The new directory is watched, not just scanned once. */
	tc_write_key(&t, "dev", t.key_a);
	tc_wait_batches(&t, t.n_batches + 1);
	assert_string_equal(t.batches[t.n_batches - 1].canon[0], t.want_a);

	/* Moved away and replaced in one command. */
	tc_write_key(&t, "dev", t.key_b);
	tc_wait_batches(&t, t.n_batches + 1);
	tc_act_after(&t, 10, act_replace_dir_at_once);
	tc_wait_batches(&t, t.n_batches + 1);
	while (t.exited < t.spawned)
		(void)uv_run(&t.loop, UV_RUN_ONCE);
	if (t.batches[t.n_batches - 1].r[0] != 0 ||
	    strcmp(t.batches[t.n_batches - 1].canon[0], t.want_a) != 0)
		tc_wait_batches(&t, t.n_batches + 1);
	assert_string_equal(t.batches[t.n_batches - 1].canon[0], t.want_a);

	/* The moved-away directory is no longer watched. */
	{
		size_t before = t.n_batches;
		char p[4096];

		snprintf(p, sizeof(p), "%s/old-keys/ssh_host_ed25519_key.pub", t.tmp);
		h_write(p, t.key_a, strlen(t.key_a));
		tc_run_for(&t, 200);
		assert_int_equal(t.n_batches, before);
	}
	tc_teardown(&t);
}

/* More events than the kernel queues: the overflow makes the watcher look again. Two files
 * opened for writing and closed in turn give one event each time (only identical consecutive
 * events are merged), without the cost of creating thousands of files. */
static void act_flood(struct tc *t)
{
	char *q = h_read("/proc/sys/fs/inotify/max_queued_events", NULL);
	long max = atol(q), i;
	char p[2][4096];

	free(q);
	for (i = 0; i < 2; i++) {
		snprintf(p[i], sizeof(p[i]), "%s/flood/ssh-host-keys/f%ld", t->root, i);
		h_write(p[i], "", 0);
	}
	for (i = 0; i < max + 100; i++) {
		int fd = open(p[i % 2], O_WRONLY | O_CLOEXEC);

		assert_true(fd >= 0);
		close(fd);
	}
	/* Its event is lost in the overflow. */
	tc_write_key(t, "dev", t->key_a);
}

static void test_watch_overflow(void **state)
{
	const char *names[] = { "dev", "flood" };
	struct tc t;
	char *q;
	size_t i;
	bool dev = false;

	if (!h_have("ssh-keygen"))
		skip();
	q = h_read("/proc/sys/fs/inotify/max_queued_events", NULL);
	if (atol(q) > 1000000) {
		free(q);
		skip();
	}
	free(q);
	tc_setup(&t, "sandboxed");
	tc_mkkeys(&t, "dev");
	tc_mkkeys(&t, "flood");
	tc_names(&t, names, 2);
	tc_act_after(&t, 10, act_flood);
	tc_wait_batches(&t, 1);
	for (i = 0; i < t.batches[0].n; i++)
		if (strcmp(t.batches[0].names[i], "dev") == 0 && t.batches[0].r[i] == 0)
			dev = true;
	assert_true(dev);
	tc_teardown(&t);
}

/* The watch limit, in a user namespace of our own whose limit is 3, so that the machine's
 * setting is left alone: named by its sysctl, never as "no space left on device", both from
 * hostkeys_set_names() and, for a directory that appears later, from the error callback. */
struct limit_ctx {
	int errors;
	char message[1024];
	uv_timer_t safety;
	bool timed_out;
};

static void limit_err_cb(void *ud, const struct ws_err *err)
{
	struct limit_ctx *c = ud;

	c->errors++;
	snprintf(c->message, sizeof(c->message), "%s", err->message);
}

static void limit_safety_cb(uv_timer_t *h)
{
	struct limit_ctx *c = h->data;

	c->timed_out = true;
}

static bool limit_message_ok(const char *m)
{
	return strstr(m, "fs.inotify.max_user_watches") && strstr(m, "sysctl") &&
	       !strcasestr(m, "no space left");
}

static bool write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
	close(fd);
	return ok;
}

/* Runs in the child; returns its exit status: 0 passed, 77 skipped, other failed. */
static int limit_child(const char *root)
{
	const char *names[] = { "a", "b", "c" };
	struct limit_ctx c = { 0 };
	struct ws_err err = { 0 };
	struct hostkeys *hk;
	uv_loop_t loop;
	char cmd[4096];
	int r;

	if (unshare(CLONE_NEWUSER) < 0)
		return 77;
	if (!write_str("/proc/self/setgroups", "deny") ||
	    !write_str("/proc/self/uid_map", "0 0 1") || !write_str("/proc/self/gid_map", "0 0 1"))
		return 77;
	if (!write_str("/proc/sys/user/max_inotify_watches", "3"))
		return 77;

	if (uv_loop_init(&loop) < 0)
		return 10;
	if (hostkeys_new(&loop, root, DEBOUNCE_MS, NULL, &c, &hk, &err) < 0)
		return 11;
	hostkeys_set_error_cb(hk, limit_err_cb);
	/* The root, a and a/ssh-host-keys fill the limit; b does not fit. */
	r = hostkeys_set_names(hk, names, 2, &err);
	if (r != -ENOSPC || !limit_message_ok(err.message))
		return 12;
	ws_err_clear(&err);

	/* c appears later: reported through the error callback. */
	r = hostkeys_set_names(hk, names, 1, &err);
	if (r != 0)
		return 13;
	names[1] = "c";
	if (hostkeys_set_names(hk, names, 2, &err) != 0)
		return 14;
	snprintf(cmd, sizeof(cmd), "mkdir '%s/c'", root);
	if (system(cmd) != 0)
		return 15;
	(void)uv_timer_init(&loop, &c.safety);
	c.safety.data = &c;
	(void)uv_timer_start(&c.safety, limit_safety_cb, SAFETY_MS, 0);
	while (c.errors == 0 && !c.timed_out)
		(void)uv_run(&loop, UV_RUN_ONCE);
	if (c.errors == 0 || !limit_message_ok(c.message))
		return 16;
	uv_close((uv_handle_t *)&c.safety, NULL);
	hostkeys_free(hk);
	if (uv_run(&loop, UV_RUN_DEFAULT) != 0 || uv_loop_close(&loop) != 0)
		return 17;
	return 0;
}

static void test_watch_limit(void **state)
{
	char *tmp, *root;
	pid_t pid;
	int st;

	if (access("/proc/sys/user/max_inotify_watches", F_OK) < 0)
		skip();
	tmp = h_tmpdir();
	assert_true(asprintf(&root, "%s/sandboxed", tmp) > 0);
	assert_int_equal(h_sh("mkdir -p '%s/a/ssh-host-keys' '%s/b/ssh-host-keys'", root, root), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int r = limit_child(root);

		free(root);
		free(tmp);
		_exit(r);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(h_sh("rm -rf '%s'", tmp), 0);
	free(root);
	free(tmp);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* Closing right away, with a scan pending and without a done callback, leaks nothing. */
static void test_watch_close_pending(void **state)
{
	const char *names[] = { "dev" };
	struct ws_err err = { 0 };
	struct hostkeys *hk;
	uv_loop_t loop;
	char *tmp = h_tmpdir(), *root;

	assert_true(asprintf(&root, "%s/sandboxed/", tmp) > 0);
	assert_int_equal(h_sh("mkdir -p '%s/dev/ssh-host-keys' && echo x > "
			      "'%s/dev/ssh-host-keys/ssh_host_ed25519_key.pub'",
			      root, root),
			 0);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(hostkeys_new(&loop, "relative/path", DEBOUNCE_MS, NULL, NULL, &hk, &err),
			 -EINVAL);
	ws_err_clear(&err);
	assert_int_equal(hostkeys_new(&loop, root, DEBOUNCE_MS, NULL, NULL, &hk, &err), 0);
	names[0] = "../x";
	assert_int_equal(hostkeys_set_names(hk, names, 1, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_NAME_INVALID);
	ws_err_clear(&err);
	names[0] = "dev";
	assert_int_equal(hostkeys_set_names(hk, names, 1, &err), 0);
	hostkeys_free(hk);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_int_equal(h_sh("rm -rf '%s'", tmp), 0);
	free(root);
	free(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_sha256_vs_sha256sum),
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_read),
		cmocka_unit_test(test_fingerprint),
		cmocka_unit_test(test_path),
		cmocka_unit_test(test_watch_scan_and_write),
		cmocka_unit_test(test_watch_empty_then_content),
		cmocka_unit_test(test_watch_rename),
		cmocka_unit_test(test_watch_missing_root),
		cmocka_unit_test(test_watch_missing_race),
		cmocka_unit_test(test_watch_symlink),
		cmocka_unit_test(test_watch_invalid),
		cmocka_unit_test(test_watch_undeclared),
		cmocka_unit_test(test_watch_ten_one_batch),
		cmocka_unit_test(test_watch_recreated_dir),
		cmocka_unit_test(test_watch_overflow),
		cmocka_unit_test(test_watch_limit),
		cmocka_unit_test(test_watch_close_pending),
	};

	if (getenv("WS_TEST_FILTER"))
		cmocka_set_test_filter(getenv("WS_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
