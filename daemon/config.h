/* SPDX-License-Identifier: MIT */
/* Daemon configuration: defaults, then the config file ($XDG_CONFIG_HOME/workspaced/config
 * or --config FILE), then command-line flags. The file is `key = value` lines; `#` starts a
 * comment. Keys are the long flag names (repo, machine, sandbox-root, socket, verify,
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
	char *build_command;   /* NULL: the default for the machine */
	char *eval_command;    /* NULL: the default for the machine */
	char *state_dir;
	char *group;           /* socket group, or NULL */
	char *privilege_command; /* "sudo" */
	size_t max_message;
	int log_level;
	struct ipam_cfg ipam;
	char **check_files;    /* --check FILE...: NULL-terminated, or NULL */
	bool show_help, show_version;
};

/* Parses flags and the config file into @c (zeroed first). Fills @err (message for people)
 * and returns -EINVAL on bad usage. */
int config_load(int argc, char **argv, struct ws_config *c, struct ws_err *err);
/* Re-reads the config file over the current values (SIGHUP); flags given on the command
 * line keep their values. */
int config_reload(struct ws_config *c, struct ws_err *err);
void config_clear(struct ws_config *c);
/* The default build command for machine @host (malloc'd). */
char *config_default_build_command(const char *host);
char *config_default_eval_command(const char *host);
void config_usage(FILE *f);

#endif
