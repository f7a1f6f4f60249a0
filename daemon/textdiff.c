// SPDX-License-Identifier: MIT
/* Unified diffs for dry runs. The daemon's edits are single splices, so the changed region
 * between the common leading and trailing lines is the whole change; no general LCS is
 * needed, and the diff is still correct (if not minimal) for any pair of texts. */
#include "textdiff.h"

#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lines {
	const char **p;
	size_t *len; /* including the newline, if any */
	size_t n;
};

static int split(const char *s, size_t len, struct lines *l)
{
	size_t cap = 16;

	l->n = 0;
	l->p = malloc(cap * sizeof(*l->p));
	l->len = malloc(cap * sizeof(*l->len));
	if (!l->p || !l->len)
		return -ENOMEM;
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(s + i, '\n', len - i);
		size_t e = nl ? (size_t)(nl - s) + 1 : len;

		if (l->n == cap) {
			cap *= 2;
			const char **np = realloc(l->p, cap * sizeof(*l->p));
			if (!np)
				return -ENOMEM;
			l->p = np;
			size_t *nlen = realloc(l->len, cap * sizeof(*l->len));
			if (!nlen)
				return -ENOMEM;
			l->len = nlen;
		}
		l->p[l->n] = s + i;
		l->len[l->n] = e - i;
		l->n++;
		i = e;
	}
	return 0;
}

static void lines_free(struct lines *l)
{
	free(l->p);
	free(l->len);
}

static bool same(const struct lines *a, size_t i, const struct lines *b, size_t j)
{
	return a->len[i] == b->len[j] && memcmp(a->p[i], b->p[j], a->len[i]) == 0;
}

struct out {
	char **buf;
	size_t *len;
	size_t cap;
	int r;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->r < 0)
		return;
	if (*o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 256;
		while (cap < *o->len + n + 1)
			cap *= 2;
		char *nb = realloc(*o->buf, cap);
		if (!nb) {
			o->r = -ENOMEM;
			return;
		}
		*o->buf = nb;
		o->cap = cap;
	}
	memcpy(*o->buf + *o->len, s, n);
	*o->len += n;
	(*o->buf)[*o->len] = '\0';
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		put(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void put_line(struct out *o, char mark, const char *p, size_t len)
{
	put(o, &mark, 1);
	put(o, p, len);
	if (len == 0 || p[len - 1] != '\n')
		put(o, "\n\\ No newline at end of file\n", 30);
}

int textdiff_unified(char **buf, size_t *buf_len, const char *a_name, const char *a,
		     size_t a_len, const char *b_name, const char *b, size_t b_len, int context)
{
	struct lines la = {0}, lb = {0};
	struct out o = {buf, buf_len, 0, 0};
	size_t pre = 0, suf = 0, s_a, s_b, e_a, e_b;
	int r;

	if (*buf)
		o.cap = *buf_len + 1;
	r = split(a ? a : "", a ? a_len : 0, &la);
	if (r == 0)
		r = split(b, b_len, &lb);
	if (r < 0)
		goto out;
	while (pre < la.n && pre < lb.n && same(&la, pre, &lb, pre))
		pre++;
	while (suf < la.n - pre && suf < lb.n - pre &&
	       same(&la, la.n - 1 - suf, &lb, lb.n - 1 - suf))
		suf++;
	if (pre == la.n && pre == lb.n)
		goto out; /* identical */
	s_a = pre > (size_t)context ? pre - context : 0;
	s_b = s_a;
	e_a = la.n - suf + ((size_t)context < suf ? (size_t)context : suf);
	e_b = lb.n - suf + ((size_t)context < suf ? (size_t)context : suf);
	putf(&o, "--- %s\n+++ %s\n", a ? a_name : "/dev/null", b_name);
	putf(&o, "@@ -%zu,%zu +%zu,%zu @@\n", e_a - s_a ? s_a + 1 : s_a, e_a - s_a,
	     e_b - s_b ? s_b + 1 : s_b, e_b - s_b);
	for (size_t i = s_a; i < pre; i++)
		put_line(&o, ' ', la.p[i], la.len[i]);
	for (size_t i = pre; i < la.n - suf; i++)
		put_line(&o, '-', la.p[i], la.len[i]);
	for (size_t i = pre; i < lb.n - suf; i++)
		put_line(&o, '+', lb.p[i], lb.len[i]);
	for (size_t i = la.n - suf; i < e_a; i++)
		put_line(&o, ' ', la.p[i], la.len[i]);
	r = o.r;
out:
	lines_free(&la);
	lines_free(&lb);
	return r;
}
