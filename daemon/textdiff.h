/* SPDX-License-Identifier: MIT */
/* Unified diffs of two texts, for `workspace.create` with dryRun. Pure module. */
#ifndef TEXTDIFF_H
#define TEXTDIFF_H

#include <stddef.h>

/* Appends to *buf (malloc'd, grown as needed; *buf may be NULL) a unified diff from @a to
 * @b with @context lines of context, headed `--- A_NAME` / `+++ B_NAME`. @a NULL means a new
 * file (/dev/null). The changed region is found from the common prefix and suffix lines,
 * which is exact for a single splice. Returns 0 or -ENOMEM. */
int textdiff_unified(char **buf, size_t *buf_len, const char *a_name, const char *a,
		     size_t a_len, const char *b_name, const char *b, size_t b_len, int context);

#endif
