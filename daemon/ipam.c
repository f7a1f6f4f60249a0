/* SPDX-License-Identifier: MIT */
/* IPv4 address management: parses the subnet and the per-type ranges, checks an explicitly
 * requested address, picks the lowest free address of a type's range and annotates entries
 * with address problems. It sees entries only; it never reads files and never guesses an
 * address that a computed expression might hold. */
#include "ipam.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "flake.h"

void ipam_cfg_default(struct ipam_cfg *c)
{
	const uint32_t net = (192u << 24) | (168u << 16) | (83u << 8);

	memset(c, 0, sizeof(*c));
	c->network = net;
	c->prefix = 24;
	c->gateway = net + 1;
	c->first[WS_TYPE_VM] = net + 10;
	c->last[WS_TYPE_VM] = net + 49;
	c->first[WS_TYPE_CONTAINER] = net + 50;
	c->last[WS_TYPE_CONTAINER] = net + 89;
	c->first[WS_TYPE_INCUS] = net + 90;
	c->last[WS_TYPE_INCUS] = net + 129;
}

static uint32_t prefix_mask(int prefix)
{
	return prefix <= 0 ? 0 : (uint32_t)(0xffffffffu << (32 - prefix));
}

/* Parses a dotted quad starting at @s; *ret_end is where it stopped. */
static int parse_quad(const char *s, uint32_t *ret_ip, const char **ret_end)
{
	uint32_t ip = 0;

	for (int part = 0; part < 4; part++) {
		unsigned v = 0;
		int digits = 0;

		if (part > 0) {
			if (*s != '.')
				return -EINVAL;
			s++;
		}
		if (s[0] == '0' && s[1] >= '0' && s[1] <= '9')
			return -EINVAL; /* leading zero */
		while (*s >= '0' && *s <= '9') {
			v = v * 10 + (unsigned)(*s - '0');
			if (++digits > 3 || v > 255)
				return -EINVAL;
			s++;
		}
		if (digits == 0)
			return -EINVAL;
		ip = (ip << 8) | v;
	}
	*ret_ip = ip;
	*ret_end = s;
	return 0;
}

int ipam_parse_ip(const char *s, uint32_t *ret_ip)
{
	const char *end;
	uint32_t ip;
	int r;

	if (!s)
		return -EINVAL;
	r = parse_quad(s, &ip, &end);
	if (r < 0 || *end != '\0')
		return -EINVAL;
	*ret_ip = ip;
	return 0;
}

void ipam_format(uint32_t ip, char buf[16])
{
	snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff,
		 ip & 0xff);
}

int ipam_parse_subnet(const char *s, struct ipam_cfg *c)
{
	const char *end;
	uint32_t ip;
	int prefix = 0, digits = 0, r;

	if (!s)
		return -EINVAL;
	r = parse_quad(s, &ip, &end);
	if (r < 0 || *end != '/')
		return -EINVAL;
	for (end++; *end >= '0' && *end <= '9'; end++) {
		prefix = prefix * 10 + (*end - '0');
		if (++digits > 2)
			return -EINVAL;
	}
	/* at least network, gateway, one host and broadcast: /30 is the smallest */
	if (digits == 0 || *end != '\0' || prefix < 8 || prefix > 30)
		return -EINVAL;
	if ((ip & ~prefix_mask(prefix)) != 0)
		return -EINVAL; /* host bits set */
	c->network = ip;
	c->prefix = prefix;
	c->gateway = ip + 1;
	return 0;
}

static bool in_subnet(const struct ipam_cfg *c, uint32_t ip)
{
	return (ip & prefix_mask(c->prefix)) == c->network;
}

/* Inside the subnet and neither the network, the gateway nor the broadcast address. */
static bool usable(const struct ipam_cfg *c, uint32_t ip)
{
	uint32_t bcast = c->network | ~prefix_mask(c->prefix);

	return in_subnet(c, ip) && ip != c->network && ip != c->gateway && ip != bcast;
}

int ipam_parse_range(const char *s, struct ipam_cfg *c, enum ws_type type)
{
	uint32_t a, b;
	const char *end;
	int r;

	if (!s || type >= WS_TYPE_COUNT)
		return -EINVAL;
	r = parse_quad(s, &a, &end);
	if (r < 0 || *end != '-')
		return -EINVAL;
	r = ipam_parse_ip(end + 1, &b);
	if (r < 0)
		return r;
	if (a > b || !usable(c, a) || !usable(c, b))
		return -EINVAL;
	c->first[type] = a;
	c->last[type] = b;
	return 0;
}

/* The entry's address, if it has a valid literal or evaluated one. */
static bool entry_ip(const struct ws_entry *e, uint32_t *ret_ip)
{
	return e->ip && ipam_parse_ip(e->ip, ret_ip) == 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

struct ip_idx {
	uint32_t ip;
	size_t idx;
};

static int cmp_ip_idx(const void *a, const void *b)
{
	const struct ip_idx *x = a, *y = b;

	if (x->ip != y->ip)
		return x->ip < y->ip ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static bool held(uint32_t ip, const struct ws_entry *entries, size_t n, const uint32_t *reserved,
		 size_t n_reserved, const struct ws_entry **ret_holder)
{
	uint32_t other;

	for (size_t i = 0; i < n; i++)
		if (entry_ip(&entries[i], &other) && other == ip) {
			if (ret_holder)
				*ret_holder = &entries[i];
			return true;
		}
	for (size_t i = 0; i < n_reserved; i++)
		if (reserved[i] == ip) {
			if (ret_holder)
				*ret_holder = NULL;
			return true;
		}
	return false;
}

int ipam_check(const struct ipam_cfg *c, uint32_t ip, const struct ws_entry *entries, size_t n,
	       const uint32_t *reserved, size_t n_reserved, struct ws_err *err)
{
	const struct ws_entry *holder = NULL;
	char buf[16];

	ipam_format(ip, buf);
	if (!in_subnet(c, ip)) {
		char net[16];

		ipam_format(c->network, net);
		return ws_fail(err, -EINVAL, WS_E_IP_INVALID, "%s is outside the subnet %s/%d",
			       buf, net, c->prefix);
	}
	if (!usable(c, ip))
		return ws_fail(err, -EINVAL, WS_E_IP_INVALID, "%s is the subnet's %s address",
			       buf, ip == c->network ? "network" : ip == c->gateway ? "gateway"
									: "broadcast");
	if (held(ip, entries, n, reserved, n_reserved, &holder)) {
		if (holder) {
			ws_fail(err, -EEXIST, WS_E_IP_TAKEN, "%s is already held by \"%s\"", buf,
				holder->name);
			ws_err_set_str(err, "holder", holder->name);
		} else {
			ws_fail(err, -EEXIST, WS_E_IP_TAKEN,
				"%s was released recently and is not handed out again yet", buf);
		}
		ws_err_set_str(err, WS_KEY_IP, buf);
		return -EEXIST;
	}
	return 0;
}

int ipam_pick(const struct ipam_cfg *c, enum ws_type type, const struct ws_entry *entries,
	      size_t n, const uint32_t *reserved, size_t n_reserved, uint32_t *ret_ip,
	      struct ws_err *err)
{
	if (type >= WS_TYPE_COUNT)
		return ws_fail(err, -EINVAL, WS_E_TYPE_INVALID, "unknown workspace type");
	for (size_t i = 0; i < n; i++) {
		const struct ws_entry *e = &entries[i];
		int t;

		if (e->ip || !e->ip_expr)
			continue;
		t = e->type ? ws_type_from_string(e->type) : -EINVAL;
		if (t >= 0 && t != (int)type)
			continue;
		ws_fail(err, -EINVAL, WS_E_CONFIG_UNSUPPORTED,
			"the address of \"%s\" (line %d) is computed by '%s', which cannot be "
			"evaluated here; give an explicit ip",
			e->name, e->line, e->ip_expr);
		ws_err_set_str(err, WS_KEY_NAME, e->name);
		ws_err_set_int(err, "line", e->line);
		ws_err_set_str(err, "reason", "computed address");
		return -EINVAL;
	}
	{
		/* every held address once, sorted: the walk up the range is then linear */
		uint32_t *taken = malloc((n + n_reserved + 1) * sizeof(*taken));
		size_t k = 0, nt = 0;

		if (!taken)
			return ws_fail(err, -ENOMEM, 0, "out of memory");
		for (size_t i = 0; i < n; i++)
			if (entry_ip(&entries[i], &taken[nt]))
				nt++;
		for (size_t i = 0; i < n_reserved; i++)
			taken[nt++] = reserved[i];
		qsort(taken, nt, sizeof(*taken), cmp_u32);
		for (uint32_t ip = c->first[type]; ip <= c->last[type] && ip != 0; ip++) {
			while (k < nt && taken[k] < ip)
				k++;
			if (!usable(c, ip) || (k < nt && taken[k] == ip))
				continue;
			free(taken);
			*ret_ip = ip;
			return 0;
		}
		free(taken);
	}
	{
		char a[16], b[16];

		ipam_format(c->first[type], a);
		ipam_format(c->last[type], b);
		return ws_fail(err, -ENOSPC, WS_E_RANGE_EXHAUSTED,
			       "no free %s address left in %s-%s", ws_type_to_string(type), a, b);
	}
}


void ipam_annotate(const struct ipam_cfg *c, struct ws_entry *entries, size_t n)
{
	/* addresses sorted with their entries, so duplicates sit next to each other */
	struct ip_idx *by_ip = malloc((n ? n : 1) * sizeof(*by_ip));
	size_t nb = 0;

	for (size_t i = 0; i < n; i++) {
		struct ws_entry *e = &entries[i];
		uint32_t ip;
		int t;

		if (!e->ip)
			continue;
		if (ipam_parse_ip(e->ip, &ip) < 0 || !usable(c, ip)) {
			ws_entry_add_problem(e, "IP_INVALID",
				    "\"%s\" is not a usable IPv4 address in the subnet", e->ip);
			continue;
		}
		if (by_ip)
			by_ip[nb++] = (struct ip_idx){ip, i};
		t = e->type ? ws_type_from_string(e->type) : -EINVAL;
		if (t >= 0 && (ip < c->first[t] || ip > c->last[t])) {
			char a[16], b[16];

			ipam_format(c->first[t], a);
			ipam_format(c->last[t], b);
			ws_entry_add_problem(e, "IP_OUT_OF_RANGE",
					     "%s is outside the %s range %s-%s", e->ip,
				    e->type, a, b);
		}
	}
	if (!by_ip)
		return;
	qsort(by_ip, nb, sizeof(*by_ip), cmp_ip_idx);
	for (size_t g = 0; g < nb;) {
		size_t end = g + 1;

		while (end < nb && by_ip[end].ip == by_ip[g].ip)
			end++;
		/* each names the first other holder in file order */
		for (size_t k = g; end - g > 1 && k < end; k++) {
			struct ws_entry *e = &entries[by_ip[k].idx];
			const struct ws_entry *o = &entries[by_ip[k == g ? g + 1 : g].idx];

			ws_entry_add_problem(e, "IP_DUPLICATE", "%s is also held by \"%s\"", e->ip,
					     o->name);
		}
		g = end;
	}
	free(by_ip);
}
