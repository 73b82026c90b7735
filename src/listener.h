/* listener.h - listening sockets: bind them (or adopt systemd's), pause and
 * resume accepting, and the EMFILE back-off timer. */
#pragma once

#include "server.h"

/* Takes on an inherited listening socket (from a .socket unit when
 * ACTIVATED, else our own from the fd store); -errno if it is not one. */
int listeners_adopt(struct server *s, int fd, const char *fdname, bool activated);

/* After inherit_all(): serves the activated sockets if there are any, else
 * keeps the stored listeners the configuration still lists and binds the
 * rest. On failure logs which address and why and returns -errno. */
int listeners_open(struct server *s);
void listeners_close(struct server *s);

/* Reload: binds the addresses new in NEXT before closing those no longer
 * listed; listeners that stay keep their socket (a configured port 0 keeps
 * whatever port its host has). Moving a port between a wildcard and a
 * specific host is refused (-EADDRINUSE). On failure nothing has changed
 * and -errno is returned. Socket-activated listeners always stay. */
int listeners_reconfigure(struct server *s, const struct config *next);

/* A TAG_LISTENER event: accepts on that listener unless the tag is from
 * before a reload that renumbered them. */
void listeners_on_event(struct server *s, uint64_t tag);

/* Takes the listeners out of the epoll set while any reason holds. */
void listeners_pause(struct server *s, enum pause_reason why);
void listeners_resume(struct server *s, enum pause_reason why);

/* accept4 failed for want of descriptors or memory: pause, retry from a
 * timer, and log once per episode. */
void listeners_nofile(struct server *s, const struct listener *l, int err);
/* An accept succeeded again: the episode is over. */
void listeners_nofile_over(struct server *s);
void listeners_on_timer(struct server *s);
