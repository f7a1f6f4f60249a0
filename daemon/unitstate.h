/* SPDX-License-Identifier: MIT */
/* The systemd units of the workspaces (microvm@NAME.service, container@NAME.service,
 * incus-workspace-NAME.service): their ActiveState and SubState, read from the system bus
 * through sd-bus driven by the libuv loop (never a blocking call), and followed through
 * PropertiesChanged. Without a reachable bus every state is "unknown" and nothing fails. */
#ifndef UNITSTATE_H
#define UNITSTATE_H

#include <stddef.h>
#include <uv.h>

#define UNITSTATE_UNKNOWN "unknown"

struct unitstate;

/* Called from the loop whenever a watched unit's state changes (also to "unknown" when the
 * bus goes away). The strings are borrowed for the duration of the call. It must not call
 * unitstate_watch() or unitstate_free() (defer those, e.g. with a uv_timer). */
typedef void (*unitstate_changed_fn)(void *userdata, const char *unit, const char *active,
				     const char *sub);

/* Connects to the system bus (sd_bus_open_system, so DBUS_SYSTEM_BUS_ADDRESS is honoured)
 * without waiting: authentication and every call complete later on the loop. A bus that
 * cannot be reached is not an error: states stay "unknown" and a reconnect is tried now
 * and then (on an unreferenced timer). @changed may be NULL. Returns 0, or -ENOMEM /
 * a libuv error; *ret_u is freed with unitstate_free(). */
int unitstate_new(uv_loop_t *loop, unitstate_changed_fn changed, void *userdata,
		  struct unitstate **ret_u);
/* Stops watching and closes the bus; the memory goes once the loop has closed the
 * handles (so run the loop afterwards, as for any libuv handle). NULL is fine. */
void unitstate_free(struct unitstate *u);

/* Sets the units to follow: units not in @units are forgotten, new ones are queried
 * (GetUnit, then Properties.GetAll; a unit systemd does not know is "inactive"/"dead"
 * until a UnitNew signal shows it). Units already watched keep their state. Returns 0 or
 * -ENOMEM (then the old set is kept). */
int unitstate_watch(struct unitstate *u, const char *const *units, size_t n);
/* unitstate_watch() with the current set plus @unit, without sorting the whole set again
 * (a create adds one unit). Returns 0 or -ENOMEM (then the set is as it was). */
int unitstate_add(struct unitstate *u, const char *unit);

/* The last known state of @unit: borrowed strings, valid until the next loop iteration
 * or unitstate_* call; "unknown"/"unknown" when the unit is not watched, not known yet,
 * or there is no bus. */
void unitstate_get(const struct unitstate *u, const char *unit, const char **ret_active,
		   const char **ret_sub);

/* True while connected to a bus (for daemon.info and tests). */
int unitstate_connected(const struct unitstate *u);

/* The unit name of a workspace: "vm" -> microvm@NAME.service, "container" ->
 * container@NAME.service, "incus" -> incus-workspace-NAME.service. Returns 0, -EINVAL for
 * another type, -ENOMEM; *ret_unit is malloc'd. */
int unitstate_unit_name(const char *type, const char *name, char **ret_unit);

#endif
