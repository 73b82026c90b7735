/* reexec.h - upgrading the binary in place on SIGUSR2, keeping every
 * listener and connection. */
#pragma once

struct server;

/* Remembers how we were started, to exec the same path and arguments. */
int reexec_init(struct server *s, char **argv);

/* Execs the binary at the path we were started from, passing every socket
 * and a state memfd through LISTEN_FDS. Returns only if that failed, with
 * everything as it was before (and logged). */
void reexec(struct server *s);
