/* SPDX-License-Identifier: MIT */
/* ipam: parsing, checking, picking the lowest free address, annotating problems. */
#include <stdbool.h>

#include "harness.h"

#include <json-c/json.h>

#include "flake.h"
#include "ipam.h"

static uint32_t ip_of(const char *s)
{
	uint32_t ip = 0;

	assert_int_equal(ipam_parse_ip(s, &ip), 0);
	return ip;
}

static struct ws_entry ent(const char *name, const char *type, const char *ip)
{
	struct ws_entry e = {0};

	e.name = (char *)(uintptr_t)name;
	e.type = (char *)(uintptr_t)type;
	e.ip = (char *)(uintptr_t)ip;
	e.line = 1;
	return e;
}

static void test_parse_ip(void **state)
{
	uint32_t ip;
	char buf[16];
	const char *bad[] = {"", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.256", " 1.2.3.4",
			     "1.2.3.4 ", "1..2.3", "a.b.c.d", "1.2.3.4/24", "1234.1.1.1"};

	assert_int_equal(ipam_parse_ip("192.168.83.50", &ip), 0);
	assert_int_equal(ip, (192u << 24) | (168u << 16) | (83u << 8) | 50u);
	ipam_format(ip, buf);
	assert_string_equal(buf, "192.168.83.50");
	assert_int_equal(ipam_parse_ip("0.0.0.0", &ip), 0);
	assert_int_equal(ip, 0);
	for (size_t i = 0; i < WS_ARRAY_SIZE(bad); i++)
		assert_int_equal(ipam_parse_ip(bad[i], &ip), -EINVAL);
}

static void test_subnet_and_ranges(void **state)
{
	struct ipam_cfg c;

	ipam_cfg_default(&c);
	assert_int_equal(c.prefix, 24);
	assert_int_equal(c.gateway, ip_of("192.168.83.1"));
	assert_int_equal(c.first[WS_TYPE_INCUS], ip_of("192.168.83.90"));
	assert_int_equal(c.last[WS_TYPE_INCUS], ip_of("192.168.83.129"));

	assert_int_equal(ipam_parse_subnet("10.1.0.0/16", &c), 0);
	assert_int_equal(c.network, ip_of("10.1.0.0"));
	assert_int_equal(c.gateway, ip_of("10.1.0.1"));
	assert_int_equal(c.prefix, 16);
	assert_int_equal(ipam_parse_subnet("10.1.0.1/16", &c), -EINVAL);
	assert_int_equal(ipam_parse_subnet("10.1.0.0", &c), -EINVAL);
	assert_int_equal(ipam_parse_subnet("10.1.0.0/33", &c), -EINVAL);
	assert_int_equal(ipam_parse_subnet("10.1.0.0/", &c), -EINVAL);

	assert_int_equal(ipam_parse_range("10.1.2.0-10.1.2.9", &c, WS_TYPE_VM), 0);
	assert_int_equal(c.first[WS_TYPE_VM], ip_of("10.1.2.0"));
	assert_int_equal(c.last[WS_TYPE_VM], ip_of("10.1.2.9"));
	/* outside the subnet, reversed, gateway, broadcast */
	assert_int_equal(ipam_parse_range("10.2.0.5-10.2.0.9", &c, WS_TYPE_VM), -EINVAL);
	assert_int_equal(ipam_parse_range("10.1.0.9-10.1.0.5", &c, WS_TYPE_VM), -EINVAL);
	assert_int_equal(ipam_parse_range("10.1.0.1-10.1.0.5", &c, WS_TYPE_VM), -EINVAL);
	assert_int_equal(ipam_parse_range("10.1.0.5-10.1.255.255", &c, WS_TYPE_VM), -EINVAL);
	assert_int_equal(ipam_parse_range("10.1.0.5", &c, WS_TYPE_VM), -EINVAL);
}

static void test_pick(void **state)
{
	struct ipam_cfg c;
	struct ws_err err = {0};
	uint32_t ip = 0;
	char buf[16];
	/* fixture 04: .10 and .12 held: the lowest free is .11, not max+1 */
	struct ws_entry e[] = {ent("web", "vm", "192.168.83.10"), ent("db", "vm", "192.168.83.12"),
			       /* a container squatting in the vm range also holds its address */
			       ent("odd", "container", "192.168.83.11")};
	uint32_t reserved[] = {ip_of("192.168.83.13")};

	ipam_cfg_default(&c);
	assert_int_equal(ipam_pick(&c, WS_TYPE_VM, e, 2, NULL, 0, &ip, &err), 0);
	ipam_format(ip, buf);
	assert_string_equal(buf, "192.168.83.11");
	assert_int_equal(ipam_pick(&c, WS_TYPE_VM, e, 3, reserved, 1, &ip, &err), 0);
	ipam_format(ip, buf);
	assert_string_equal(buf, "192.168.83.14");
	assert_int_equal(ipam_pick(&c, WS_TYPE_CONTAINER, e, 3, NULL, 0, &ip, &err), 0);
	ipam_format(ip, buf);
	assert_string_equal(buf, "192.168.83.50");
	assert_int_equal(ipam_pick(&c, WS_TYPE_INCUS, NULL, 0, NULL, 0, &ip, &err), 0);
	ipam_format(ip, buf);
	assert_string_equal(buf, "192.168.83.90");
	ws_err_clear(&err);
}

static void test_pick_exhausted_and_computed(void **state)
{
	struct ipam_cfg c;
	struct ws_err err = {0};
	struct ws_entry e[40];
	char ips[40][16];
	uint32_t ip = 0;

	ipam_cfg_default(&c);
	for (int i = 0; i < 40; i++) {
		snprintf(ips[i], sizeof(ips[i]), "192.168.83.%d", 50 + i);
		e[i] = ent("c", "container", ips[i]);
	}
	assert_int_equal(ipam_pick(&c, WS_TYPE_CONTAINER, e, 40, NULL, 0, &ip, &err), -ENOSPC);
	assert_int_equal(err.code, WS_E_RANGE_EXHAUSTED);
	assert_int_equal(ipam_pick(&c, WS_TYPE_VM, e, 40, NULL, 0, &ip, &err), 0);
	assert_int_equal(ip, ip_of("192.168.83.10"));

	/* a range whose only addresses are the gateway: nothing usable */
	c.first[WS_TYPE_VM] = c.last[WS_TYPE_VM] = c.gateway;
	assert_int_equal(ipam_pick(&c, WS_TYPE_VM, NULL, 0, NULL, 0, &ip, &err), -ENOSPC);

	/* a computed address of the same (or unknown) type refuses the allocation */
	ipam_cfg_default(&c);
	e[0] = ent("alpha", "container", NULL);
	e[0].ip_expr = (char *)(uintptr_t)"mkIp 50";
	e[0].line = 7;
	ws_err_clear(&err);
	assert_int_equal(ipam_pick(&c, WS_TYPE_CONTAINER, e, 1, NULL, 0, &ip, &err), -EINVAL);
	assert_int_equal(err.code, WS_E_CONFIG_UNSUPPORTED);
	assert_non_null(strstr(err.message, "alpha"));
	assert_non_null(strstr(err.message, "line 7"));
	assert_int_equal(ipam_pick(&c, WS_TYPE_VM, e, 1, NULL, 0, &ip, &err), 0);
	e[0].type = NULL;
	assert_int_equal(ipam_pick(&c, WS_TYPE_VM, e, 1, NULL, 0, &ip, &err), -EINVAL);
	ws_err_clear(&err);
}

static void test_check(void **state)
{
	struct ipam_cfg c;
	struct ws_err err = {0};
	struct ws_entry e[] = {ent("one", "container", "192.168.83.50")};
	uint32_t reserved[] = {ip_of("192.168.83.60")};

	ipam_cfg_default(&c);
	assert_int_equal(ipam_check(&c, ip_of("192.168.83.51"), e, 1, reserved, 1, &err), 0);
	/* outside its type's range is allowed for an explicit request */
	assert_int_equal(ipam_check(&c, ip_of("192.168.83.200"), e, 1, reserved, 1, &err), 0);
	assert_int_equal(ipam_check(&c, ip_of("192.168.83.50"), e, 1, reserved, 1, &err), -EEXIST);
	assert_int_equal(err.code, WS_E_IP_TAKEN);
	assert_non_null(strstr(err.message, "one"));
	assert_int_equal(ipam_check(&c, ip_of("192.168.83.60"), e, 1, reserved, 1, &err), -EEXIST);
	assert_int_equal(err.code, WS_E_IP_TAKEN);
	const char *bad[] = {"192.168.83.0", "192.168.83.1", "192.168.83.255", "192.168.84.5",
			     "10.0.0.1"};
	for (size_t i = 0; i < WS_ARRAY_SIZE(bad); i++) {
		assert_int_equal(ipam_check(&c, ip_of(bad[i]), e, 1, NULL, 0, &err), -EINVAL);
		assert_int_equal(err.code, WS_E_IP_INVALID);
	}
	ws_err_clear(&err);
}

static const char *problem_kinds(struct ws_entry *e, char *buf, size_t size)
{
	buf[0] = '\0';
	for (size_t i = 0; e->problems && i < json_object_array_length(e->problems); i++) {
		struct json_object *p = json_object_array_get_idx(e->problems, i), *k;

		assert_true(json_object_object_get_ex(p, "kind", &k));
		if (buf[0])
			strncat(buf, ",", size - strlen(buf) - 1);
		strncat(buf, json_object_get_string(k), size - strlen(buf) - 1);
	}
	return buf;
}

static void test_annotate(void **state)
{
	struct ipam_cfg c;
	struct ws_entry e[] = {
		ent("one", "container", "192.168.83.50"), ent("two", "container", "192.168.83.50"),
		ent("three", "container", "192.168.83.200"), ent("four", "vm", "192.168.83.10"),
		ent("five", "vm", "192.168.83.1"), ent("six", "vm", "nonsense"),
		ent("seven", NULL, "192.168.83.11")};
	char buf[256];
	uint32_t ip;
	struct ws_err err = {0};

	ipam_cfg_default(&c);
	ipam_annotate(&c, e, WS_ARRAY_SIZE(e));
	assert_string_equal(problem_kinds(&e[0], buf, sizeof(buf)), "IP_DUPLICATE");
	assert_string_equal(problem_kinds(&e[1], buf, sizeof(buf)), "IP_DUPLICATE");
	assert_string_equal(problem_kinds(&e[2], buf, sizeof(buf)), "IP_OUT_OF_RANGE");
	assert_string_equal(problem_kinds(&e[3], buf, sizeof(buf)), "");
	assert_string_equal(problem_kinds(&e[4], buf, sizeof(buf)), "IP_INVALID");
	assert_string_equal(problem_kinds(&e[5], buf, sizeof(buf)), "IP_INVALID");
	assert_string_equal(problem_kinds(&e[6], buf, sizeof(buf)), "");
	{
		struct json_object *p = json_object_array_get_idx(e[0].problems, 0), *m;

		assert_true(json_object_object_get_ex(p, "message", &m));
		assert_non_null(strstr(json_object_get_string(m), "two"));
	}
	/* fixture 15: the next container is .51 */
	assert_int_equal(ipam_pick(&c, WS_TYPE_CONTAINER, e, 3, NULL, 0, &ip, &err), 0);
	assert_int_equal(ip, ip_of("192.168.83.51"));
	for (size_t i = 0; i < WS_ARRAY_SIZE(e); i++)
		json_putp(&e[i].problems);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ip),
		cmocka_unit_test(test_subnet_and_ranges),
		cmocka_unit_test(test_pick),
		cmocka_unit_test(test_pick_exhausted_and_computed),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_annotate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
