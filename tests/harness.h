/* SPDX-License-Identifier: MIT */
/* Helpers for the cmocka unit tests: files, temporary directories, commands. Include after
 * <cmocka.h>'s prerequisites; every helper fails the test on error. */
#ifndef WS_HARNESS_H
#define WS_HARNESS_H

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef WS_TEST_DATA
#define WS_TEST_DATA "tests/data"
#endif

/* Reads a whole file; *ret_len without the NUL that is appended. Fails the test if absent. */
static inline char *h_read(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		fail_msg("cannot open '%s': %s", path, strerror(errno));
	do {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	return buf;
}

/* Like h_read() for WS_TEST_DATA/@rel. */
static inline char *h_data(const char *rel, size_t *ret_len)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", WS_TEST_DATA, rel);
	return h_read(path, ret_len);
}

static inline void h_write(const char *path, const char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f)
		fail_msg("cannot create '%s': %s", path, strerror(errno));
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* A fresh directory under $TMPDIR (malloc'd path). */
static inline char *h_tmpdir(void)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char *p = NULL;

	assert_true(asprintf(&p, "%s/ws-test-XXXXXX", base) > 0);
	assert_non_null(mkdtemp(p));
	return p;
}

/* Runs a shell command; returns its exit status (or -1). */
static inline int h_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int h_sh(const char *fmt, ...)
{
	char *cmd = NULL;
	va_list ap;
	int st;

	va_start(ap, fmt);
	assert_true(vasprintf(&cmd, fmt, ap) > 0);
	va_end(ap);
	st = system(cmd);
	free(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

/* Runs a shell command and returns its standard output (malloc'd). */
static inline char *h_sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *h_sh_out(const char *fmt, ...)
{
	char *cmd = NULL, *out = NULL;
	size_t len = 0;
	va_list ap;
	FILE *p;

	va_start(ap, fmt);
	assert_true(vasprintf(&cmd, fmt, ap) > 0);
	va_end(ap);
	p = popen(cmd, "r");
	assert_non_null(p);
	{
		size_t cap = 0, n;
		do {
			if (len + 4096 + 1 > cap) {
				cap = cap ? cap * 2 : 8192;
				out = realloc(out, cap);
			}
			n = fread(out + len, 1, cap - len - 1, p);
			len += n;
		} while (n > 0);
		out[len] = '\0';
	}
	pclose(p);
	free(cmd);
	return out;
}

static inline bool h_have(const char *program)
{
	return h_sh("command -v %s >/dev/null 2>&1", program) == 0;
}

#endif
