#ifndef SHOPFLEET_CHIREDIS_SHIM_H
#define SHOPFLEET_CHIREDIS_SHIM_H
#include <hiredis.h>

/* redisCommand is variadic and does not import; everything goes through the argv forms. */
static inline int shopfleet_redis_reply_type(const redisReply *r) { return r->type; }
#endif
