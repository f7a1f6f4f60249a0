/* SPDX-License-Identifier: MIT */
/* Plumbing for wsbench: a monotonic clock, sample sets with median and p99, whole-file
 * writes, running a program and timing it, a line-based Unix-socket client, child process
 * bookkeeping (so that every child is killed and the scratch directory removed, even on
 * SIGINT), VmRSS, base64. Nothing here knows what is measured. */
#ifndef BENCHLIB_H
#define BENCHLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ws_macros.h"

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bl_now_ns(void);

struct bl_samples {
	uint64_t *v;       /* owned */
	size_t n, cap;
	bool sorted;
};

int bl_samples_add(struct bl_samples *s, uint64_t v);
/* The median and the 99th percentile (nearest rank); 0 for an empty set. Sorts @s. */
uint64_t bl_median(struct bl_samples *s);
uint64_t bl_p99(struct bl_samples *s);
void bl_samples_clear(struct bl_samples *s);

/* Writes @len bytes to @path (created 0644 or truncated; no fsync). Negative errno. */
int bl_write_file(const char *path, const void *buf, size_t len);
/* Reads a whole file (malloc'd, NUL-terminated). Negative errno. */
int bl_read_file(const char *path, char **ret_buf, size_t *ret_len);
/* mkdir -p. Negative errno. */
int bl_mkdirs(const char *path, mode_t mode);
/* rm -rf. Negative errno of the first failure. */
int bl_rm_rf(const char *path);

/* Runs @argv (argv[0] a path, or a name looked up in PATH) with stdin and, unless @quiet is
 * false, stdout and stderr on /dev/null; waits. *ret_ns is fork-to-reaped wall time,
 * *ret_status the exit status (128 + signal when killed). Negative errno when it could not
 * be started. */
int bl_run(const char *const argv[], bool quiet, uint64_t *ret_ns, int *ret_status);
/* execv (or execvp for a bare name) of a NULL-terminated @argv of at most 31 strings;
 * returns only on failure, with a negative errno. */
int bl_exec(const char *const argv[]);

/* The scratch directory removed by bl_cleanup() and on SIGINT/SIGTERM/SIGHUP. */
void bl_set_scratch(const char *dir);
/* Children killed (SIGKILL) by bl_cleanup() and on those signals. */
void bl_track_child(pid_t pid);
void bl_untrack_child(pid_t pid);
/* Installs the signal handlers (and ignores SIGPIPE). */
void bl_install_signals(void);
/* In a forked child: default dispositions again (exec keeps ignored signals ignored). */
void bl_child_signals(void);
/* Kills every tracked child, reaps it, removes the scratch directory unless @keep. */
void bl_cleanup(bool keep);
/* SIGTERM, wait up to @timeout_ms, then SIGKILL; reaps. Returns the exit status. */
int bl_stop_child(pid_t pid, int timeout_ms);

/* CPU time (user + system) that @pid has used so far, in nanoseconds, or a negative errno. */
int64_t bl_cpu_ns(pid_t pid);
/* VmRSS of @pid in KiB, or a negative errno. */
long bl_rss_kib(pid_t pid);

/* A line-oriented client on a Unix stream socket. */
struct bl_conn {
	int fd;
	char *buf;         /* owned: bytes received, not yet returned */
	size_t len, cap;
	size_t consumed;   /* bytes of buf handed out by the last bl_conn_line() */
};

int bl_conn_open(const char *path, struct bl_conn *c);
void bl_conn_close(struct bl_conn *c);
int bl_conn_send(struct bl_conn *c, const char *buf, size_t len);
/* The next line (without '\n', NUL-terminated, valid until the next call) and its length.
 * Waits at most @timeout_ms (-1: forever): -ETIMEDOUT; -EPIPE on end of stream. */
int bl_conn_line(struct bl_conn *c, int timeout_ms, char **ret_line, size_t *ret_len);

/* Standard base64 with padding of @len bytes into @out (room for 4 * ceil(len / 3) + 1). */
void bl_base64(const unsigned char *in, size_t len, char *out);

/* A printf into a malloc'd string; aborts the program when out of memory. */
char *bl_strf(const char *fmt, ...) WS_PRINTF(1, 2);

#endif
