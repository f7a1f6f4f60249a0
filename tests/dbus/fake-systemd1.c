/* SPDX-License-Identifier: MIT */
/* A stand-in for systemd's manager on a private bus, for test-unitstate: owns
 * org.freedesktop.systemd1 on the bus named by DBUS_SYSTEM_BUS_ADDRESS and serves
 * Manager.GetUnit (NoSuchUnit for units it has not loaded), Manager.Subscribe, the Unit
 * properties Id/ActiveState/SubState (so Properties.Get/GetAll work), and UnitNew and
 * PropertiesChanged signals. The test drives it through org.workspaced.FakeSystemd1
 * .SetUnitState(unit, active, sub), which loads the unit if needed. Arguments: initially
 * loaded units as UNIT=ACTIVE/SUB. Prints "ready" on stdout once it owns the name. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-bus.h>

#define UNIT_PREFIX "/org/freedesktop/systemd1/unit"
#define MAX_UNITS 64

struct fake_unit {
	char *id;
	char *path;
	char *active;
	char *sub;
};

static struct fake_unit units[MAX_UNITS];
static size_t n_units;
static unsigned subscribers;

static struct fake_unit *unit_by_id(const char *id)
{
	for (size_t i = 0; i < n_units; i++)
		if (strcmp(units[i].id, id) == 0)
			return &units[i];
	return NULL;
}

static struct fake_unit *unit_load(sd_bus *bus, const char *id, const char *active,
				   const char *sub)
{
	struct fake_unit *u = unit_by_id(id);

	if (u) {
		free(u->active);
		free(u->sub);
	} else {
		if (n_units == MAX_UNITS)
			return NULL;
		u = &units[n_units++];
		u->id = strdup(id);
		if (sd_bus_path_encode(UNIT_PREFIX, id, &u->path) < 0)
			abort();
		if (bus)
			(void)sd_bus_emit_signal(bus, "/org/freedesktop/systemd1",
						 "org.freedesktop.systemd1.Manager", "UnitNew", "so",
						 u->id, u->path);
	}
	u->active = strdup(active);
	u->sub = strdup(sub);
	if (!u->id || !u->active || !u->sub)
		abort();
	return u;
}

static int method_get_unit(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct fake_unit *u;
	const char *id;
	int r;

	r = sd_bus_message_read(m, "s", &id);
	if (r < 0)
		return r;
	u = unit_by_id(id);
	if (!u)
		return sd_bus_error_setf(ret_error, "org.freedesktop.systemd1.NoSuchUnit",
					 "Unit %s not loaded.", id);
	return sd_bus_reply_method_return(m, "o", u->path);
}

static int method_subscribe(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	subscribers++;
	return sd_bus_reply_method_return(m, "");
}

static int method_set_state(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	sd_bus *bus = sd_bus_message_get_bus(m);
	const char *id, *active, *sub;
	struct fake_unit *u;
	int r;

	r = sd_bus_message_read(m, "sss", &id, &active, &sub);
	if (r < 0)
		return r;
	u = unit_load(bus, id, active, sub);
	if (!u)
		return -ENOSPC;
	r = sd_bus_emit_properties_changed(bus, u->path, "org.freedesktop.systemd1.Unit",
					   "ActiveState", "SubState", NULL);
	if (r < 0)
		return r;
	return sd_bus_reply_method_return(m, "");
}

static int method_subscribers(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	return sd_bus_reply_method_return(m, "u", subscribers);
}

static int unit_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
		     void **found, sd_bus_error *ret_error)
{
	for (size_t i = 0; i < n_units; i++)
		if (strcmp(units[i].path, path) == 0) {
			*found = &units[i];
			return 1;
		}
	return 0;
}

static const sd_bus_vtable manager_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("GetUnit", "s", "o", method_get_unit, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Subscribe", "", "", method_subscribe, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_SIGNAL("UnitNew", "so", 0),
	SD_BUS_VTABLE_END,
};

static const sd_bus_vtable test_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD("SetUnitState", "sss", "", method_set_state, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD("Subscribers", "", "u", method_subscribers, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_VTABLE_END,
};

static const sd_bus_vtable unit_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Id", "s", NULL, offsetof(struct fake_unit, id), SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("ActiveState", "s", NULL, offsetof(struct fake_unit, active),
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("SubState", "s", NULL, offsetof(struct fake_unit, sub),
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_VTABLE_END,
};

int main(int argc, char **argv)
{
	sd_bus *bus = NULL;
	int r;

	for (int i = 1; i < argc; i++) {
		char *eq = strchr(argv[i], '='), *slash = eq ? strchr(eq, '/') : NULL;

		if (!eq || !slash) {
			fprintf(stderr, "usage: %s [UNIT=ACTIVE/SUB]...\n", argv[0]);
			return 2;
		}
		*eq = *slash = '\0';
		(void)unit_load(NULL, argv[i], eq + 1, slash + 1);
	}

	r = sd_bus_open_system(&bus);
	if (r < 0)
		goto fail;
	r = sd_bus_add_object_vtable(bus, NULL, "/org/freedesktop/systemd1",
				     "org.freedesktop.systemd1.Manager", manager_vtable, NULL);
	if (r < 0)
		goto fail;
	r = sd_bus_add_object_vtable(bus, NULL, "/org/freedesktop/systemd1",
				     "org.workspaced.FakeSystemd1", test_vtable, NULL);
	if (r < 0)
		goto fail;
	r = sd_bus_add_fallback_vtable(bus, NULL, UNIT_PREFIX, "org.freedesktop.systemd1.Unit",
				       unit_vtable, unit_find, NULL);
	if (r < 0)
		goto fail;
	r = sd_bus_request_name(bus, "org.freedesktop.systemd1", 0);
	if (r < 0)
		goto fail;
	printf("ready\n");
	fflush(stdout);

	for (;;) {
		r = sd_bus_process(bus, NULL);
		if (r < 0)
			goto fail;
		if (r > 0)
			continue;
		r = sd_bus_wait(bus, UINT64_MAX);
		if (r < 0)
			goto fail;
	}
fail:
	fprintf(stderr, "fake-systemd1: %s\n", strerror(-r));
	sd_bus_flush_close_unref(bus);
	return 1;
}
