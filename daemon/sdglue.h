/* SPDX-License-Identifier: MIT */
/* systemd glue: socket activation, sd_notify (READY, STATUS, STOPPING, RELOADING,
 * WATCHDOG), and a clean environment for children (no NOTIFY_SOCKET, LISTEN_*). */
#ifndef SDGLUE_H
#define SDGLUE_H

#include <uv.h>

/* Takes the socket passed by systemd: returns its fd (>= 3, O_CLOEXEC set) when LISTEN_PID
 * is ours and LISTEN_FDS is 1; 0 when nothing was passed (or LISTEN_PID is another
 * process's); -EINVAL when more than one fd was passed. Removes LISTEN_* from the
 * environment either way. */
int sdglue_listen_fd(void);
/* Saves NOTIFY_SOCKET for our own use and removes it from the environment. Call first. */
void sdglue_init(void);
void sdglue_ready(const char *status);
void sdglue_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sdglue_stopping(void);
void sdglue_reloading(void);
/* Starts WATCHDOG=1 pings at half of WATCHDOG_USEC when sdglue_init() saw it set for us
 * (WATCHDOG_PID absent or ours). The timer is unref'd: it never keeps the loop alive. */
int sdglue_watchdog_start(uv_loop_t *loop);
/* Closes the watchdog timer; run the loop once more before uv_loop_close(). */
void sdglue_watchdog_stop(void);

#endif
