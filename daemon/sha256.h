/* SPDX-License-Identifier: MIT */
/* SHA-256 (FIPS 180-4), small and dependency-free, for host-key fingerprints. Not meant for
 * bulk data or anything secret: no constant-time guarantees are needed for public keys. */
#ifndef SHA256_H
#define SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32
#define SHA256_BLOCK_SIZE 64

struct sha256 {
	uint32_t h[8];
	uint64_t total;                  /* bytes hashed so far */
	uint8_t block[SHA256_BLOCK_SIZE]; /* partial block */
	size_t fill;                     /* bytes used in @block */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
/* Writes the digest; @s must be initialised again before reuse. */
void sha256_final(struct sha256 *s, uint8_t ret_digest[SHA256_DIGEST_SIZE]);
/* One call: the digest of @len bytes at @data. */
void sha256_digest(const void *data, size_t len, uint8_t ret_digest[SHA256_DIGEST_SIZE]);

#endif
