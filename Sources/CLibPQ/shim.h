#ifndef SHOPFLEET_CLIBPQ_SHIM_H
#define SHOPFLEET_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
