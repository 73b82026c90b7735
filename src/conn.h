/* conn.h - connections: the table indexed by fd, accept, read -> "Hi!",
 * backpressure and close. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct server;
struct state_record;

#define CONN_REPLY "Hi!"
#define CONN_REPLY_LEN 3u
/* Past this many unwritten reply bytes we stop reading the connection: a
 * client that never reads cannot make us hold more than this. */
#define CONN_PENDING_MAX (64u * CONN_REPLY_LEN)
/* Microseconds in the unit of accept times (struct conn's born_cs). */
#define CONN_CS_US 10000u

/* Kept small on purpose (56 bytes): a held idle connection costs this and
 * nothing else in user space. The client's address is kept because the
 * close line must name it, and after a PROXY header only the header knew
 * it. To fit, the accept time is in centiseconds, the header phase's count
 * shares the place of the replies it does not have yet, and generation and
 * flags share a word. What every event touches comes first, so a slot's
 * hot part mostly lies in one cache line; what only the log lines and the
 * state read comes last. */
struct conn {
        union {
                uint64_t replies; /* replies counted, written or pending */
                /* CONN_HEADER, while there are no replies: bytes of header
                 * seen at the last look, so SO_RCVLOWAT is one more (0: not
                 * raised). Set back to 0 as the header ends: replies from 0. */
                uint64_t peeked;
        };
        /* Bumped at close: stale events are skipped. 24 bits, as many as an
         * epoll tag carries (TAG_GEN_MASK); wraps there. */
        uint32_t gen : 24;
        uint32_t flags : 8; /* CONN_* */
        /* Deadline list links (fds), -1 = none: the header list while
         * CONN_HEADER, else the idle list (while idle_timeout is on). */
        int32_t prev;
        int32_t next;
        uint32_t last_ms; /* last activity; in the header phase, the accept */
        uint8_t pending; /* bytes of replies not yet written, <= CONN_PENDING_MAX */
        uint8_t events; /* interest registered with epoll: EPOLLIN, EPOLLOUT or both */
        uint16_t port; /* the client's, host order */
        /* CLOCK_MONOTONIC centiseconds of the accept, modulo 2^32 and never
         * after s->now_cs: a lifetime is exact to 10 ms for 497 days. */
        uint32_t born_cs;
        uint64_t id; /* 0 while the PROXY header is awaited: not yet a client's */
        uint8_t addr[16]; /* the client: IPv4 in the first 4 bytes unless CONN_ADDR6 */
};

enum {
        CONN_OPEN = 1u << 0,
        CONN_EOF = 1u << 1, /* peer sent FIN: flush what is pending, then close */
        /* Inherited: PID 1 may still hold a copy (fd store), so close()
         * alone would not take it out of the epoll set. */
        CONN_ADOPTED = 1u << 2,
        CONN_HEADER = 1u << 3, /* a PROXY header is still awaited (header.c) */
        CONN_PROXIED = 1u << 4, /* a PROXY header came: the socket's peer is the balancer */
        CONN_LOCAL = 1u << 5, /* its header was v2 LOCAL (a health check); v1 UNKNOWN is not */
        CONN_ADDR6 = 1u << 6, /* addr is IPv6 */
};
/* What a state record carries over; CONN_OPEN and CONN_ADOPTED are the
 * adopter's to set. */
#define CONN_STATE_FLAGS (CONN_EOF | CONN_HEADER | CONN_PROXIED | CONN_LOCAL | CONN_ADDR6)

/* Where reads land (the reply does not depend on what was read), and where
 * header.c peeks at a PROXY header. */
#define CONN_SCRATCH_SIZE ((size_t)64 * 1024)
extern char conn_scratch[CONN_SCRATCH_SIZE];

/* Reserves (does not touch) one slot per possible fd. */
int conn_table_init(struct server *s, uint32_t size);
void conn_table_deinit(struct server *s);

/* Accepts on listener IDX until EAGAIN, the limit, or a descriptor shortage. */
void conn_accept(struct server *s, uint32_t idx);

/* One epoll event for a connection; TAG carries fd and generation. */
void conn_on_event(struct server *s, uint64_t tag, uint32_t events);

/* Takes on an inherited connected socket, with its saved state R if there
 * is one (else fresh). On failure closes FD and returns -errno. */
int conn_adopt(struct server *s, int fd, const struct state_record *r);

void conn_close(struct server *s, int fd, const char *why);
/* Closes a connection that never became a client's (refused at accept or
 * in the header phase): no close line, no lifetime. */
void conn_drop(struct server *s, int fd);

/* The header is done: C's address is the client's (set by the caller),
 * the connection joins the idle list and its accept line is written, naming
 * the balancer PEER that sent a PROXY header of VERSION. */
void conn_established(struct server *s, int fd, const struct sockaddr *peer, int version);

/* How long C has lived, in microseconds (a multiple of CONN_CS_US). */
uint64_t conn_lifetime_us(const struct server *s, const struct conn *c);

/* C's client address as a socket address. */
void conn_client(const struct conn *c, struct sockaddr_storage *out);
/* Stores SA (AF_INET or AF_INET6) as C's client address. */
void conn_set_client(struct conn *c, const struct sockaddr *sa);
void conn_close_all(struct server *s);
