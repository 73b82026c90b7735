/* sig.h - signals, delivered through a signalfd in the loop. */
#pragma once

struct server;

/* Blocks the signals we handle (so they queue on the signalfd), ignores
 * SIGPIPE, and adds the signalfd to the loop. */
int sig_init(struct server *s);
void sig_deinit(struct server *s);
void sig_on_readable(struct server *s);
