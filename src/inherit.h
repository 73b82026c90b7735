/* inherit.h - the one adoption path for descriptors passed at start:
 * socket activation, systemd's fd store after a restart, and our own
 * in-place re-exec. */
#pragma once

struct server;

/* Reads LISTEN_FDS and LISTEN_FDNAMES. Called before the daemon opens any
 * descriptor of its own, so that sd_listen_fds() checks the passed fds
 * while their numbers cannot yet belong to us. Returns 0 or -errno. */
int inherit_begin(struct server *s);

/* Classifies every fd from sd_listen_fds_with_names() by name and by
 * sd_is_socket(): listening sockets from a .socket unit become listeners
 * (anything else there is an operator's mistake: -EINVAL, exit 71); our own
 * stored listeners ("listen_*") are kept for the listen addresses; "conn"
 * sockets are adopted as connections with their "state"; anything
 * unexpected is closed with a log line. Returns 0 or -errno. */
int inherit_all(struct server *s);
