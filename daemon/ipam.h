/* SPDX-License-Identifier: MIT */
/* IPv4 address management for workspaces: the subnet, one range per type, the lowest
 * free address of a range over every entry of every type, validation of an explicit
 * address, and the per-entry address problems (duplicates, outside the type's range).
 * Pure module: it sees entries, never files. */
#ifndef IPAM_H
#define IPAM_H

#include <stddef.h>
#include <stdint.h>

#include "ws_proto.h"

struct ws_entry;

struct ipam_cfg {
	uint32_t network;   /* host order, e.g. 192.168.83.0 */
	int prefix;         /* 24 */
	uint32_t gateway;   /* network + 1, reserved */
	uint32_t first[WS_TYPE_COUNT], last[WS_TYPE_COUNT]; /* inclusive ranges */
};

/* Defaults: 192.168.83.0/24, vm .10-.49, container .50-.89, incus .90-.129. */
void ipam_cfg_default(struct ipam_cfg *c);
/* "192.168.83.0/24" -> network/prefix/gateway (ranges untouched). -EINVAL. */
int ipam_parse_subnet(const char *s, struct ipam_cfg *c);
/* "192.168.83.10-192.168.83.49" -> range of @type; must lie inside the subnet. -EINVAL. */
int ipam_parse_range(const char *s, struct ipam_cfg *c, enum ws_type type);
/* Strict dotted quad ("1.2.3.4", no leading zeros or spaces). -EINVAL. */
int ipam_parse_ip(const char *s, uint32_t *ret_ip);
void ipam_format(uint32_t ip, char buf[16]);

/* Checks an explicitly requested address: inside the subnet and not the network, gateway or
 * broadcast address (WS_E_IP_INVALID), held by no entry (WS_E_IP_TAKEN), and not in
 * @reserved (addresses held elsewhere, e.g. released recently, WS_E_IP_TAKEN). */
int ipam_check(const struct ipam_cfg *c, uint32_t ip, const struct ws_entry *entries, size_t n,
	       const uint32_t *reserved, size_t n_reserved, struct ws_err *err);

/* Picks the lowest address of @type's range that no entry (of any type) holds and that is
 * not in @reserved. WS_E_RANGE_EXHAUSTED when none is left. When an entry's address could
 * not be determined (ip NULL, ip_expr set) and that entry's type is @type or unknown, the
 * allocation is refused (WS_E_CONFIG_UNSUPPORTED naming the entry and its line): an
 * address is never guessed. */
int ipam_pick(const struct ipam_cfg *c, enum ws_type type, const struct ws_entry *entries,
	      size_t n, const uint32_t *reserved, size_t n_reserved, uint32_t *ret_ip,
	      struct ws_err *err);

/* Appends address problems to each entry's `problems` array: IP_DUPLICATE (another entry
 * holds the same address; message names it), IP_OUT_OF_RANGE (outside its type's range),
 * IP_INVALID (not a dotted quad in the subnet). */
void ipam_annotate(const struct ipam_cfg *c, struct ws_entry *entries, size_t n);

#endif
