#ifndef STOVEPIPE_CMYSQL_SHIM_H
#define STOVEPIPE_CMYSQL_SHIM_H
// mysql.h uses NULL and size_t without defining them itself.
#include <stddef.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>

/// mysql_library_init is a macro alias of mysql_server_init; give Swift a real function.
static inline int cmysql_library_init(void) { return mysql_library_init(0, NULL, NULL); }

#endif
