/* SPDX-License-Identifier: MIT */
/* Logging for the daemon: one plain line per message on stderr, or, when stderr is
 * connected to the journal (JOURNAL_STREAM names its device and inode), one structured
 * journal entry with PRIORITY, MESSAGE, SYSLOG_IDENTIFIER and optional WORKSPACE= and
 * REQUEST_ID= fields. It does not rate-limit: callers that may repeat themselves do. */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

static int log_level = LOG_LVL_INFO;
static char log_ident[64] = "workspaced";
static bool log_journal;

/* True when JOURNAL_STREAM ("DEV:INODE") names the file behind stderr. */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	uintmax_t dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%ju:%ju", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

void log_init(const char *ident)
{
	if (ident && *ident)
		snprintf(log_ident, sizeof(log_ident), "%s", ident);
	log_journal = stderr_is_journal();
}

void log_set_level(int level)
{
	if (level < LOG_LVL_ERROR)
		level = LOG_LVL_ERROR;
	if (level > LOG_LVL_DEBUG)
		level = LOG_LVL_DEBUG;
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

static const char *level_name(int level)
{
	switch (level) {
	case LOG_LVL_ERROR:
		return "error";
	case LOG_LVL_WARNING:
		return "warning";
	case LOG_LVL_INFO:
		return "info";
	default:
		return "debug";
	}
}

static int journal_emit(int level, const char *workspace, const char *request_id,
			const char *msg)
{
	WS_AUTOFREE char *f_msg = NULL, *f_prio = NULL, *f_ident = NULL;
	WS_AUTOFREE char *f_ws = NULL, *f_req = NULL;
	struct iovec iov[5];
	int n = 0;

	if (asprintf(&f_msg, "MESSAGE=%s", msg) < 0 || asprintf(&f_prio, "PRIORITY=%d", level) < 0 ||
	    asprintf(&f_ident, "SYSLOG_IDENTIFIER=%s", log_ident) < 0)
		return -ENOMEM;
	iov[n++] = (struct iovec){ f_msg, strlen(f_msg) };
	iov[n++] = (struct iovec){ f_prio, strlen(f_prio) };
	iov[n++] = (struct iovec){ f_ident, strlen(f_ident) };
	if (workspace) {
		if (asprintf(&f_ws, "WORKSPACE=%s", workspace) < 0)
			return -ENOMEM;
		iov[n++] = (struct iovec){ f_ws, strlen(f_ws) };
	}
	if (request_id) {
		if (asprintf(&f_req, "REQUEST_ID=%s", request_id) < 0)
			return -ENOMEM;
		iov[n++] = (struct iovec){ f_req, strlen(f_req) };
	}
	return sd_journal_sendv(iov, n);
}

static void stderr_emit(int level, const char *workspace, const char *request_id,
			const char *msg)
{
	WS_AUTOFREE char *line = NULL;
	int len;

	/* One write per line, so lines from several threads never interleave. */
	if (workspace && request_id)
		len = asprintf(&line, "%s: %s: %s (workspace %s, request %s)\n", log_ident,
			       level_name(level), msg, workspace, request_id);
	else if (workspace)
		len = asprintf(&line, "%s: %s: %s (workspace %s)\n", log_ident, level_name(level),
			       msg, workspace);
	else if (request_id)
		len = asprintf(&line, "%s: %s: %s (request %s)\n", log_ident, level_name(level),
			       msg, request_id);
	else
		len = asprintf(&line, "%s: %s: %s\n", log_ident, level_name(level), msg);
	if (len < 0)
		return;
	(void)!write(STDERR_FILENO, line, (size_t)len);
}

static void log_v(int level, const char *workspace, const char *request_id, const char *fmt,
		  va_list ap) WS_PRINTF(4, 0);
static void log_v(int level, const char *workspace, const char *request_id, const char *fmt,
		  va_list ap)
{
	WS_AUTOFREE char *msg = NULL;
	int saved = errno;

	if (level > log_level)
		return;
	if (vasprintf(&msg, fmt, ap) < 0) {
		errno = saved;
		return;
	}
	if (!log_journal || journal_emit(level, workspace, request_id, msg) < 0)
		stderr_emit(level, workspace, request_id, msg);
	errno = saved;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(level, NULL, NULL, fmt, ap);
	va_end(ap);
}

void log_ctx(int level, const char *workspace, const char *request_id, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(level, workspace, request_id, fmt, ap);
	va_end(ap);
}

int log_errno(int level, int r, const char *fmt, ...)
{
	WS_AUTOFREE char *msg = NULL;
	va_list ap;
	int n;

	if (level > log_level)
		return r;
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return r;
	log_msg(level, "%s: %s", msg, strerror(r < 0 ? -r : r));
	return r;
}
