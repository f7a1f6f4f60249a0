/* SPDX-License-Identifier: MIT */
/* Daemon configuration: defaults, then the config file ($XDG_CONFIG_HOME/workspaced/config
 * or --config FILE), then command-line flags. The file is `key = value` lines; a line whose
 * first non-blank is `#` is a comment (a `#` inside a value is kept: build commands contain
 * `.#`). Keys are the long flag names (repo, machine, sandbox-root, socket, verify,
 * build-command, eval-command, state-dir) plus subnet, range.vm, range.container,
 * range.incus, group, privilege-command, max-message-bytes, log-level. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "ipam.h"

struct ws_err;

struct ws_config {
	char *config_file;     /* the file read, or NULL */
	char *repo;            /* absolute */
	char *machine;
	char *sandbox_root;
	char *socket_path;
	char *verify;          /* none | parse | eval | build */
	char *build_command;   /* set after loading: the default for the machine if not given */
	char *eval_command;    /* set after loading: the default for the machine if not given */
	char *state_dir;
	char *group;           /* socket group, or NULL */
	char *privilege_command; /* "sudo" */
	size_t max_message;
	int log_level;
	struct ipam_cfg ipam;
	char **check_files;    /* --check FILE...: NULL-terminated, or NULL */
	bool show_help, show_version;
	struct config_flags *flags; /* owned, private: the command line, kept for reloads */
};

/* Parses flags and the config file into @c (zeroed first). Fills @err (message for people,
 * naming the flag, or FILE:LINE for the config file) and returns -EINVAL on bad usage, -ENOENT
 * when an explicit --config file is missing. With --help or --version nothing else is
 * loaded. With --check, repo and socket may stay NULL. Free with config_clear(). */
int config_load(int argc, char **argv, struct ws_config *c, struct ws_err *err);
/* Re-reads the config file over the current values (SIGHUP); flags given on the command
 * line keep their values. On failure @c is left as it was. */
int config_reload(struct ws_config *c, struct ws_err *err);
void config_clear(struct ws_config *c);
/* The default build command for machine @host (malloc'd). */
char *config_default_build_command(const char *host);
char *config_default_eval_command(const char *host);
void config_usage(FILE *f);

#endif
