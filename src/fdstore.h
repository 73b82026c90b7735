/* fdstore.h - systemd's file descriptor store: what survives
 * `systemctl restart`. Every call is a no-op without NOTIFY_SOCKET. */
#pragma once

struct server;
struct listener;

/* A listener we bound ourselves, kept by PID 1 so that a restart does not
 * refuse new clients for a moment (under its own name, listen_ADDR). */
void fdstore_push_listener(const struct server *s, const struct listener *l);

/* Asks PID 1 to drop every stored fd named NAME (after adopting them, or
 * when a listener goes away): its copies would keep those sockets open. */
void fdstore_remove(const struct server *s, const char *name);

/* At stop: every connection, parked in boxes (in batches: the kernel passes
 * at most 253 fds per message), then the state of those stored. What could
 * not be stored is closed. Returns 0 or -errno, logged. */
int fdstore_push_connections(struct server *s);
