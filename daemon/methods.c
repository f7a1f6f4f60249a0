// SPDX-License-Identifier: MIT
/* The RPC method handlers and the write path. Reads (list, show, info) answer from a cached
 * parse of the machine file, refreshed whenever its bytes change. Writes (create, host-key
 * registration, from RPC or from the watcher) run one at a time in arrival order; their file
 * and git work runs on the thread pool with its own copies, verification runs as a child
 * process, and any failure after a write puts every file and the index back as they were.
 * This module does not parse Nix, talk to sockets or call libgit2 itself. */
#include "methods.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <json-c/printbuf.h>
#include <uv.h>

#include "daemon.h"
#include "flake.h"
#include "fsutil.h"
#include "gitstage.h"
#include "hostkeys.h"
#include "ipam.h"
#include "log.h"
#include "rpc.h"
#include "sdglue.h"
#include "state.h"
#include "textdiff.h"
#include "unitstate.h"
#include "verify.h"

#define MACHINE_MAX_BYTES (16 * 1024 * 1024)
#define LOCK_WAIT_MS 500
#define RELEASE_HOLD_SECONDS (24 * 3600)
#define DIR_DEBOUNCE_MS 100
#define PREFILL_DELAY_MS 5 /* see spare_kick() */
#define TRIM_DELAY_MS 2000 /* malloc_trim() this long after the last write */
#define WATCH_DELAY_MS 10  /* a burst of creates updates the watched names once per this */

enum op_kind { OP_CREATE, OP_HOSTKEY };

enum hk_status { HK_MISSING, HK_EMPTY, HK_INVALID, HK_UNKNOWN, HK_SAME, HK_MISMATCH,
		 HK_REGISTERED };

struct hk_item {
	char *name;
	enum hk_status status;
	char *key;          /* canonical key read from the file */
	char *old_key;      /* the key registered before (file or state) */
	char *message;      /* why it is invalid */
	bool state_update;  /* record @key as trusted */
};

/* Everything a pool job needs, copied so the loop may change its own state meanwhile. */
/* A step of a write run on a thread of its own next to the worker's (disk waits overlap
 * with the edit, or with each other). Inline when no thread can be made. */
struct side_thread;
struct side_job {
	pthread_t thread;            /* when no kept thread was free: one of its own */
	struct side_thread *on;      /* else the kept thread it runs on */
	sem_t done;                  /* ... which posts this when the job is done */
	bool started;
	int (*fn)(struct side_job *j);
	struct write_op *op;
	void *arg;
	size_t n;
	int r;
	struct ws_err err;
};

/* Temporaries made ahead of the next create (fsutil_tmp_prepare()): the machine file's,
 * unnamed and empty, and the workspace file's, unnamed, the template already written and
 * synced. A create then neither allocates an inode for them nor writes and syncs the
 * template while it runs: it names the one and fills the other. Made on a side thread after
 * each write (and at start-up); the next create joins that job, which began before it,
 * and takes them. Only the loop starts the job, and only while no write runs; only the
 * write that follows joins it.
 *
 * A second job makes another machine-file temporary, prefilled with the file as the
 * daemon last saw it and synced (fsutil_tmp_prefill()): a create that takes it writes and
 * syncs only what follows its new entry, often a page, instead of the whole file. That job
 * is not waited for: a create that finds it still running (one right after another) takes
 * the empty one, and the prefilled one waits for a later create. */
struct spare {
	struct side_job job;
	bool pending;                /* started, not joined yet */
	bool unsupported;            /* no O_TMPFILE on this file system: not tried again */
	char *dir;                   /* owned; the machine directory */
	struct fsutil_tmp main, ws;
	struct gitstage *git;        /* borrowed: its file for the next blob (gitstage_prepare) */
	struct side_job pf_job;
	bool pf_pending;             /* pf_job started, not joined yet */
	struct fsutil_tmp pf;        /* the prefilled one (pf_job) */
	char *pf_src;                /* owned until pf_job takes it: the bytes for pf */
	size_t pf_len;
};

struct write_op {
	uv_work_t work;              /* first member: callbacks cast back */
	struct write_op *next;
	struct methods *m;           /* borrowed: outlives every op */
	enum op_kind kind;
	struct rpc_call *call;       /* NULL for watcher batches */
	char *request_id;

	/* inputs */
	char *repo, *machine_dir, *machine_file, *machine_rel, *sandbox_root;
	struct gitstage *git;        /* borrowed; one job at a time */
	struct ipam_cfg ipam;
	uint32_t *held;
	size_t n_held;
	char *name;
	enum ws_type type;
	char *ip_req;
	bool auto_start, dry_run, replace;
	enum verify_level verify;
	struct hk_item *hk;
	size_t n_hk;

	/* results (worker) */
	int r;
	struct ws_err err;
	char *main_old, *main_new;
	size_t main_old_len, main_new_len;
	char *ws_path, *ws_rel;
	const char *ws_text;
	struct gitstage_entry ws_ent; /* the new file's index entry (blob written early) */
	struct fsutil_tmp main_tmp;  /* the machine file's temporary, made on a side thread */
	struct fsutil_tmp ws_spare;  /* the workspace file, preset (struct spare); fd -1: none */
	/* The edit's first result is written to main_tmp (fsync'd, not renamed) and its blob
	 * made (spec_fill, spec_blob) while the editor checks it; used when the check passes
	 * that very buffer, dropped otherwise. */
	struct side_job spec_fill, spec_blob;
	const char *spec_buf;        /* the candidate written ahead; NULL: none */
	size_t spec_len;
	bool spec_wanted;            /* a real create that will write: worth writing ahead */
	bool spec_running, spec_valid;
	struct gitstage_entry spec_ent; /* its blob id */
	int hold[2];                 /* the replaced files, kept open: see hold_old() */
	size_t same_len;             /* bytes main_old and main_new share from the start */
	size_t n_hold;
	char *idx_snap;
	size_t idx_snap_len;
	struct gitstage_change *stage_change; /* what the staging changed, for the undo */
	char *undo_note;             /* what the undo could not put back, for the reply */
	bool idx_existed;
	bool idx_fetched;            /* idx_snap and x0 were read (index_fetch) */
	char *x0;                    /* the machine file as staged before the write */
	size_t x0_len;
	int x0_r;                    /* 0, or -ENOENT: not tracked */
	bool wrote_main, wrote_ws, wrote_index, dir_created, staged_main;
	char *stage_note;
	char *diff;
	size_t diff_len;
	char ip[16];
	struct flake *new_flake;     /* parse of main_new, handed to the loop */
	struct flake *f0_cached;     /* a reference to the loop's model as the op started:
				      * the worker reads it instead of parsing the same bytes */
	bool undo_done;
	bool collect;                /* the edit function keeps its checked parse in new_flake */
	struct verify_job *vjob;
	struct json_object *verify_result;
};

struct methods {
	struct spare spare;
	struct daemon *d;            /* borrowed: owns us */
	struct flake *flake;         /* cached parse of the machine file, or NULL */
	struct ws_err flake_err;     /* why flake is NULL */
	char *bytes;                 /* the bytes @flake (or flake_err) was made from */
	size_t bytes_len;
	bool have_bytes;
	struct stat bytes_st;        /* the file as it was just before @bytes were read */
	bool bytes_st_valid;         /* and not "racy": modified long enough before reading */
	bool read_failed;            /* the last refresh could not read the file */
	unsigned flake_gen;          /* counts cache_set() calls: which model is current */
	struct write_op *head, *tail;
	bool busy;
	bool recheck_pending;
	bool watch_pending;          /* the declared names changed during a write */
	bool watched_ok;             /* the watched names are those of model @watched_gen */
	unsigned watched_gen;
	struct ws_entry *watch_adds; /* owned; name and type of each create since then, in order:
				      * model watched_gen + i + 1 added watch_adds[i] */
	size_t n_watch_adds;
	uv_fs_event_t dir_ev;
	uv_timer_t dir_timer;
	uv_timer_t pf_timer;         /* starts the prefill job (spare) PREFILL_DELAY_MS after a write */
	bool pf_useless;             /* the last create changed the first half of the file: a
				      * prefilled copy would be written again almost whole */
	uv_timer_t trim_timer;       /* gives freed memory back once writes pause */
	uv_timer_t watch_timer;      /* update_watched_names() after a write, once per burst */
	bool dir_started, dir_inited;
	dev_t dir_dev;               /* the directory dir_ev watches (its inode, not its path) */
	ino_t dir_ino;
	int n_open_handles;          /* open handles and pool jobs holding us */
	bool state_saving, state_again; /* a state write is on the pool / another is due */
	struct json_object *mismatch; /* owned: name -> message of a refused key, until the
				       * key file is trusted again or replaced */
	char *info_text;             /* rendered daemon.info result */
	time_t info_time;            /* ... at this second */
	unsigned info_gen;           /* ... for this model (flake_gen; an address can be
				      * reused by the next model) */
	bool info_null;              /* ... which was NULL (workspaces: null) */
	unsigned info_cfg_gen;       /* ... and this configuration */
};

static int read_fail(struct ws_err *err, int r, const char *rel);

static void op_free(struct write_op *op)
{
	if (!op)
		return;
	free(op->request_id);
	free(op->repo);
	free(op->machine_dir);
	free(op->machine_file);
	free(op->machine_rel);
	free(op->sandbox_root);
	free(op->held);
	free(op->name);
	free(op->ip_req);
	for (size_t i = 0; i < op->n_hk; i++) {
		free(op->hk[i].name);
		free(op->hk[i].key);
		free(op->hk[i].old_key);
		free(op->hk[i].message);
	}
	free(op->hk);
	ws_err_clear(&op->err);
	free(op->main_old);
	free(op->main_new);
	free(op->ws_path);
	free(op->ws_rel);
	free(op->idx_snap);
	gitstage_change_free(op->stage_change);
	free(op->undo_note);
	free(op->x0);
	free(op->stage_note);
	free(op->diff);
	for (size_t i = 0; i < op->n_hold; i++)
		(void)close(op->hold[i]);
	fsutil_tmp_drop(&op->main_tmp);
	fsutil_tmp_drop(&op->ws_spare);
	flake_free(op->new_flake);
	flake_free(op->f0_cached);
	json_putp(&op->verify_result);
	free(op);
}

/* ---- the cached model --------------------------------------------------------------- */


/* A `config` that is a relative path literal must exist next to the machine file. Checked
 * when an entry is shown, not when the model is built: a file deleted since is reported,
 * and a create does not stat every other entry's file. */
static void config_problem(struct methods *m, const struct ws_entry *e, struct json_object *probs)
{
	WS_AUTOFREE char *path = NULL;
	WS_AUTOFREE char *msg = NULL;
	struct json_object *p;
	struct stat st;

	if (!e->config)
		return; /* flake.c reports a missing attribute */
	if (strncmp(e->config, "./", 2) != 0 && strncmp(e->config, "../", 3) != 0)
		return; /* computed or absolute: not ours to judge */
	if (strpbrk(e->config, "${ \t\"'"))
		return;
	path = fsutil_join(m->d->machine_dir, e->config);
	if (!path || stat(path, &st) == 0)
		return;
	if (asprintf(&msg, "%s does not exist (relative to %s)", e->config, m->d->machine_dir) < 0) {
		msg = NULL;
		return;
	}
	p = json_object_new_object();
	json_object_object_add(p, "kind", json_object_new_string("CONFIG_MISSING"));
	json_object_object_add(p, "message", json_object_new_string(msg));
	json_object_array_add(probs, p); /* probs now owns p */
}

static void annotate(struct methods *m, struct flake *f)
{
	ipam_annotate(&m->d->cfg.ipam, flake_entries(f), flake_n_entries(f));
}

static void watch_adds_clear(struct methods *m)
{
	for (size_t i = 0; i < m->n_watch_adds; i++) {
		free(m->watch_adds[i].name);
		free(m->watch_adds[i].type);
	}
	free(m->watch_adds);
	m->watch_adds = NULL;
	m->n_watch_adds = 0;
}

/* A create's model is the one before it plus its entry (check_added() in flake.c): its
 * name and type are recorded, so that the watched set can follow without a sort of every
 * name, as long as nothing but creates changed the model since the watched set was made.
 * Call just before cache_set() puts the create's model in place. */
static void watch_note_create(struct methods *m, const char *name, enum ws_type type)
{
	struct ws_entry *grown;
	char *n, *t;

	if (!m->watched_ok || m->flake_gen != m->watched_gen + m->n_watch_adds) {
		watch_adds_clear(m); /* out of step already: the next update is a whole one */
		return;
	}
	n = strdup(name);
	t = strdup(ws_type_to_string(type));
	grown = n && t ? realloc(m->watch_adds, (m->n_watch_adds + 1) * sizeof(*grown)) : NULL;
	if (!grown) {
		free(n);
		free(t);
		watch_adds_clear(m);
		m->watched_ok = false;
		return;
	}
	m->watch_adds = grown;
	grown[m->n_watch_adds++] = (struct ws_entry){.name = n, .type = t};
}

/* Watches one more declared workspace; false when the watched set must be made anew. */
static bool watch_one(struct methods *m, const struct ws_entry *e)
{
	struct ws_err err = {0};
	WS_AUTOFREE char *unit = NULL;
	bool ok = true;

	/* names become paths under the sandbox root: only valid ones */
	if (ws_name_validate(e->name, WS_TYPE_INCUS, NULL) < 0)
		return true;
	if (m->d->hk && hostkeys_add_name(m->d->hk, e->name, &err) < 0) {
		log_warning("host-key watcher: %s", err.message);
		ok = false;
	}
	ws_err_clear(&err);
	if (m->d->units && e->type && unitstate_unit_name(e->type, e->name, &unit) == 0 &&
	    unitstate_add(m->d->units, unit) < 0)
		ok = false;
	return ok;
}

/* The host-key watcher and the unit-state tracker follow the declared workspaces. After
 * creates only, their names are added one by one; otherwise the whole set is made anew
 * (a sort of every name). */
static void update_watched_names(struct methods *m)
{
	struct ws_err err = {0};
	const char **names = NULL;
	char **units = NULL;
	size_t n = 0, n_units = 0;
	bool ok = true;

	if (!m->flake) {
		m->watched_ok = false;
		watch_adds_clear(m);
		return;
	}
	if (m->watched_ok && m->flake_gen == m->watched_gen + m->n_watch_adds) {
		for (size_t i = 0; i < m->n_watch_adds && ok; i++)
			ok = watch_one(m, &m->watch_adds[i]);
		watch_adds_clear(m);
		m->watched_gen = m->flake_gen;
		if (ok)
			return;
	}
	watch_adds_clear(m);
	m->watched_ok = false;
	n = flake_n_entries(m->flake);
	names = calloc(n ? n : 1, sizeof(*names));
	units = calloc(n ? n : 1, sizeof(*units));
	if (!names || !units)
		goto out;
	size_t n_names = 0;

	for (size_t i = 0; i < n; i++) {
		const struct ws_entry *e = &flake_entries(m->flake)[i];

		/* names become paths under the sandbox root: only valid ones */
		if (ws_name_validate(e->name, WS_TYPE_INCUS, NULL) < 0)
			continue;
		names[n_names++] = e->name;
		if (e->type && unitstate_unit_name(e->type, e->name, &units[n_units]) == 0)
			n_units++;
	}
	ok = true;
	if (m->d->hk && hostkeys_set_names(m->d->hk, names, n_names, &err) < 0) {
		log_warning("host-key watcher: %s", err.message);
		ok = false;
	}
	ws_err_clear(&err);
	if (m->d->units && unitstate_watch(m->d->units, (const char *const *)units, n_units) < 0)
		ok = false;
	m->watched_ok = ok;
	m->watched_gen = m->flake_gen;
out:
	for (size_t i = 0; units && i < n_units; i++)
		free(units[i]);
	free(units);
	free(names);
}

/* Takes ownership of @f (made from @bytes). */
static void cache_set(struct methods *m, struct flake *f, const char *bytes, size_t len,
		      const struct ws_err *err)
{
	char *copy = malloc(len + 1);

	if (!copy)
		return;
	memcpy(copy, bytes, len);
	copy[len] = '\0';
	flake_free(m->flake);
	m->flake = f;
	ws_err_clear(&m->flake_err);
	if (!f && err) {
		m->flake_err = *err;
		m->flake_err.data = err->data ? json_object_get(err->data) : NULL;
	}
	free(m->bytes);
	m->bytes = copy;
	m->bytes_len = len;
	m->have_bytes = true;
	m->flake_gen++;
	m->bytes_st_valid = false; /* the next refresh reads the file once more */
	if (f)
		annotate(m, f);
	if (m->busy)
		m->watch_pending = true; /* a write's own change: after its reply (op_finish) */
	else
		update_watched_names(m);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Re-reads the machine file; re-parses only when its bytes changed. Without @force, an
 * unchanged stat() (inode, size, mtime, ctime) skips the read, unless the file was modified
 * within two seconds of being read: timestamps are coarse, so such a "racy" file is read
 * again every time (as git does with its index). Returns 1 when the bytes changed, 0 when
 * not, < 0 (with @err) when the file cannot be read. */
static int cache_refresh_ex(struct methods *m, bool force, struct ws_err *err)
{
	WS_AUTOFREE char *buf = NULL;
	struct flake *f = NULL;
	struct ws_err perr = {0};
	struct stat st;
	bool st_ok;
	size_t len = 0;
	int r;

	st_ok = stat(m->d->machine_file, &st) == 0;
	if (!force && st_ok && m->have_bytes && m->bytes_st_valid && same_file(&st, &m->bytes_st))
		return 0;
	r = fsutil_read(m->d->machine_file, MACHINE_MAX_BYTES, &buf, &len);
	m->read_failed = r < 0;
	if (r < 0)
		return read_fail(err, r, m->d->machine_file_rel);
	m->bytes_st = st;
	m->bytes_st_valid = st_ok && time(NULL) - st.st_mtim.tv_sec >= 2;
	if (m->have_bytes && len == m->bytes_len && memcmp(buf, m->bytes, len) == 0)
		return 0;
	r = flake_parse(m->d->machine_file_rel, buf, len, &f, &perr);
	cache_set(m, r < 0 ? NULL : f, buf, len, r < 0 ? &perr : NULL);
	ws_err_clear(&perr);
	return 1;
}

static int cache_refresh(struct methods *m, struct ws_err *err)
{
	return cache_refresh_ex(m, false, err);
}

/* The current model, or NULL with @err (unreadable or unparsable file). */
static struct flake *model(struct methods *m, struct ws_err *err)
{
	int r = cache_refresh(m, err);

	if (r < 0)
		return NULL;
	if (!m->flake) {
		ws_err_clear(err);
		*err = m->flake_err;
		err->data = m->flake_err.data ? json_object_get(m->flake_err.data) : NULL;
		return NULL;
	}
	return m->flake;
}

/* ---- JSON ---------------------------------------------------------------------------- */

static struct json_object *str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

static struct json_object *entry_json(struct methods *m, const struct ws_entry *e)
{
	struct json_object *o = json_object_new_object();
	struct json_object *src = json_object_new_object();
	int t = ws_type_from_string(e->type);

	json_object_object_add(o, "name", json_object_new_string(e->name));
	json_object_object_add(o, "type", str_or_null(e->type));
	json_object_object_add(o, "ip", str_or_null(e->ip));
	if (e->ip_expr)
		json_object_object_add(o, "ipExpr", json_object_new_string(e->ip_expr));
	json_object_object_add(o, "config", str_or_null(e->config));
	json_object_object_add(o, "autoStart", e->auto_start < 0
						       ? NULL
						       : json_object_new_boolean(e->auto_start));
	json_object_object_add(o, "hostKey", str_or_null(e->host_key));
	if (t >= 0) {
		WS_AUTOFREE char *unit = ws_unit_name((enum ws_type)t, e->name);
		struct json_object *st = json_object_new_object();
		const char *active = UNITSTATE_UNKNOWN, *sub = UNITSTATE_UNKNOWN;

		if (unit && m->d->units)
			unitstate_get(m->d->units, unit, &active, &sub);
		json_object_object_add(st, "active", json_object_new_string(active));
		json_object_object_add(st, "sub", json_object_new_string(sub));
		json_object_object_add(o, "unit", str_or_null(unit));
		json_object_object_add(o, "state", st); /* o now owns st */
	} else {
		json_object_object_add(o, "unit", NULL);
		json_object_object_add(o, "state", NULL);
	}
	json_object_object_add(src, "file", json_object_new_string(m->d->machine_file_rel));
	json_object_object_add(src, "line", json_object_new_int(e->line));
	json_object_object_add(o, "source", src); /* o now owns src */
	json_object_object_add(o, "extra",
			       e->extra ? json_object_get(e->extra) : json_object_new_object());
	{
		struct json_object *probs = json_object_new_array(), *mm = NULL;
		size_t np = e->problems ? json_object_array_length(e->problems) : 0;

		for (size_t i = 0; i < np; i++)
			json_object_array_add(probs, json_object_get(
							     json_object_array_get_idx(e->problems, i)));
		config_problem(m, e, probs);
		if (m->mismatch && json_object_object_get_ex(m->mismatch, e->name, &mm)) {
			struct json_object *p = json_object_new_object();

			json_object_object_add(p, "kind", json_object_new_string("HOSTKEY_MISMATCH"));
			json_object_object_add(p, "message", json_object_get(mm));
			json_object_array_add(probs, p); /* probs now owns p */
		}
		json_object_object_add(o, "problems", probs); /* o now owns probs */
	}
	return o;
}

/* ---- params ---------------------------------------------------------------------------- */

static int param_str(struct json_object *params, const char *key, bool required,
		     const char **ret, struct ws_err *err)
{
	struct json_object *v = NULL;

	*ret = NULL;
	if (!params || !json_object_object_get_ex(params, key, &v) || !v) {
		if (required)
			return ws_fail(err, -EINVAL, WS_RPC_INVALID_PARAMS,
				       "missing parameter \"%s\"", key);
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return ws_fail(err, -EINVAL, WS_RPC_INVALID_PARAMS,
			       "parameter \"%s\" must be a string", key);
	if (strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
		/* a NUL would cut the value short: it breaks the rule of what the value is */
		int code = !strcmp(key, WS_KEY_NAME) ? WS_E_NAME_INVALID
			   : !strcmp(key, WS_KEY_TYPE) ? WS_E_TYPE_INVALID
			   : !strcmp(key, WS_KEY_IP)   ? WS_E_IP_INVALID
						       : WS_RPC_INVALID_PARAMS;
		return ws_fail(err, -EINVAL, code,
			       "parameter \"%s\" must not contain a NUL character", key);
	}
	*ret = json_object_get_string(v);
	return 0;
}

static int param_bool(struct json_object *params, const char *key, bool *ret,
		      struct ws_err *err)
{
	struct json_object *v = NULL;

	*ret = false;
	if (!params || !json_object_object_get_ex(params, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, json_type_boolean))
		return ws_fail(err, -EINVAL, WS_RPC_INVALID_PARAMS,
			       "parameter \"%s\" must be true or false", key);
	*ret = json_object_get_boolean(v);
	return 0;
}

static void fail_call(struct rpc_call *call, struct ws_err *err)
{
	rpc_call_fail(call, err);
	ws_err_clear(err);
}

/* ---- the write queue ------------------------------------------------------------------ */

static void op_start(struct write_op *op);
static void spare_kick(struct methods *m);
static void machine_recheck(struct methods *m);
static void dir_watch_check(struct methods *m);

static void queue_next(struct methods *m)
{
	if (m->busy || !m->head)
		return;
	m->busy = true;
	op_start(m->head);
}

static void queue_push(struct methods *m, struct write_op *op)
{
	if (m->tail)
		m->tail->next = op;
	else
		m->head = op;
	m->tail = op;
	queue_next(m);
}

static void close_held(struct write_op *op);

static void trim_timer_cb(uv_timer_t *t)
{
	(void)t;
	(void)malloc_trim(0);
}

static void watch_timer_cb(uv_timer_t *t)
{
	update_watched_names(t->data);
}

/* A write's new names get their watches shortly after its reply: the workspace cannot boot
 * before its owner deploys, and a key already there is found when its watch starts. Creates
 * in a row then cost one update (a sort of every name) per WATCH_DELAY_MS, not one each. */
static void watch_names_soon(struct methods *m)
{
	if (!m->watch_timer.data) {
		update_watched_names(m);
		return;
	}
	if (!uv_is_active((uv_handle_t *)&m->watch_timer) &&
	    uv_timer_start(&m->watch_timer, watch_timer_cb, WATCH_DELAY_MS, 0) < 0)
		update_watched_names(m);
}

static void op_finish(struct write_op *op)
{
	struct methods *m = op->m;

	m->head = op->next;
	if (!m->head)
		m->tail = NULL;
	m->busy = false;
	close_held(op);
	op_free(op);
	if (m->watch_pending) {
		m->watch_pending = false;
		watch_names_soon(m);
	}
	/* a write parses the machine file on a pool thread: once writes pause, give those
	 * pages back rather than let each thread's malloc arena keep its high-water mark (not
	 * after every write: the next one would fault the same pages in again) */
	if (m->trim_timer.data)
		(void)uv_timer_start(&m->trim_timer, trim_timer_cb, TRIM_DELAY_MS, 0);
	if (m->recheck_pending) {
		m->recheck_pending = false;
		machine_recheck(m);
	}
	if (!m->d->stopping)
		spare_kick(m);
	if (m->d->stopping && !m->head) {
		daemon_idle(m->d);
		return;
	}
	queue_next(m);
}

static struct write_op *op_new(struct methods *m, enum op_kind kind, struct rpc_call *call)
{
	struct daemon *d = m->d;
	struct write_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->m = m;
	op->kind = kind;
	op->call = call;
	op->request_id = call ? strdup(rpc_call_id_text(call)) : NULL;
	op->repo = strdup(d->cfg.repo);
	op->machine_dir = strdup(d->machine_dir);
	op->machine_file = strdup(d->machine_file);
	op->machine_rel = strdup(d->machine_file_rel);
	op->sandbox_root = strdup(d->cfg.sandbox_root);
	op->git = d->git;
	op->ipam = d->cfg.ipam;
	op->main_tmp.fd = -1;
	op->ws_spare.fd = -1;
	if (!op->repo || !op->machine_dir || !op->machine_file || !op->machine_rel ||
	    !op->sandbox_root) {
		op_free(op);
		return NULL;
	}
	return op;
}

/* ---- worker helpers (pool thread: they see only the op) ------------------------------ */

/* The error for a machine file that cannot be read (r from fsutil_read). */
static int read_fail(struct ws_err *err, int r, const char *rel)
{
	if (r == -EFBIG) {
		ws_fail(err, r, WS_E_CONFIG_UNSUPPORTED,
			"%s is larger than %d MiB, the most the daemon reads", rel,
			MACHINE_MAX_BYTES >> 20);
		ws_err_set_str(err, "file", rel);
		return r;
	}
	if (r == -EINVAL || r == -EISDIR) {
		ws_fail(err, r, WS_E_CONFIG_UNSUPPORTED,
			"%s is not a regular file; the daemon reads and edits only regular files",
			rel);
		ws_err_set_str(err, "file", rel);
		return r;
	}
	return ws_fail(err, r, 0, "cannot read '%s': %s", rel, strerror(-r));
}

/* The daemon edits only what lies inside the repository: machines/HOST must resolve inside
 * it, default.nix must be a regular file (not a link), workspaces/ a real directory. */
static int check_layout(struct write_op *op)
{
	WS_AUTOFREE char *repo = realpath(op->repo, NULL);
	WS_AUTOFREE char *dir = realpath(op->machine_dir, NULL);
	WS_AUTOFREE char *wsdir = fsutil_join(op->machine_dir, "workspaces");
	struct stat st;
	size_t n;

	if (!repo || !dir || !wsdir)
		return ws_fail(&op->err, -errno ? -errno : -ENOMEM, 0, "cannot resolve '%s': %m",
			       op->machine_dir);
	n = strlen(repo);
	if (strncmp(dir, repo, n) != 0 || dir[n] != '/')
		return ws_fail(&op->err, -EXDEV, WS_E_CONFIG_UNSUPPORTED,
			       "%s resolves to '%s', outside the repository; the daemon edits "
			       "only files inside it",
			       op->machine_dir, dir);
	if (lstat(op->machine_file, &st) == 0 && !S_ISREG(st.st_mode))
		return ws_fail(&op->err, -EINVAL, WS_E_CONFIG_UNSUPPORTED,
			       "%s is %s; the daemon edits only regular files", op->machine_rel,
			       S_ISLNK(st.st_mode) ? "a symbolic link" : "not a regular file");
	if (lstat(wsdir, &st) == 0 && !S_ISDIR(st.st_mode))
		return ws_fail(&op->err, -EINVAL, WS_E_CONFIG_UNSUPPORTED,
			       "%s/workspaces is %s; the daemon writes workspace files only into "
			       "a real directory inside the repository",
			       op->machine_dir, S_ISLNK(st.st_mode) ? "a symbolic link" : "not a directory");
	return 0;
}

static int read_main(struct write_op *op, char **ret, size_t *ret_len)
{
	int r = check_layout(op);

	if (r < 0)
		return r;
	r = fsutil_read(op->machine_file, MACHINE_MAX_BYTES, ret, ret_len);
	if (r < 0)
		return read_fail(&op->err, r, op->machine_rel);
	/* old Mac line endings: the editor copies LF and CRLF layouts only, so it refuses
	 * rather than write a line ending of another kind into the file */
	if (!memchr(*ret, '\n', *ret_len) && memchr(*ret, '\r', *ret_len)) {
		ws_fail(&op->err, -EINVAL, WS_E_CONFIG_UNSUPPORTED,
			"%s uses CR-only line endings; convert it to LF (or CRLF) to let the "
			"daemon edit it", op->machine_rel);
		ws_err_set_str(&op->err, "file", op->machine_rel);
		free(*ret);
		*ret = NULL;
		return -EINVAL;
	}
	return 0;
}

/* CONFLICT: the machine file changed under the write. @kept_at: where a second version
 * saved during the exchange was left (replace_main()), or NULL. */
static int conflict_fail(struct write_op *op, const char *kept_at)
{
	if (kept_at)
		ws_fail(&op->err, -EAGAIN, WS_E_CONFLICT,
			"%s changed twice while the daemon was replacing it; nothing was written, "
			"and the later of the two versions is kept at '%s' (the file holds the "
			"earlier one)", op->machine_rel, kept_at);
	else
		ws_fail(&op->err, -EAGAIN, WS_E_CONFLICT,
			"%s changed while the daemon was working; nothing was written",
			op->machine_rel);
	ws_err_set_str(&op->err, "file", op->machine_rel);
	if (kept_at)
		ws_err_set_str(&op->err, "keptAt", kept_at);
	return -EAGAIN;
}

/* The main file must still hold what we parsed; else CONFLICT. */
static int check_unchanged(struct write_op *op, const char *want, size_t want_len)
{
	WS_AUTOFREE char *now = NULL;
	size_t len = 0;
	int r = read_main(op, &now, &len);

	if (r < 0)
		return r;
	if (len != want_len || memcmp(now, want, len) != 0)
		return conflict_fail(op, NULL);
	return 0;
}

/* Puts back what this op wrote, newest first. Files are restored only if they still hold
 * our bytes: a hand edit made meanwhile is never overwritten. */
static void undo_writes(struct write_op *op)
{
	struct ws_err err = {0};
	WS_AUTOFREE char *now = NULL;
	size_t len = 0;

	fsutil_tmp_drop(&op->main_tmp);
	/* the replaced files' blocks first: on a full disk, the copies put back need them */
	for (size_t i = 0; i < op->n_hold; i++)
		(void)close(op->hold[i]);
	op->n_hold = 0;
	if (op->wrote_index) {
		if (gitstage_undo(op->git, op->stage_change, op->idx_existed ? op->idx_snap : NULL,
				  op->idx_snap_len, LOCK_WAIT_MS * 4, &err) < 0) {
			log_error("cannot restore the git index: %s", err.message);
			free(op->undo_note);
			if (asprintf(&op->undo_note,
				     "what it staged is still staged (%s); `git restore --staged "
				     "%s%s%s` takes it back",
				     err.code == WS_E_BUSY
					     ? "the git index stayed locked by another git command"
					     : "the git index could not be written",
				     op->machine_rel, op->ws_rel ? " " : "",
				     op->ws_rel ? op->ws_rel : "") < 0)
				op->undo_note = NULL;
		}
		ws_err_clear(&err);
		op->wrote_index = false;
	}
	if (op->wrote_main) {
		/* put back only over our own bytes: swapped in one step and checked (as the
		 * write itself), so a hand edit made meanwhile is never lost */
		struct fsutil_tmp t = {.fd = -1};
		int r = fsutil_tmp_fill(op->machine_file, op->main_old, op->main_old_len, 0, &t,
					&err);

		if (r == 0)
			r = fsutil_tmp_commit_if(op->machine_file, &t, op->main_new,
						 op->main_new_len, 0, NULL, &err);
		if (r == -EAGAIN)
			log_warning("'%s' changed after the daemon wrote it; leaving it as it is "
				    "(%s)", op->machine_rel, err.message);
		else if (r < 0) {
			log_error("cannot restore '%s': %s", op->machine_rel, err.message);
			if (!op->undo_note &&
			    asprintf(&op->undo_note, "%s could not be put back (%s)",
				     op->machine_rel, err.message) < 0)
				op->undo_note = NULL;
		}
		fsutil_tmp_drop(&t);
		ws_err_clear(&err);
		op->wrote_main = false;
	}
	if (op->wrote_ws) {
		free(now);
		now = NULL;
		if (fsutil_read(op->ws_path, MACHINE_MAX_BYTES, &now, &len) == 0 &&
		    strlen(op->ws_text) == len && memcmp(now, op->ws_text, len) == 0)
			(void)fsutil_remove(op->ws_path);
		op->wrote_ws = false;
	}
	if (op->dir_created) {
		WS_AUTOFREE char *dir = fsutil_join(op->machine_dir, "workspaces");
		if (dir)
			(void)rmdir(dir);
		op->dir_created = false;
	}
}

typedef int (*edit_fn)(struct write_op *op, const struct flake *f, char **ret, size_t *ret_len,
		       struct ws_err *err);

/* Reads what the index holds before the write: its bytes, to put back on failure, and the
 * machine file's staged version. Only reads, so it can run next to the edit. */
static int index_fetch(struct write_op *op, struct ws_err *err)
{
	int r = gitstage_snapshot_index(op->git, &op->idx_snap, &op->idx_snap_len, err);

	if (r == -ENOENT) {
		op->idx_existed = false;
		ws_err_clear(err);
	} else if (r < 0) {
		return r;
	} else {
		op->idx_existed = true;
	}
	op->x0_r = gitstage_read_index(op->git, op->machine_rel, &op->x0, &op->x0_len, err);
	if (op->x0_r < 0 && op->x0_r != -ENOENT)
		return op->x0_r;
	ws_err_clear(err);
	op->idx_fetched = true;
	return 0;
}

/* What the index should get for the machine file: our edit applied to the index's own
 * version, so unstaged user changes stay unstaged. Sets op->staged_main / stage_note. */
static int index_version(struct write_op *op, edit_fn edit, char **ret, size_t *ret_len)
{
	const char *x0 = op->x0;
	struct flake *fx = NULL;
	struct ws_err err = {0};
	size_t x0_len = op->x0_len;
	int r;

	if (op->x0_r == -ENOENT) {
		op->staged_main = false;
		if (asprintf(&op->stage_note,
			     "%s is not tracked by git; it was changed but left unstaged (flakes "
			     "only see tracked files: git add it yourself)",
			     op->machine_rel) < 0)
			op->stage_note = NULL;
		return 0;
	}
	if (x0_len == op->main_old_len && memcmp(x0, op->main_old, x0_len) == 0) {
		*ret = malloc(op->main_new_len + 1);
		if (!*ret)
			return -ENOMEM;
		memcpy(*ret, op->main_new, op->main_new_len);
		*ret_len = op->main_new_len;
		op->staged_main = true;
		return 0;
	}
	r = flake_parse(op->machine_rel, x0, x0_len, &fx, &err);
	if (r == 0)
		r = edit(op, fx, ret, ret_len, &err);
	flake_free(fx);
	if (r < 0) {
		op->staged_main = false;
		if (asprintf(&op->stage_note,
			     "%s has unstaged changes and the daemon could not apply its edit to "
			     "the staged version (%s); the file was changed but left unstaged",
			     op->machine_rel, err.message) < 0)
			op->stage_note = NULL;
		ws_err_clear(&err);
		return 0;
	}
	op->staged_main = true;
	if (asprintf(&op->stage_note,
		     "%s had unstaged changes: only the daemon's edit was staged; your changes "
		     "stay unstaged",
		     op->machine_rel) < 0)
		op->stage_note = NULL;
	return 0;
}

static void *side_main(void *userdata)
{
	struct side_job *j = userdata;

	j->r = j->fn(j);
	return NULL;
}

/* Side jobs run on a few threads kept for them (one write runs at most four at once): a
 * thread made per job costs its creation and, on a busy machine, is often left waiting for
 * a CPU much longer than a sleeping thread that is woken. */
#define SIDE_THREADS 4
struct side_thread {
	sem_t go;                    /* posted with job set */
	struct side_job *job;
	atomic_bool busy;
	bool ok;                     /* the thread runs */
};
static struct side_thread side_threads[SIDE_THREADS];
static pthread_once_t side_once = PTHREAD_ONCE_INIT;

static void *side_thread_main(void *userdata)
{
	struct side_thread *t = userdata;

	for (;;) {
		struct side_job *j;

		while (sem_wait(&t->go) < 0)
			; /* EINTR */
		j = t->job;
		j->r = j->fn(j);
		/* free for the next job before the joiner may go on: @j is valid until then */
		atomic_store(&t->busy, false);
		(void)sem_post(&j->done);
	}
	return NULL;
}

static void side_threads_init(void)
{
	for (size_t i = 0; i < SIDE_THREADS; i++) {
		struct side_thread *t = &side_threads[i];
		pthread_attr_t attr;
		pthread_t thread;

		if (sem_init(&t->go, 0, 0) < 0)
			continue;
		if (pthread_attr_init(&attr) != 0)
			continue;
		(void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		t->ok = pthread_create(&thread, &attr, side_thread_main, t) == 0;
		(void)pthread_attr_destroy(&attr);
	}
}

static void side_start(struct side_job *j, int (*fn)(struct side_job *), struct write_op *op,
		       void *arg, size_t n)
{
	*j = (struct side_job){.fn = fn, .op = op, .arg = arg, .n = n};
	(void)pthread_once(&side_once, side_threads_init);
	for (size_t i = 0; i < SIDE_THREADS; i++) {
		struct side_thread *t = &side_threads[i];
		bool idle = false;

		if (!t->ok || !atomic_compare_exchange_strong(&t->busy, &idle, true))
			continue;
		if (sem_init(&j->done, 0, 0) < 0) {
			atomic_store(&t->busy, false);
			break;
		}
		j->on = t;
		t->job = j;
		j->started = true;
		(void)sem_post(&t->go);
		return;
	}
	j->started = pthread_create(&j->thread, NULL, side_main, j) == 0;
	if (!j->started)
		j->r = fn(j);
}

/* Ends @j once its thread is done with it: waiting for that with @wait, else only when it
 * is done already (false: still running, nothing changed). */
static bool side_reap(struct side_job *j, bool wait)
{
	if (j->started && j->on) {
		if (!wait && sem_trywait(&j->done) < 0)
			return false;
		while (wait && sem_wait(&j->done) < 0)
			; /* EINTR */
		(void)sem_destroy(&j->done);
		j->on = NULL;
	} else if (j->started) {
		if (!wait && pthread_tryjoin_np(j->thread, NULL) != 0)
			return false;
		if (wait)
			(void)pthread_join(j->thread, NULL);
	}
	j->started = false;
	return true;
}

/* Waits for @j; its error goes to @r/@err unless an earlier one is there. */
static int side_join(struct side_job *j, int r, struct ws_err *err)
{
	(void)side_reap(j, true);
	if (r == 0 && j->r < 0) {
		r = j->r;
		ws_err_move(err, &j->err);
	}
	ws_err_clear(&j->err);
	return r;
}

/* side_join() if the job is done (its error dropped); false while it runs. */
static bool side_try_join(struct side_job *j)
{
	if (!side_reap(j, false))
		return false;
	ws_err_clear(&j->err);
	return true;
}

static int spare_step(struct side_job *j)
{
	struct spare *sp = j->arg;
	int r;

	gitstage_prepare(sp->git);
	if (sp->unsupported)
		return 0;
	if (sp->main.fd < 0) {
		r = fsutil_tmp_prepare(sp->dir, &sp->main);
		if (r == -EOPNOTSUPP || r == -EISDIR || r == -EINVAL) {
			sp->unsupported = true;
			return 0;
		}
	}
	if (sp->ws.fd < 0 && fsutil_tmp_prepare(sp->dir, &sp->ws) == 0) {
		const char *text = flake_workspace_template();

		if (fsutil_tmp_preset(&sp->ws, text, strlen(text)) < 0)
			fsutil_tmp_drop(&sp->ws);
	}
	return 0;
}

static int prefill_step(struct side_job *j)
{
	struct spare *sp = j->arg;
	char *src = ws_steal(&sp->pf_src);

	if (fsutil_tmp_prepare(sp->dir, &sp->pf) < 0) {
		free(src);
		return 0;
	}
	if (fsutil_tmp_prefill(&sp->pf, src, sp->pf_len) < 0)
		fsutil_tmp_drop(&sp->pf);
	return 0;
}

static bool prefill_wanted(struct methods *m)
{
	struct spare *sp = &m->spare;

	return !m->busy && !m->pf_useless && sp->dir && !sp->pf_pending && sp->pf.fd < 0 &&
	       !sp->unsupported && m->have_bytes && m->bytes_len > 0;
}

static void pf_timer_cb(uv_timer_t *t)
{
	struct methods *m = t->data;
	struct spare *sp = &m->spare;

	if (!prefill_wanted(m))
		return;
	sp->pf_src = malloc(m->bytes_len);
	if (!sp->pf_src)
		return;
	memcpy(sp->pf_src, m->bytes, m->bytes_len);
	sp->pf_len = m->bytes_len;
	side_start(&sp->pf_job, prefill_step, NULL, sp, 0);
	sp->pf_pending = true;
}

/* Loop, between writes: makes the temporaries the next create will want. The prefilled
 * one a little later: writing and syncing a whole machine file is what a create that
 * follows at once (a script making several) would have to wait behind on the disk. */
static void spare_kick(struct methods *m)
{
	struct spare *sp = &m->spare;

	if (m->busy)
		return;
	if (!sp->dir) {
		sp->dir = strdup(m->d->machine_dir);
		if (!sp->dir)
			return;
	}
	if (!sp->pending && (!(sp->unsupported || (sp->main.fd >= 0 && sp->ws.fd >= 0)) ||
			     gitstage_prepare_wanted(m->d->git))) {
		sp->git = m->d->git;
		side_start(&sp->job, spare_step, NULL, sp, 0);
		sp->pending = true;
	}
	if (m->pf_timer.data && prefill_wanted(m))
		(void)uv_timer_start(&m->pf_timer, pf_timer_cb, PREFILL_DELAY_MS, 0);
}

/* Worker of a create: waits for the job making them (it began before this write), then
 * takes them. */
static void spare_take(struct write_op *op)
{
	struct spare *sp = &op->m->spare;
	struct ws_err err = {0};

	if (sp->pf_pending && side_try_join(&sp->pf_job))
		sp->pf_pending = false;
	if (!sp->pf_pending && op->main_tmp.fd < 0 && sp->pf.fd >= 0) {
		op->main_tmp = sp->pf;
		sp->pf = (struct fsutil_tmp){.fd = -1};
	}
	if (sp->pending) {
		(void)side_join(&sp->job, 0, &err);
		ws_err_clear(&err);
		sp->pending = false;
	}
	if (op->main_tmp.fd < 0 && sp->main.fd >= 0) {
		op->main_tmp = sp->main;
		sp->main = (struct fsutil_tmp){.fd = -1};
	}
	if (op->ws_spare.fd < 0 && sp->ws.fd >= 0) {
		op->ws_spare = sp->ws;
		sp->ws = (struct fsutil_tmp){.fd = -1};
	}
}

/* At the end: waits for a job still making them, then closes them (nothing to remove:
 * they have no names). */
static void spare_free(struct spare *sp)
{
	struct ws_err err = {0};

	if (sp->pending) {
		(void)side_join(&sp->job, 0, &err);
		ws_err_clear(&err);
		sp->pending = false;
	}
	if (sp->pf_pending) {
		(void)side_join(&sp->pf_job, 0, &err);
		ws_err_clear(&err);
		sp->pf_pending = false;
	}
	free(sp->pf_src);
	sp->pf_src = NULL;
	fsutil_tmp_drop(&sp->pf);
	fsutil_tmp_drop(&sp->main);
	fsutil_tmp_drop(&sp->ws);
	free(sp->dir);
	sp->dir = NULL;
}

static int blobs_step(struct side_job *j)
{
	return gitstage_write_blobs(j->op->git, j->arg, j->n, &j->err);
}

static int dirsync_step(struct side_job *j)
{
	int r = fsutil_sync_parent(j->op->machine_file);

	if (r < 0)
		ws_fail(&j->err, r, 0, "cannot sync the directory of '%s': %s", j->op->machine_rel,
			strerror(-r));
	return r;
}

/* The machine file's temporary made ahead (best effort: the write makes one otherwise). */
static void make_main_tmp(struct write_op *op)
{
	struct ws_err err = {0};

	(void)fsutil_tmp_make(op->machine_file, &op->main_tmp, &err);
	ws_err_clear(&err);
}

static int fetch_step(struct side_job *j)
{
	make_main_tmp(j->op);
	return index_fetch(j->op, &j->err);
}

/* Keeps @fd, a file being replaced, open until after the reply. The replaced file's blocks
 * are freed when the last descriptor closes, which can take a millisecond or more (with
 * online discard, say): close_held() does it on the pool after the reply, not in the
 * write. Best effort. */
static void hold_fd(struct write_op *op, int fd)
{
	if (fd < 0)
		return;
	if (op->n_hold < WS_ARRAY_SIZE(op->hold))
		op->hold[op->n_hold++] = fd;
	else
		(void)close(fd);
}

/* hold_fd() of the file at @path, opened before it is replaced. */
static void hold_old(struct write_op *op, const char *path)
{
	if (op->n_hold < WS_ARRAY_SIZE(op->hold))
		hold_fd(op, open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
}

struct close_job {
	uv_work_t work; /* first member */
	int fds[2];
	size_t n;
};

static void close_work_cb(uv_work_t *w)
{
	struct close_job *j = (struct close_job *)w;

	for (size_t i = 0; i < j->n; i++)
		(void)close(j->fds[i]);
}

static void close_done_cb(uv_work_t *w, int status)
{
	(void)status;
	free(w);
}

static void close_held(struct write_op *op)
{
	struct close_job *j;

	if (op->n_hold == 0)
		return;
	j = calloc(1, sizeof(*j));
	if (j) {
		memcpy(j->fds, op->hold, op->n_hold * sizeof(int));
		j->n = op->n_hold;
		if (uv_queue_work(op->m->d->loop, &j->work, close_work_cb, close_done_cb) == 0) {
			op->n_hold = 0;
			return;
		}
		free(j);
	}
	for (size_t i = 0; i < op->n_hold; i++)
		(void)close(op->hold[i]);
	op->n_hold = 0;
}

/* Puts the filled main_tmp in place of the machine file while it still holds main_old
 * (CONFLICT otherwise, the file untouched). The replaced file is held open (hold_fd()). */
static int replace_main(struct write_op *op)
{
	int old_fd = -1;
	int r = fsutil_tmp_commit_if(op->machine_file, &op->main_tmp, op->main_old,
				     op->main_old_len, FSUTIL_NO_DIR_SYNC, &old_fd, &op->err);

	if (r == -EAGAIN) {
		struct json_object *kept = NULL;
		WS_AUTOFREE char *at = NULL;

		if (op->err.data && json_object_object_get_ex(op->err.data, "keptAt", &kept))
			at = strdup(json_object_get_string(kept));
		ws_err_clear(&op->err);
		return conflict_fail(op, at);
	}
	if (r < 0)
		return r;
	op->wrote_main = true;
	hold_fd(op, old_fd);
	return 0;
}

/* Writes main_new over main_old (compare-and-swap) and stages it with @extra. */
static int write_and_stage(struct write_op *op, edit_fn edit, const struct gitstage_entry *extra,
			   size_t n_extra)
{
	struct gitstage_entry ents[2];
	struct side_job blobs, dsync;
	WS_AUTOFREE char *xbuf = NULL;
	size_t xlen = 0, n = 0;
	int r;

	if (!op->idx_fetched) {
		r = index_fetch(op, &op->err);
		if (r < 0)
			return r;
	}
	r = index_version(op, edit, &xbuf, &xlen);
	if (r < 0)
		return r;
	/* before writing the file, a cheap early CONFLICT; once written (ahead, while the edit
	 * was checked) the exchange makes the one check that counts (replace_main()) */
	if (!op->spec_valid) {
		r = check_unchanged(op, op->main_old, op->main_old_len);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < n_extra; i++)
		ents[n++] = extra[i];
	if (op->staged_main) {
		ents[n] = (struct gitstage_entry){.path = op->machine_rel, .buf = xbuf,
						  .len = xlen};
		if (op->spec_valid && xlen == op->spec_len &&
		    memcmp(xbuf, op->spec_buf, xlen) == 0) {
			ents[n].have_id = true;
			memcpy(ents[n].id, op->spec_ent.id, GITSTAGE_ID_LEN);
		}
		n++;
	}
	/* the blobs are compressed into the object database on a thread of their own while
	 * the file goes to disk; unreferenced objects are harmless if either step fails */
	blobs = (struct side_job){0};
	for (size_t i = 0; i < n; i++)
		if (!ents[i].have_id) {
			side_start(&blobs, blobs_step, op, ents, n);
			break;
		}
	/* unless written and synced while the edit was checked */
	r = op->spec_valid ? 0
			   : fsutil_tmp_fill(op->machine_file, op->main_new, op->main_new_len, 0,
					     &op->main_tmp, &op->err);
	if (r == 0)
		r = replace_main(op);
	r = side_join(&blobs, r, &op->err);
	if (r < 0)
		return r;
	/* the file is in place, so the index can take its stat data while the directory's
	 * fsync makes the rename durable */
	side_start(&dsync, dirsync_step, op, NULL, 0);
	if (n > 0) {
		hold_old(op, gitstage_index_path(op->git));
		r = gitstage_stage(op->git, ents, n, LOCK_WAIT_MS, &op->stage_change, &op->err);
		if (r == 0)
			op->wrote_index = true;
	}
	r = side_join(&dsync, r, &op->err);
	if (r < 0 || n == 0)
		return r;
	log_debug("wrote %s and staged %zu path(s)", op->machine_rel, n);
	return 0;
}

/* ---- workspace.create ------------------------------------------------------------------ */

/* The speculative write of the edit's result (see spec_fill in struct write_op): the file
 * on one thread, its blob on another. */
static int spec_fill_step(struct side_job *j)
{
	struct write_op *op = j->op;

	return fsutil_tmp_fill(op->machine_file, op->spec_buf, op->spec_len, 0, &op->main_tmp,
			       &j->err);
}

static int spec_blob_step(struct side_job *j)
{
	struct write_op *op = j->op;

	return gitstage_write_blobs(op->git, &op->spec_ent, 1, &j->err);
}

static void spec_candidate(void *userdata, const char *buf, size_t len)
{
	struct write_op *op = userdata;

	if (op->spec_buf)
		return; /* only the first result is written ahead */
	op->spec_buf = buf;
	op->spec_len = len;
	op->spec_running = true;
	op->spec_ent = (struct gitstage_entry){.path = op->machine_rel, .buf = buf, .len = len};
	side_start(&op->spec_fill, spec_fill_step, op, NULL, 0);
	side_start(&op->spec_blob, spec_blob_step, op, NULL, 0);
}

/* Waits for the speculative write; it is valid when it succeeded and @accepted. Its errors
 * are not the request's: the write is simply done again the ordinary way. */
static void spec_finish(struct write_op *op, bool accepted)
{
	if (!op->spec_running)
		return;
	op->spec_running = false;
	(void)side_join(&op->spec_fill, -1, &op->spec_fill.err);
	(void)side_join(&op->spec_blob, -1, &op->spec_blob.err);
	op->spec_valid = accepted && op->spec_fill.r == 0 && op->spec_blob.r == 0;
	if (!op->spec_valid)
		fsutil_tmp_drop(&op->main_tmp);
}

static void spec_rejected(void *userdata, const char *buf)
{
	struct write_op *op = userdata;

	if (buf == op->spec_buf) {
		spec_finish(op, false);
		op->spec_buf = NULL; /* about to be freed; spec_running stays false */
		op->spec_len = 0;
	}
}

/* The create's edit, for the file as read and for the index's version of it. With
 * op->collect, the editor's checked parse of the result becomes op->new_flake, and with
 * op->spec_wanted the result is written ahead while it is checked. */
static int create_edit(struct write_op *op, const struct flake *f, char **ret, size_t *ret_len,
		       struct ws_err *err)
{
	WS_AUTOFREE char *config = NULL;
	const struct flake_edit_hooks hooks = {.candidate = spec_candidate,
					       .rejected = spec_rejected, .userdata = op};
	struct flake_new_entry e;
	struct flake *keep = NULL;
	int r;

	if (asprintf(&config, "./workspaces/%s.nix", op->name) < 0)
		return -ENOMEM;
	e = (struct flake_new_entry){.name = op->name, .type = op->type, .ip = op->ip,
				     .auto_start = op->auto_start, .config = config};
	r = flake_add_entry_parsed(f, &e, op->collect && op->spec_wanted ? &hooks : NULL, ret,
				   ret_len, op->collect ? &keep : NULL, err);
	if (r == 0 && keep) {
		flake_free(op->new_flake);
		op->new_flake = keep;
	}
	return r;
}

/* Reads the machine file into op->main_old and parses it, or takes the loop's model when
 * it was made from these very bytes (release with unload_main()). */
static int load_main(struct write_op *op, struct flake **ret_f)
{
	const char *cached;
	size_t cached_len = 0;
	int r = read_main(op, &op->main_old, &op->main_old_len);

	if (r < 0)
		return r;
	if (op->f0_cached) {
		cached = flake_bytes(op->f0_cached, &cached_len);
		if (cached_len == op->main_old_len &&
		    memcmp(cached, op->main_old, cached_len) == 0) {
			*ret_f = op->f0_cached;
			return 0;
		}
	}
	return flake_parse(op->machine_rel, op->main_old, op->main_old_len, ret_f, &op->err);
}

static void unload_main(struct write_op *op, struct flake *f)
{
	if (f != op->f0_cached)
		flake_free(f);
}

/* Next to the edit of default.nix, two threads: one writes the workspace file (mostly
 * waiting on fsync), the other reads the index as it is, writes the new file's blob and
 * makes the machine file's temporary. */
static int ws_write_step(struct side_job *j)
{
	struct write_op *op = j->op;
	int r;

	if (op->ws_spare.fd >= 0) {
		/* the template is on disk already: name it (never over a file) */
		struct ws_err err = {0};
		bool linked;

		r = fsutil_tmp_link_new(op->ws_path, &op->ws_spare, 0, &linked, &err);
		if (linked)
			op->wrote_ws = true; /* undone if anything else fails */
		if (linked || r == -EEXIST) {
			ws_err_move(&j->err, &err);
			return r;
		}
		/* not named (another file system, no /proc): the ordinary way */
		ws_err_clear(&err);
	}
	r = fsutil_replace(op->ws_path, op->ws_text, strlen(op->ws_text), FSUTIL_NEW, &j->err);
	if (r == 0)
		op->wrote_ws = true; /* undone if anything else fails */
	return r;
}

static int ws_prep_step(struct side_job *j)
{
	struct write_op *op = j->op;
	int r;

	r = index_fetch(op, &j->err);
	if (r == 0)
		r = gitstage_write_blobs(op->git, &op->ws_ent, 1, &j->err);
	return r;
}

static void create_work_cb(uv_work_t *w)
{
	struct write_op *op = (struct write_op *)w;
	struct flake *f0 = NULL;
	struct side_job ws_job = {0}, prep_job = {0};
	bool ws_started = false;
	WS_AUTOFREE char *dir = NULL;
	bool ws_exists;
	struct stat st;
	uint32_t ip;
	int r;

	r = load_main(op, &f0);
	if (r < 0)
		goto out;
	if (flake_find(f0, op->name)) {
		r = ws_fail(&op->err, -EEXIST, WS_E_EXISTS,
			    "a workspace named \"%s\" is already declared in %s", op->name,
			    op->machine_rel);
		ws_err_set_str(&op->err, "name", op->name);
		goto out;
	}
	if (op->ip_req) {
		r = ipam_parse_ip(op->ip_req, &ip);
		if (r < 0) {
			r = ws_fail(&op->err, -EINVAL, WS_E_IP_INVALID,
				    "\"%s\" is not an IPv4 address", op->ip_req);
			ws_err_set_str(&op->err, "ip", op->ip_req);
			goto out;
		}
		/* held-back addresses only keep automatic allocation off them: an address asked
		 * for by name is the user's informed choice */
		r = ipam_check(&op->ipam, ip, flake_entries(f0), flake_n_entries(f0), NULL, 0,
			       &op->err);
		if (r < 0)
			ws_err_set_str(&op->err, "ip", op->ip_req);
		if (r == 0 && (ip < op->ipam.first[op->type] || ip > op->ipam.last[op->type])) {
			char a[16], b[16];

			/* the entry would be declared with a problem the daemon itself reports */
			ipam_format(op->ipam.first[op->type], a);
			ipam_format(op->ipam.last[op->type], b);
			r = ws_fail(&op->err, -EINVAL, WS_E_IP_INVALID,
				    "%s is outside the %s range %s-%s (config key range.%s)",
				    op->ip_req, ws_type_to_string(op->type), a, b,
				    ws_type_to_string(op->type));
			ws_err_set_str(&op->err, "ip", op->ip_req);
		}
	} else {
		r = ipam_pick(&op->ipam, op->type, flake_entries(f0), flake_n_entries(f0),
			      op->held, op->n_held, &ip, &op->err);
	}
	if (r < 0)
		goto out;
	ipam_format(ip, op->ip);

	dir = fsutil_join(op->machine_dir, "workspaces");
	if (!dir || asprintf(&op->ws_path, "%s/%s.nix", dir, op->name) < 0) {
		op->ws_path = NULL;
		r = -ENOMEM;
		goto out;
	}
	/* ws_rel: machines/HOST/workspaces/NAME.nix */
	{
		const char *slash = strrchr(op->machine_rel, '/');
		int plen = slash ? (int)(slash - op->machine_rel) : 0;
		if (asprintf(&op->ws_rel, "%.*s%sworkspaces/%s.nix", plen, op->machine_rel,
			     plen ? "/" : "", op->name) < 0) {
			op->ws_rel = NULL;
			r = -ENOMEM;
			goto out;
		}
	}
	ws_exists = lstat(op->ws_path, &st) == 0;
	op->ws_text = flake_workspace_template();
	if (!ws_exists && !op->dry_run) {
		if (stat(dir, &st) < 0) {
			if (mkdir(dir, 0755) < 0) {
				r = ws_fail(&op->err, -errno, 0, "cannot create '%s': %m", dir);
				goto out;
			}
			op->dir_created = true;
		}
		/* the new file goes to disk (write, fsync, rename, fsync of the directory) on a
		 * thread of its own while this one edits default.nix and checks the result */
		op->ws_ent = (struct gitstage_entry){.path = op->ws_rel, .buf = op->ws_text,
						     .len = strlen(op->ws_text)};
		spare_take(op);
		side_start(&ws_job, ws_write_step, op, NULL, 0);
		side_start(&prep_job, ws_prep_step, op, NULL, 0);
		ws_started = true;
		op->spec_wanted = true;
	}

	/* the editor checks its result by parsing it: that parse is the new model */
	op->collect = true;
	r = create_edit(op, f0, &op->main_new, &op->main_new_len, &op->err);
	op->collect = false;
	spec_finish(op, r == 0 && op->main_new == op->spec_buf);

	if (ws_started) {
		r = side_join(&ws_job, r, &op->err);
		if (r == -EEXIST)
			ws_err_set_str(&op->err, "file", op->ws_rel);
		r = side_join(&prep_job, r, &op->err);
	}
	if (r < 0)
		goto out;
	if (ws_exists) {
		r = ws_fail(&op->err, -EEXIST, WS_E_FILE_EXISTS,
			    "%s already exists; the daemon never overwrites it (remove it, or "
			    "pick another name)",
			    op->ws_rel);
		ws_err_set_str(&op->err, "file", op->ws_rel);
		goto out;
	}

	if (op->dry_run) {
		r = textdiff_unified(&op->diff, &op->diff_len, op->machine_rel, op->main_old,
				     op->main_old_len, op->machine_rel, op->main_new,
				     op->main_new_len, 3);
		if (r == 0)
			r = textdiff_unified(&op->diff, &op->diff_len, op->ws_rel, NULL, 0,
					     op->ws_rel, op->ws_text, strlen(op->ws_text), 3);
		goto out;
	}
	r = write_and_stage(op, create_edit, &op->ws_ent, 1);
	if (r == 0)
		op->same_len = fsutil_common_prefix(op->main_old, op->main_new,
						    op->main_old_len < op->main_new_len
							    ? op->main_old_len
							    : op->main_new_len);
out:
	unload_main(op, f0);
	if (r < 0 && !op->err.code && !op->err.message[0])
		ws_fail(&op->err, r, 0, "create failed: %s", strerror(-r));
	if (r < 0)
		undo_writes(op);
	op->r = r;
}

static void undo_work_cb(uv_work_t *w)
{
	undo_writes((struct write_op *)w);
}

/* Takes CONFIG_MISSING out of @res's workspace.problems. */
static void drop_config_missing(struct json_object *res)
{
	struct json_object *ws, *probs, *kept, *kind;

	if (!json_object_object_get_ex(res, "workspace", &ws) ||
	    !json_object_object_get_ex(ws, "problems", &probs) ||
	    !json_object_is_type(probs, json_type_array))
		return;
	kept = json_object_new_array();
	for (size_t i = 0; i < json_object_array_length(probs); i++) {
		struct json_object *p = json_object_array_get_idx(probs, i);

		if (json_object_object_get_ex(p, "kind", &kind) &&
		    strcmp(json_object_get_string(kind), "CONFIG_MISSING") == 0)
			continue;
		json_object_array_add(kept, json_object_get(p));
	}
	json_object_object_add(ws, "problems", kept);
}

static struct json_object *create_result(struct write_op *op, struct ws_entry *e)
{
	struct methods *m = op->m;
	struct json_object *res = json_object_new_object();
	struct json_object *files = json_object_new_array();

	json_object_object_add(res, "workspace", entry_json(m, e));
	json_object_array_add(files, json_object_new_string(op->ws_rel));
	json_object_array_add(files, json_object_new_string(op->machine_rel));
	json_object_object_add(res, "files", files); /* res now owns files */
	if (op->dry_run) {
		json_object_object_add(res, "dryRun", json_object_new_boolean(true));
		json_object_object_add(res, "staged", json_object_new_boolean(false));
		json_object_object_add(res, "diff", json_object_new_string_len(
							    op->diff ? op->diff : "",
							    (int)op->diff_len));
		return res;
	}
	json_object_object_add(res, "staged", json_object_new_boolean(op->staged_main));
	if (op->stage_note)
		json_object_object_add(res, "stagedNote", json_object_new_string(op->stage_note));
	if (op->verify_result)
		json_object_object_add(res, "verify", json_object_get(op->verify_result));
	else
		json_object_object_add(res, "verify", NULL);
	return res;
}

static void create_succeed(struct write_op *op)
{
	struct methods *m = op->m;
	struct ws_entry *e;
	struct json_object *res, *ev;

	e = m->flake ? flake_find(m->flake, op->name) : NULL;
	if (!e) {
		struct ws_err err = {0};
		ws_fail(&err, -EIO, 0, "the new entry cannot be read back");
		fail_call(op->call, &err);
		op->call = NULL;
		op_finish(op);
		return;
	}
	res = create_result(op, e);
	log_ctx(LOG_LVL_INFO, op->name, op->request_id, "created workspace %s (%s, %s)",
		op->name, ws_type_to_string(op->type), op->ip);
	ev = json_object_new_object();
	json_object_object_add(ev, "name", json_object_new_string(op->name));
	json_object_object_add(ev, "workspace", entry_json(m, e));
	rpc_server_emit(m->d->rpc, "workspace.created", ev);
	sdglue_status("created %s; %zu workspaces declared", op->name,
		      flake_n_entries(m->flake));
	if (op->call)
		rpc_call_reply(op->call, res);
	else
		json_object_put(res);
	op->call = NULL;
	op_finish(op);
}

/* Answers a failed write after its undo, saying what the undo could not put back: never
 * a clean undo that was not. */
static void fail_after_undo(struct write_op *op)
{
	if (op->undo_note) {
		static const char claim[] = "nothing was changed";
		char *at = strstr(op->err.message, claim);
		char msg[sizeof(op->err.message) + 1024];
		size_t n;

		if (at)
			snprintf(msg, sizeof(msg), "%.*sthe undo was incomplete: %s%s",
				 (int)(at - op->err.message), op->err.message, op->undo_note,
				 at + sizeof(claim) - 1);
		else
			snprintf(msg, sizeof(msg), "%s; the undo was incomplete: %s",
				 op->err.message, op->undo_note);
		n = strnlen(msg, sizeof(op->err.message) - 1);
		memcpy(op->err.message, msg, n);
		op->err.message[n] = '\0';
		ws_err_set_str(&op->err, "undoIncomplete", op->undo_note);
	}
	rpc_call_fail(op->call, &op->err);
}

static void undo_done_cb(uv_work_t *w, int status)
{
	struct write_op *op = (struct write_op *)w;
	struct methods *m = op->m;
	struct ws_err err = {0};

	(void)cache_refresh(m, &err);
	ws_err_clear(&err);
	if (op->call)
		fail_after_undo(op);
	op->call = NULL;
	op_finish(op);
}

static void undo_then_fail(struct write_op *op)
{
	int r = uv_queue_work(op->m->d->loop, &op->work, undo_work_cb, undo_done_cb);

	if (r < 0) {
		/* The callback never runs: undo right here rather than leave writes behind. */
		undo_writes(op);
		undo_done_cb(&op->work, 0);
	}
}

static void verify_line_cb(void *userdata, const char *line)
{
	struct write_op *op = userdata;
	struct json_object *ev = json_object_new_object();

	json_object_object_add(ev, "name", json_object_new_string(op->name));
	json_object_object_add(ev, "level", json_object_new_string(verify_level_to_string(op->verify)));
	json_object_object_add(ev, "line", json_object_new_string(line));
	rpc_server_emit(op->m->d->rpc, "verify.progress", ev);
}

static void verify_done_cb(void *userdata, int ok, struct json_object *result)
{
	struct write_op *op = userdata;
	struct json_object *ev = json_object_new_object();

	op->vjob = NULL;
	op->verify_result = result; /* op now owns result */
	json_object_object_add(ev, "name", json_object_new_string(op->name));
	json_object_object_add(ev, "level", json_object_new_string(verify_level_to_string(op->verify)));
	json_object_object_add(ev, "ok", json_object_new_boolean(ok));
	rpc_server_emit(op->m->d->rpc, "verify.finished", ev);
	if (ok) {
		create_succeed(op);
		return;
	}
	{
		struct json_object *v = NULL;
		const char *msg = NULL;

		if (result && json_object_object_get_ex(result, "message", &v))
			msg = json_object_get_string(v);
		/* what to change when the check itself cannot work on this machine */
		const char *hint =
			op->verify == VERIFY_BUILD
				? "; to check less, use --verify parse, or set build-command to "
				  "what builds this machine here"
			: op->verify == VERIFY_EVAL
				? "; to check less, use --verify parse, or set eval-command to "
				  "what evaluates this machine here"
				: "";

		ws_fail(&op->err, -EIO, WS_E_VERIFY_FAILED,
			"verification (%s) failed%s%s; nothing was changed (the log tail is in the "
			"error data%s)",
			verify_level_to_string(op->verify), msg ? ": " : "", msg ? msg : "", hint);
		if (result) {
			json_object_object_foreach(result, k, val)
			{
				if (!op->err.data)
					op->err.data = json_object_new_object();
				json_object_object_add(op->err.data, k, json_object_get(val));
			}
		}
	}
	log_ctx(LOG_LVL_WARNING, op->name, op->request_id, "%s", op->err.message);
	undo_then_fail(op);
}

static void create_done_cb(uv_work_t *w, int status)
{
	struct write_op *op = (struct write_op *)w;
	struct methods *m = op->m;
	const char *files[2];
	int r;

	if (op->r < 0) {
		if (op->call)
			fail_after_undo(op);
		op->call = NULL;
		op_finish(op);
		return;
	}
	if (op->dry_run) {
		struct ws_entry *e = flake_find(op->new_flake, op->name);
		struct json_object *res;

		annotate(m, op->new_flake);
		res = create_result(op, e);
		drop_config_missing(res); /* the file the create would write */
		if (op->call)
			rpc_call_reply(op->call, res);
		else
			json_object_put(res);
		op->call = NULL;
		op_finish(op);
		return;
	}
	/* the cache now reflects what we wrote, so our own write is no "outside change" */
	watch_note_create(m, op->name, op->type);
	m->pf_useless = 2 * op->same_len < op->main_new_len;
	cache_set(m, ws_steal(&op->new_flake), op->main_new, op->main_new_len, NULL);
	if (op->verify == VERIFY_NONE) {
		op->verify_result = json_object_new_object();
		json_object_object_add(op->verify_result, "level", json_object_new_string("none"));
		json_object_object_add(op->verify_result, "ok", json_object_new_boolean(true));
		create_succeed(op);
		return;
	}
	files[0] = op->machine_file;
	files[1] = op->ws_path;
	{
		struct verify_req req = {
			.level = op->verify,
			.cwd = op->repo,
			.files = files,
			.n_files = 2,
			.eval_command = m->d->cfg.eval_command,
			.build_command = m->d->cfg.build_command,
		};
		sdglue_status("verifying %s (%s)", op->name, verify_level_to_string(op->verify));
		r = verify_start(m->d->loop, &req, verify_done_cb, verify_line_cb, op, &op->vjob);
	}
	if (r < 0) {
		ws_fail(&op->err, r, WS_E_VERIFY_FAILED, "cannot start verification: %s",
			strerror(-r));
		undo_then_fail(op);
	}
}

static void create_start(struct write_op *op)
{
	struct daemon *d = op->m->d;
	int r;

	op->n_held = state_held_ips(d->state, time(NULL), RELEASE_HOLD_SECONDS, &op->held);
	r = uv_queue_work(d->loop, &op->work, create_work_cb, create_done_cb);
	if (r < 0) {
		ws_fail(&op->err, r, 0, "cannot queue work: %s", uv_strerror(r));
		op->r = r;
		create_done_cb(&op->work, r);
	}
}

void methods_workspace_create(struct rpc_call *call, struct json_object *params)
{
	struct methods *m = ((struct daemon *)rpc_server_userdata(rpc_call_server(call)))->m;
	struct ws_err err = {0};
	const char *name, *type, *ip, *verify;
	bool auto_start, dry_run;
	struct write_op *op;
	int t, v;

	if (param_str(params, WS_KEY_NAME, true, &name, &err) < 0 ||
	    param_str(params, WS_KEY_TYPE, true, &type, &err) < 0 ||
	    param_str(params, WS_KEY_IP, false, &ip, &err) < 0 ||
	    param_str(params, WS_KEY_VERIFY, false, &verify, &err) < 0 ||
	    param_bool(params, WS_KEY_AUTOSTART, &auto_start, &err) < 0 ||
	    param_bool(params, WS_KEY_DRYRUN, &dry_run, &err) < 0)
		return fail_call(call, &err);
	t = ws_type_from_string(type);
	if (t < 0) {
		ws_fail(&err, -EINVAL, WS_E_TYPE_INVALID,
			"type \"%s\" is not one of vm, container, incus", type);
		ws_err_set_str(&err, "type", type);
		return fail_call(call, &err);
	}
	if (ws_name_validate(name, (enum ws_type)t, &err) < 0) {
		ws_err_set_str(&err, "name", name);
		return fail_call(call, &err);
	}
	v = verify ? verify_level_from_string(verify)
		   : verify_level_from_string(m->d->cfg.verify);
	if (v < 0) {
		ws_fail(&err, -EINVAL, WS_RPC_INVALID_PARAMS,
			"verify must be one of none, parse, eval, build");
		return fail_call(call, &err);
	}
	if (m->d->stopping) {
		ws_fail(&err, -ESHUTDOWN, WS_E_BUSY, "the daemon is shutting down");
		return fail_call(call, &err);
	}
	op = op_new(m, OP_CREATE, call);
	if (!op) {
		ws_fail(&err, -ENOMEM, 0, "out of memory");
		return fail_call(call, &err);
	}
	op->name = strdup(name);
	op->type = (enum ws_type)t;
	op->ip_req = ip ? strdup(ip) : NULL;
	op->auto_start = auto_start;
	op->dry_run = dry_run;
	op->verify = (enum verify_level)v;
	queue_push(m, op);
}

/* ---- host keys ----------------------------------------------------------------------- */

/* Applies every registration of @op to @f, one checked edit after another; each edit's
 * checked parse is the base of the next. With op->collect, the last parse becomes
 * op->new_flake. */
static int hostkey_edit(struct write_op *op, const struct flake *f, char **ret, size_t *ret_len,
			struct ws_err *err)
{
	WS_AUTOFREE char *cur = NULL;
	struct flake *fc = NULL;
	size_t cur_len = 0;
	const char *b;
	int r = 0;

	b = flake_bytes(f, &cur_len);
	cur = malloc(cur_len + 1);
	if (!cur)
		return -ENOMEM;
	memcpy(cur, b, cur_len);
	cur[cur_len] = '\0';
	for (size_t i = 0; i < op->n_hk; i++) {
		struct flake *next_f = NULL;
		char *next = NULL;
		size_t next_len = 0;

		if (op->hk[i].status != HK_REGISTERED)
			continue;
		r = flake_set_hostkey_parsed(fc ? fc : f, op->hk[i].name, op->hk[i].key, &next,
					     &next_len, &next_f, err);
		if (r < 0)
			break;
		flake_free(fc);
		fc = next_f;
		free(cur);
		cur = next;
		cur_len = next_len;
	}
	if (r < 0) {
		flake_free(fc);
		return r;
	}
	if (op->collect && fc) {
		flake_free(op->new_flake);
		op->new_flake = fc;
	} else {
		flake_free(fc);
	}
	*ret = ws_steal(&cur);
	*ret_len = cur_len;
	return 0;
}

static void hostkey_work_cb(uv_work_t *w)
{
	struct write_op *op = (struct write_op *)w;
	struct side_job fetch;
	struct flake *f0 = NULL;
	bool any = false;
	int r;

	r = load_main(op, &f0);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < op->n_hk; i++) {
		struct hk_item *it = &op->hk[i];
		struct ws_entry *e = flake_find(f0, it->name);
		struct ws_err kerr = {0};
		const char *cur;

		if (!e) {
			it->status = HK_UNKNOWN;
			continue;
		}
		/* the name becomes a path: only a valid workspace name may */
		if (ws_name_validate(it->name, WS_TYPE_INCUS, &kerr) < 0) {
			it->status = HK_INVALID;
			if (asprintf(&it->message, "the entry's name is not a valid workspace name "
				     "(%s); its key file is not read", kerr.message) < 0)
				it->message = NULL;
			ws_err_clear(&kerr);
			continue;
		}
		r = hostkey_read_under(op->sandbox_root, it->name, &it->key, &kerr);
		if (r < 0) {
			it->status = r == -ENOENT ? HK_MISSING : r == -EAGAIN ? HK_EMPTY : HK_INVALID;
			it->message = strdup(kerr.message);
			ws_err_clear(&kerr);
			r = 0;
			continue;
		}
		cur = e->host_key ? e->host_key : it->old_key; /* old_key: the trusted one */
		if (cur && strcmp(cur, it->key) == 0) {
			it->status = HK_SAME;
			it->state_update = !it->old_key;
			/* trusted before but gone from the entry: the user removed it by hand, so
			 * only an explicit request writes it back */
			if (!e->host_key && op->call)
				it->status = HK_REGISTERED;
		} else if (cur && !op->replace) {
			it->status = HK_MISMATCH;
			if (cur != it->old_key) {
				free(it->old_key);
				it->old_key = strdup(cur);
			}
		} else {
			it->status = HK_REGISTERED;
		}
		if (it->status == HK_REGISTERED) {
			it->state_update = true;
			any = true;
		}
	}
	if (!any)
		goto out;
	/* the index is read on a thread of its own while the file is edited and checked */
	side_start(&fetch, fetch_step, op, NULL, 0);
	op->collect = true; /* the main file's edit: keep its checked parse as the model */
	r = hostkey_edit(op, f0, &op->main_new, &op->main_new_len, &op->err);
	op->collect = false;
	r = side_join(&fetch, r, &op->err);
	if (r < 0)
		goto out;
	r = write_and_stage(op, hostkey_edit, NULL, 0);
out:
	unload_main(op, f0);
	if (r < 0 && !op->err.code && !op->err.message[0])
		ws_fail(&op->err, r, 0, "host key registration failed: %s", strerror(-r));
	if (r < 0)
		undo_writes(op);
	op->r = r;
}

static struct json_object *hk_event(const struct hk_item *it)
{
	struct json_object *ev = json_object_new_object();
	WS_AUTOFREE char *fp = NULL, *old_fp = NULL;

	json_object_object_add(ev, "name", json_object_new_string(it->name));
	if (it->key && hostkey_fingerprint(it->key, &fp) == 0)
		json_object_object_add(ev, "fingerprint", json_object_new_string(fp));
	if (it->old_key && hostkey_fingerprint(it->old_key, &old_fp) == 0)
		json_object_object_add(ev, it->status == HK_REGISTERED ? "previousFingerprint"
								      : "registeredFingerprint",
				       json_object_new_string(old_fp));
	if (it->status == HK_REGISTERED && it->key)
		json_object_object_add(ev, "hostKey", json_object_new_string(it->key));
	if (it->message && it->status == HK_INVALID)
		json_object_object_add(ev, "message", json_object_new_string(it->message));
	return ev;
}

/* ---- the state file, written on the pool ------------------------------------------------ */

struct state_job {
	uv_work_t work;              /* first member */
	struct methods *m;           /* kept alive by n_open_handles */
	char *path, *dump;           /* owned */
	int r;
	struct ws_err err;
};

static void methods_unref(struct methods *m);

static void state_work_cb(uv_work_t *w)
{
	struct state_job *j = (struct state_job *)w;

	j->r = fsutil_replace(j->path, j->dump, strlen(j->dump), FSUTIL_PRIVATE, &j->err);
}

static void state_save_later(struct methods *m);

static void state_done_cb(uv_work_t *w, int status)
{
	struct state_job *j = (struct state_job *)w;
	struct methods *m = j->m;

	if (j->r < 0)
		log_error("cannot save the state file: %s", j->err.message);
	ws_err_clear(&j->err);
	free(j->path);
	free(j->dump);
	free(j);
	m->state_saving = false;
	if (m->state_again && m->d) {
		m->state_again = false;
		state_save_later(m);
	}
	methods_unref(m);
}

/* Saves the state without blocking the loop: the dump is taken now, written and fsync'd on
 * the pool. One write at a time; a request meanwhile is served once it is done, with the
 * state as it is then. */
static void state_save_later(struct methods *m)
{
	struct state_job *j;
	struct ws_err err = {0};

	if (m->state_saving) {
		m->state_again = true;
		return;
	}
	j = calloc(1, sizeof(*j));
	if (j) {
		j->m = m;
		j->path = strdup(m->d->state_file);
		j->dump = state_dump(m->d->state);
	}
	if (!j || !j->path || !j->dump ||
	    uv_queue_work(m->d->loop, &j->work, state_work_cb, state_done_cb) < 0) {
		if (j) {
			free(j->path);
			free(j->dump);
			free(j);
		}
		/* rather late than never */
		if (state_save(m->d->state, &err) < 0)
			log_error("cannot save the state file: %s", err.message);
		ws_err_clear(&err);
		return;
	}
	m->state_saving = true;
	m->n_open_handles++; /* the job holds @m */
}

static void hostkey_done_cb(uv_work_t *w, int status)
{
	struct write_op *op = (struct write_op *)w;
	struct methods *m = op->m;
	struct ws_err err = {0};
	bool state_dirty = false;

	if (op->r < 0) {
		log_error("host key registration failed: %s", op->err.message);
		if (op->call)
			fail_after_undo(op);
		op->call = NULL;
		op_finish(op);
		return;
	}
	if (op->new_flake)
		cache_set(m, ws_steal(&op->new_flake), op->main_new, op->main_new_len, NULL);
	for (size_t i = 0; i < op->n_hk; i++) {
		struct hk_item *it = &op->hk[i];

		if (it->state_update && it->key) {
			(void)state_set_hostkey(m->d->state, it->name, it->key);
			state_dirty = true;
		}
		if (it->status == HK_MISMATCH && it->key && it->old_key) {
			WS_AUTOFREE char *fp = NULL, *old_fp = NULL;
			char msg[400];

			(void)hostkey_fingerprint(it->key, &fp);
			(void)hostkey_fingerprint(it->old_key, &old_fp);
			snprintf(msg, sizeof(msg),
				 "the key file holds %s, not the registered %s; 'wsctl hostkey %s "
				 "--replace' trusts the new one",
				 fp ? fp : "?", old_fp ? old_fp : "?", it->name);
			if (!m->mismatch)
				m->mismatch = json_object_new_object();
			json_object_object_add(m->mismatch, it->name, json_object_new_string(msg));
		} else if ((it->status == HK_REGISTERED || it->status == HK_SAME) && m->mismatch) {
			json_object_object_del(m->mismatch, it->name);
		}
		switch (it->status) {
		case HK_REGISTERED:
			log_ctx(LOG_LVL_INFO, it->name, op->request_id,
				"registered the host key of %s", it->name);
			rpc_server_emit(m->d->rpc, "hostkey.registered", hk_event(it));
			break;
		case HK_MISMATCH:
			if (op->call)
				break; /* the caller gets the error itself */
			log_ctx(LOG_LVL_WARNING, it->name, op->request_id,
				"%s presented a different host key; not written (use wsctl "
				"hostkey %s --replace)",
				it->name, it->name);
			rpc_server_emit(m->d->rpc, "hostkey.mismatch", hk_event(it));
			break;
		case HK_INVALID:
			if (op->call)
				break;
			log_ctx(LOG_LVL_WARNING, it->name, op->request_id,
				"invalid host key file for %s, not registered: %s", it->name,
				it->message ? it->message : "");
			rpc_server_emit(m->d->rpc, "hostkey.invalid", hk_event(it));
			break;
		default:
			break;
		}
	}
	if (state_dirty)
		state_save_later(m);

	if (op->call) {
		struct hk_item *it = &op->hk[0];
		struct json_object *res;
		WS_AUTOFREE char *fp = NULL, *old_fp = NULL;

		switch (it->status) {
		case HK_UNKNOWN:
			ws_fail(&err, -ENOENT, WS_E_NOT_FOUND, "no workspace named \"%s\"",
				it->name);
			ws_err_set_str(&err, "name", it->name);
			break;
		case HK_MISSING:
		case HK_EMPTY: {
			WS_AUTOFREE char *path = hostkey_path(op->sandbox_root, it->name);
			ws_fail(&err, -ENOENT, WS_E_HOSTKEY_MISSING,
				"no host key for \"%s\" yet: %s %s", it->name, path,
				it->status == HK_EMPTY ? "is empty" : "does not exist");
			ws_err_set_str(&err, "name", it->name);
			ws_err_set_str(&err, "path", path);
			break;
		}
		case HK_INVALID:
			ws_fail(&err, -EINVAL, WS_E_HOSTKEY_INVALID, "%s",
				it->message ? it->message : "invalid host key");
			ws_err_set_str(&err, "name", it->name);
			break;
		case HK_MISMATCH:
			(void)hostkey_fingerprint(it->key, &fp);
			(void)hostkey_fingerprint(it->old_key, &old_fp);
			ws_fail(&err, -EEXIST, WS_E_HOSTKEY_MISMATCH,
				"\"%s\" already has host key %s; the key file holds %s. If the "
				"workspace was rebuilt on purpose, trust the new key with 'wsctl "
				"hostkey %s --replace' (replace: true)",
				it->name, old_fp ? old_fp : "?", fp ? fp : "?", it->name);
			ws_err_set_str(&err, "name", it->name);
			ws_err_set_str(&err, "registeredFingerprint", old_fp);
			ws_err_set_str(&err, "fingerprint", fp);
			break;
		default:
			break;
		}
		if (err.code) {
			rpc_call_fail(op->call, &err);
			ws_err_clear(&err);
		} else {
			res = json_object_new_object();
			json_object_object_add(res, "name", json_object_new_string(it->name));
			json_object_object_add(res, "hostKey", str_or_null(it->key));
			json_object_object_add(res, "changed",
					       json_object_new_boolean(it->status == HK_REGISTERED));
			if (it->key && hostkey_fingerprint(it->key, &fp) == 0)
				json_object_object_add(res, "fingerprint",
						       json_object_new_string(fp));
			if (op->stage_note)
				json_object_object_add(res, "stagedNote",
						       json_object_new_string(op->stage_note));
			rpc_call_reply(op->call, res);
		}
		op->call = NULL;
	}
	op_finish(op);
}

static void hostkey_start(struct write_op *op)
{
	struct daemon *d = op->m->d;
	int r;

	for (size_t i = 0; i < op->n_hk; i++) {
		const char *k = state_hostkey(d->state, op->hk[i].name);
		op->hk[i].old_key = k ? strdup(k) : NULL;
	}
	r = uv_queue_work(d->loop, &op->work, hostkey_work_cb, hostkey_done_cb);
	if (r < 0) {
		ws_fail(&op->err, r, 0, "cannot queue work: %s", uv_strerror(r));
		op->r = r;
		hostkey_done_cb(&op->work, r);
	}
}

static struct write_op *hostkey_op(struct methods *m, struct rpc_call *call,
				   const char *const *names, size_t n, bool replace)
{
	struct write_op *op = op_new(m, OP_HOSTKEY, call);

	if (!op)
		return NULL;
	op->replace = replace;
	op->hk = calloc(n ? n : 1, sizeof(*op->hk));
	if (!op->hk) {
		op_free(op);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		op->hk[i].name = strdup(names[i]);
		if (!op->hk[i].name) {
			op_free(op);
			return NULL;
		}
		op->n_hk++;
	}
	return op;
}

void methods_workspace_hostkey(struct rpc_call *call, struct json_object *params)
{
	struct methods *m = ((struct daemon *)rpc_server_userdata(rpc_call_server(call)))->m;
	struct ws_err err = {0};
	struct write_op *op;
	const char *name;
	bool replace;

	if (param_str(params, WS_KEY_NAME, true, &name, &err) < 0 ||
	    param_bool(params, WS_KEY_REPLACE, &replace, &err) < 0)
		return fail_call(call, &err);
	if (m->d->stopping) {
		ws_fail(&err, -ESHUTDOWN, WS_E_BUSY, "the daemon is shutting down");
		return fail_call(call, &err);
	}
	op = hostkey_op(m, call, &name, 1, replace);
	if (!op) {
		ws_fail(&err, -ENOMEM, 0, "out of memory");
		return fail_call(call, &err);
	}
	queue_push(m, op);
}

void methods_hostkeys_cb(void *userdata, const char *const *names, size_t n)
{
	struct daemon *d = userdata;
	struct write_op *op;

	if (n == 0 || d->stopping)
		return;
	op = hostkey_op(d->m, NULL, names, n, false);
	if (!op) {
		log_error("out of memory queueing host keys");
		return;
	}
	queue_push(d->m, op);
}

static void op_start(struct write_op *op)
{
	/* the model as it is now: the worker uses it if the file still holds its bytes */
	flake_free(op->f0_cached);
	op->f0_cached = op->m->flake ? flake_ref(op->m->flake) : NULL;
	if (op->kind == OP_CREATE)
		create_start(op);
	else
		hostkey_start(op);
}

/* ---- reads ----------------------------------------------------------------------------- */

void methods_workspace_list(struct rpc_call *call, struct json_object *params)
{
	struct methods *m = ((struct daemon *)rpc_server_userdata(rpc_call_server(call)))->m;
	struct ws_err err = {0};
	struct flake *f = model(m, &err);
	struct json_object *res, *arr;

	if (!f)
		return fail_call(call, &err);
	arr = json_object_new_array();
	for (size_t i = 0; i < flake_n_entries(f); i++)
		json_object_array_add(arr, entry_json(m, &flake_entries(f)[i]));
	res = json_object_new_object();
	json_object_object_add(res, "workspaces", arr); /* res now owns arr */
	rpc_call_reply(call, res);
}

void methods_workspace_show(struct rpc_call *call, struct json_object *params)
{
	struct methods *m = ((struct daemon *)rpc_server_userdata(rpc_call_server(call)))->m;
	struct ws_err err = {0};
	struct flake *f;
	struct ws_entry *e;
	struct json_object *res, *hk;
	WS_AUTOFREE char *path = NULL;
	const char *name;
	struct stat st;

	if (param_str(params, WS_KEY_NAME, true, &name, &err) < 0)
		return fail_call(call, &err);
	f = model(m, &err);
	if (!f)
		return fail_call(call, &err);
	e = flake_find(f, name);
	if (!e) {
		ws_fail(&err, -ENOENT, WS_E_NOT_FOUND, "no workspace named \"%s\" in %s", name,
			m->d->machine_file_rel);
		ws_err_set_str(&err, "name", name);
		return fail_call(call, &err);
	}
	res = entry_json(m, e);
	path = hostkey_path(m->d->cfg.sandbox_root, e->name);
	hk = json_object_new_object();
	json_object_object_add(hk, "path", str_or_null(path));
	json_object_object_add(hk, "exists",
			       json_object_new_boolean(path && lstat(path, &st) == 0));
	json_object_object_add(res, "hostKeyFile", hk); /* res now owns hk */
	{
		const char *trusted = state_hostkey(m->d->state, e->name);
		json_object_object_add(res, "trustedHostKey", str_or_null(trusted));
	}
	rpc_call_reply(call, res);
}

/* A result whose JSON text is already rendered: its serializer appends the text. */
static struct json_object *daemon_info_json(struct daemon *d, struct flake *f);

/* daemon.info is what monitors poll: its text is rendered once per second of uptime and
 * per change of the model or the configuration, not per request. */
void methods_daemon_info(struct rpc_call *call, struct json_object *params)
{
	struct daemon *d = rpc_server_userdata(rpc_call_server(call));
	struct methods *m = d->m;
	struct ws_err err = {0};
	struct flake *f;
	time_t now = time(NULL);

	/* While the machine directory is watched, the file was read at the last look and no
	 * change is waiting, the cached model is current: the count needs no stat() of the
	 * file on every call. */
	if (m->dir_started && m->have_bytes && !m->read_failed && !m->recheck_pending &&
	    !uv_is_active((uv_handle_t *)&m->dir_timer)) {
		f = m->flake;
	} else {
		dir_watch_check(m); /* a directory made again is watched again */
		f = model(m, &err);
	}

	ws_err_clear(&err);
	if (!m->info_text || m->info_time != now || m->info_gen != m->flake_gen ||
	    m->info_null != !f || m->info_cfg_gen != d->cfg_gen) {
		WS_AUTO(json_putp) struct json_object *res = daemon_info_json(d, f);

		free(m->info_text);
		m->info_text = strdup(json_object_to_json_string_ext(
			res, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		m->info_time = now;
		m->info_gen = m->flake_gen;
		m->info_null = !f;
		m->info_cfg_gen = d->cfg_gen;
	}
	if (!m->info_text) {
		ws_fail(&err, -ENOMEM, 0, "out of memory");
		return fail_call(call, &err);
	}
	rpc_call_reply_text(call, m->info_text);
}

static struct json_object *daemon_info_json(struct daemon *d, struct flake *f)
{
	struct json_object *res = json_object_new_object(), *ranges = json_object_new_object();
	char net[16], sub[24];

	json_object_object_add(res, "version", json_object_new_string(WS_VERSION));
	json_object_object_add(res, "protocol", json_object_new_int(WS_PROTO_VERSION));
	json_object_object_add(res, "repo", json_object_new_string(d->cfg.repo));
	json_object_object_add(res, "machine", json_object_new_string(d->cfg.machine));
	json_object_object_add(res, "file", json_object_new_string(d->machine_file_rel));
	json_object_object_add(res, "sandboxRoot", json_object_new_string(d->cfg.sandbox_root));
	json_object_object_add(res, "socket", json_object_new_string(d->cfg.socket_path));
	ipam_format(d->cfg.ipam.network, net);
	snprintf(sub, sizeof(sub), "%s/%d", net, d->cfg.ipam.prefix);
	json_object_object_add(res, "subnet", json_object_new_string(sub));
	for (int t = 0; t < WS_TYPE_COUNT; t++) {
		struct json_object *r = json_object_new_array();
		char a[16], b[16];

		ipam_format(d->cfg.ipam.first[t], a);
		ipam_format(d->cfg.ipam.last[t], b);
		json_object_array_add(r, json_object_new_string(a));
		json_object_array_add(r, json_object_new_string(b));
		json_object_object_add(ranges, ws_type_to_string((enum ws_type)t), r);
	}
	json_object_object_add(res, "ranges", ranges); /* res now owns ranges */
	json_object_object_add(res, "workspaces",
			       f ? json_object_new_int((int)flake_n_entries(f)) : NULL);
	json_object_object_add(res, "verify", json_object_new_string(d->cfg.verify));
	json_object_object_add(res, "privilegeCommand",
			       json_object_new_string(d->cfg.privilege_command
							      ? d->cfg.privilege_command
							      : "sudo"));
	json_object_object_add(res, "stateDir", json_object_new_string(d->cfg.state_dir));
	json_object_object_add(res, "pid", json_object_new_int(getpid()));
	json_object_object_add(res, "uptimeSeconds",
			       json_object_new_int64((int64_t)(time(NULL) - d->started)));
	return res;
}

void methods_events_subscribe(struct rpc_call *call, struct json_object *params)
{
	struct ws_err err = {0};
	struct json_object *res;

	if (rpc_call_subscribe(call) < 0) {
		ws_fail(&err, -ENOSPC, WS_E_BUSY, "too many subscribers");
		return fail_call(call, &err);
	}
	res = json_object_new_object();
	json_object_object_add(res, "subscribed", json_object_new_boolean(true));
	rpc_call_reply(call, res);
}

void methods_unit_changed_cb(void *userdata, const char *unit, const char *active,
			     const char *sub)
{
	struct daemon *d = userdata;
	struct methods *m = d->m;
	struct json_object *ev;
	const char *name = NULL;

	if (!m || !m->flake)
		return;
	for (size_t i = 0; i < flake_n_entries(m->flake) && !name; i++) {
		const struct ws_entry *e = &flake_entries(m->flake)[i];
		int t = ws_type_from_string(e->type);
		WS_AUTOFREE char *u = t >= 0 ? ws_unit_name((enum ws_type)t, e->name) : NULL;

		if (u && strcmp(u, unit) == 0)
			name = e->name;
	}
	ev = json_object_new_object();
	json_object_object_add(ev, "name", str_or_null(name));
	json_object_object_add(ev, "unit", json_object_new_string(unit));
	json_object_object_add(ev, "active", json_object_new_string(active));
	json_object_object_add(ev, "sub", json_object_new_string(sub));
	rpc_server_emit(d->rpc, "unit.changed", ev);
}

/* ---- outside changes to the machine file ----------------------------------------------- */

/* Entries gone from the file release their addresses (unless another entry still holds
 * the same address); the state file records when. */
static void release_removed(struct methods *m, struct flake *old)
{
	struct ws_err err = {0};
	bool dirty = false;

	for (size_t i = 0; i < flake_n_entries(old); i++) {
		const struct ws_entry *o = &flake_entries(old)[i];
		bool still = false;
		uint32_t gone;

		if (!o->name || !o->ip || ipam_parse_ip(o->ip, &gone) < 0 ||
		    flake_find(m->flake, o->name))
			continue;
		for (size_t j = 0; j < flake_n_entries(m->flake) && !still; j++) {
			const struct ws_entry *e = &flake_entries(m->flake)[j];
			uint32_t ip;
			still = e->ip && ipam_parse_ip(e->ip, &ip) == 0 && ip == gone;
		}
		if (still)
			continue;
		if (state_release_ip(m->d->state, gone, time(NULL)) == 0) {
			char buf[16];
			ipam_format(gone, buf);
			log_info("%s was removed from %s; its address %s is held back for a day",
				 o->name, m->d->machine_file_rel, buf);
			dirty = true;
		}
	}
	if (dirty)
		state_save_later(m);
	ws_err_clear(&err);
}

static void dir_event_cb(uv_fs_event_t *h, const char *filename, int events, int status);

/* Watches the machine directory as it is now. Its inode is recorded first: should the
 * directory be replaced meanwhile, the next check sees another inode and starts again. */
static int dir_watch_start(struct methods *m)
{
	struct stat st;
	int r;

	if (stat(m->d->machine_dir, &st) < 0)
		return -errno;
	r = uv_fs_event_start(&m->dir_ev, dir_event_cb, m->d->machine_dir, 0);
	if (r < 0)
		return r;
	m->dir_started = true;
	m->dir_dev = st.st_dev;
	m->dir_ino = st.st_ino;
	return 0;
}

/* inotify follows an inode: once the machine directory is moved or deleted (which its
 * watch reports), the watch sees nothing of a directory made again at the path. Such a
 * watch is dropped, and the path watched again once it exists; meanwhile reads stat the
 * file as without a watch. */
static void dir_watch_check(struct methods *m)
{
	struct stat st;

	if (!m->dir_inited)
		return;
	if (stat(m->d->machine_dir, &st) == 0 && m->dir_started && st.st_dev == m->dir_dev &&
	    st.st_ino == m->dir_ino)
		return;
	if (m->dir_started) {
		(void)uv_fs_event_stop(&m->dir_ev);
		m->dir_started = false;
		log_info("'%s' was moved or deleted; watching it again once it exists",
			 m->d->machine_dir);
	}
	(void)dir_watch_start(m);
}

static void machine_recheck(struct methods *m)
{
	struct ws_err err = {0};
	struct json_object *ev;
	int r;

	dir_watch_check(m);
	if (m->busy) {
		m->recheck_pending = true; /* our own write may be in flight */
		return;
	}
	/* the model as it is now: an entry removed by hand releases its address, which is then
	 * held back from automatic allocation for a while */
	struct flake *old = flake_ref(m->flake);

	r = cache_refresh_ex(m, true, &err);
	if (r > 0 && m->flake && old)
		release_removed(m, old);
	flake_free(old);
	if (r == 0)
		return;
	ev = json_object_new_object();
	json_object_object_add(ev, "file", json_object_new_string(m->d->machine_file_rel));
	if (r < 0 || !m->flake) {
		const struct ws_err *e = r < 0 ? &err : &m->flake_err;
		json_object_object_add(ev, "ok", json_object_new_boolean(false));
		json_object_object_add(ev, "message", json_object_new_string(e->message));
		if (e->line > 0)
			json_object_object_add(ev, "line", json_object_new_int(e->line));
		if (e->column > 0)
			json_object_object_add(ev, "column", json_object_new_int(e->column));
		log_warning("%s changed and does not parse: %s", m->d->machine_file_rel,
			    e->message);
	} else {
		json_object_object_add(ev, "ok", json_object_new_boolean(true));
		json_object_object_add(ev, "workspaces",
				       json_object_new_int((int)flake_n_entries(m->flake)));
		log_info("%s changed outside the daemon; re-read %zu workspaces",
			 m->d->machine_file_rel, flake_n_entries(m->flake));
	}
	rpc_server_emit(m->d->rpc, "config.changed", ev);
	ws_err_clear(&err);
}

void methods_machine_changed(struct daemon *d)
{
	machine_recheck(d->m);
}

static void dir_timer_cb(uv_timer_t *t)
{
	machine_recheck(t->data);
}

static void dir_event_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct methods *m = h->data;

	if (filename && filename[0] == '.')
		return; /* our own (or an editor's) temporaries */
	(void)uv_timer_start(&m->dir_timer, dir_timer_cb, DIR_DEBOUNCE_MS, 0);
}

int methods_new(struct daemon *d, struct methods **ret_m)
{
	struct methods *m = calloc(1, sizeof(*m));
	struct ws_err err = {0};
	int r;

	if (!m)
		return -ENOMEM;
	m->d = d;
	d->m = m;
	m->spare.main.fd = m->spare.ws.fd = m->spare.pf.fd = -1;
	(void)cache_refresh(m, &err);
	ws_err_clear(&err);
	r = uv_timer_init(d->loop, &m->dir_timer);
	if (r < 0) {
		free(m);
		return r;
	}
	m->dir_timer.data = m;
	m->n_open_handles = 1;
	if (uv_timer_init(d->loop, &m->trim_timer) == 0) {
		m->trim_timer.data = m;
		m->n_open_handles++;
	}
	if (uv_timer_init(d->loop, &m->watch_timer) == 0) {
		m->watch_timer.data = m;
		m->n_open_handles++;
	}
	if (uv_timer_init(d->loop, &m->pf_timer) == 0) {
		m->pf_timer.data = m;
		m->n_open_handles++;
	}
	r = uv_fs_event_init(d->loop, &m->dir_ev);
	if (r == 0) {
		m->dir_inited = true;
		m->dir_ev.data = m;
		m->n_open_handles++;
		r = dir_watch_start(m);
		if (r < 0)
			log_warning("cannot watch '%s': %s; outside changes are noticed on the "
				    "next request",
				    d->machine_dir, uv_strerror(r));
	}
	spare_kick(m);
	*ret_m = m;
	return 0;
}

/* Call once the host-key watcher exists, so it learns the declared names. */
void methods_start_watching(struct methods *m)
{
	m->watched_ok = false; /* whatever was "watched" before, the watchers had no names */
	update_watched_names(m);
}

size_t methods_n_workspaces(const struct methods *m)
{
	return m->flake ? flake_n_entries(m->flake) : 0;
}

bool methods_idle(const struct methods *m)
{
	return !m->busy && !m->head;
}

static void handle_closed_cb(uv_handle_t *h)
{
	methods_unref(h->data);
}

static void methods_unref(struct methods *m)
{
	if (--m->n_open_handles == 0) {
		flake_free(m->flake);
		ws_err_clear(&m->flake_err);
		watch_adds_clear(m);
		free(m->bytes);
		free(m->info_text);
		json_putp(&m->mismatch);
		free(m);
	}
}

void methods_free(struct methods *m)
{
	if (!m)
		return;
	m->d->m = NULL;
	spare_free(&m->spare);
	if (m->dir_started)
		(void)uv_fs_event_stop(&m->dir_ev);
	if (m->dir_inited)
		uv_close((uv_handle_t *)&m->dir_ev, handle_closed_cb);
	uv_close((uv_handle_t *)&m->dir_timer, handle_closed_cb);
	if (m->trim_timer.data)
		uv_close((uv_handle_t *)&m->trim_timer, handle_closed_cb);
	if (m->watch_timer.data)
		uv_close((uv_handle_t *)&m->watch_timer, handle_closed_cb);
	if (m->pf_timer.data)
		uv_close((uv_handle_t *)&m->pf_timer, handle_closed_cb);
}

const struct rpc_method *methods_table(size_t *ret_n)
{
	static const struct rpc_method table[] = {
#define WS_METHOD(c, wire, fl, help) {wire, fl, methods_##c},
#include "ws_methods.def"
#undef WS_METHOD
	};
	*ret_n = WS_ARRAY_SIZE(table);
	return table;
}
