/* header.h - the PROXY header phase of a connection (proxy_protocol = yes):
 * which peers may send a header, reading it without buffering or spinning,
 * and the proxy_timeout deadline. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;

/* What header_on_event() did. */
enum header_result {
        HEADER_CLOSED = -1, /* refused and closed: forget the fd */
        HEADER_WAITING = 0, /* incomplete; no event until more bytes arrive */
        HEADER_DONE = 1, /* consumed; the connection is a client's now */
        HEADER_DONE_DATA = 2, /* consumed, and client bytes came with it: one read */
};

int header_init(struct server *s);
void header_deinit(struct server *s);

/* At accept, before anything is read: may PEER send headers (proxy_from;
 * an empty list allows any peer)? */
bool header_peer_allowed(const struct server *s, const struct sockaddr *peer);

/* "refused connection from ADDR (fd N): WHY", rate-limited, at warning. */
void header_log_refusal(const struct sockaddr *peer, int fd, const char *why);

/* FD (accepted, in the epoll set) now waits for its header. */
void header_begin(struct server *s, int fd);
/* Adoption of a connection whose header was still awaited: back on the
 * header list with its accept time ACCEPTED_MS (CLOCK_MONOTONIC ms, modulo
 * 2^32, as last_ms). Call header_order() after the last one. */
void header_adopt(struct server *s, int fd, uint32_t accepted_ms);
void header_order(struct server *s);

/* An epoll event while the header is awaited. */
enum header_result header_on_event(struct server *s, int fd);

/* At close: leaves the header list. */
void header_remove(struct server *s, int fd);

/* The proxy_timeout timer fired: refuse what waited too long. */
void header_on_timer(struct server *s);

/* A reload changed proxy_timeout: the headers still awaited get the new
 * value, counted from their accept (one timeout for all keeps the list in
 * deadline order). */
void header_reconfigure(struct server *s);
