/* SPDX-License-Identifier: MIT */
/* Logging: plain "LEVEL: message" lines on stderr, or, when stderr is the journal
 * (JOURNAL_STREAM matches it), structured journal entries (sd_journal_send) with PRIORITY,
 * MESSAGE and optional WORKSPACE= / REQUEST_ID= fields. */
#ifndef LOG_H
#define LOG_H

#include "ws_macros.h"

enum log_level { LOG_LVL_ERROR = 3, LOG_LVL_WARNING = 4, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

void log_init(const char *ident);
void log_set_level(int level);     /* messages above it are dropped; default INFO */
int log_get_level(void);

void log_msg(int level, const char *fmt, ...) WS_PRINTF(2, 3);
/* With structured context: @workspace and @request_id may be NULL. */
void log_ctx(int level, const char *workspace, const char *request_id, const char *fmt, ...)
	WS_PRINTF(4, 5);
/* Logs "message: strerror(-r)" and returns @r. */
int log_errno(int level, int r, const char *fmt, ...) WS_PRINTF(3, 4);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
