/* reexec.h - upgrading the binary in place on SIGUSR2, keeping every
 * listener and connection. */
#pragma once

#include <stdbool.h>

struct server;

/* At start: if our previous image exec'ed us, the configuration file it ran
 * on (*PATH, NULL for the built-in defaults) and true; else false. Either
 * way the variable that carried it leaves the environment. */
bool reexec_config(const char **path);

/* Remembers how we were started, to exec the same path and arguments. */
int reexec_init(struct server *s, char **argv);

/* Execs the binary at the path we were started from, passing every socket
 * and a state memfd through LISTEN_FDS. Returns only if that failed, with
 * everything as it was before (and logged). */
void reexec(struct server *s);
