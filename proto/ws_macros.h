/* SPDX-License-Identifier: MIT */
/* Cleanup helpers shared by the daemon and the client (GCC/Clang attributes). */
#ifndef WS_MACROS_H
#define WS_MACROS_H

#include <stdlib.h>
#include <unistd.h>

#define WS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void ws_freep(void *p)
{
	free(*(void **)p);
}

static inline void ws_closep(int *fd)
{
	if (*fd >= 0)
		(void)close(*fd);
}

/* WS_AUTOFREE char *s = NULL;  freed with free() at scope exit. */
#define WS_AUTOFREE __attribute__((cleanup(ws_freep)))
/* WS_AUTOCLOSE int fd = -1;    closed at scope exit when >= 0. */
#define WS_AUTOCLOSE __attribute__((cleanup(ws_closep)))
/* WS_AUTO(json_putp) struct json_object *o = NULL;  calls json_putp(&o). */
#define WS_AUTO(fn) __attribute__((cleanup(fn)))

/* Hands a local's pointer away: returns it and sets the local to NULL. */
#define ws_steal(pp)                                                                               \
	({                                                                                         \
		__typeof__(*(pp)) _p = *(pp);                                                      \
		*(pp) = NULL;                                                                      \
		_p;                                                                                \
	})

#define WS_UNUSED __attribute__((unused))
#define WS_PRINTF(a, b) __attribute__((format(printf, a, b)))

#endif
