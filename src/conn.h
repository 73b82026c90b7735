/* conn.h - connections: the table indexed by fd, accept, read -> "Hi!",
 * backpressure and close. */
#pragma once

#include <stdint.h>

struct server;
struct state_record;

#define CONN_REPLY "Hi!"
#define CONN_REPLY_LEN 3u
/* Past this many unwritten reply bytes we stop reading the connection: a
 * client that never reads cannot make us hold more than this. */
#define CONN_PENDING_MAX (64u * CONN_REPLY_LEN)

/* Kept small on purpose (40 bytes, less than a cache line): a held idle
 * connection costs this and nothing else in user space. */
struct conn {
        uint64_t id;
        uint64_t replies; /* replies counted, written or pending */
        uint32_t pending; /* bytes of replies not yet written */
        uint32_t gen; /* bumped at close: stale events are skipped */
        int32_t idle_prev; /* idle list links (fds), -1 = none */
        int32_t idle_next;
        uint32_t last_ms; /* last activity, for idle_timeout */
        uint16_t events; /* interest registered with epoll */
        uint8_t flags; /* CONN_* */
};

enum {
        CONN_OPEN = 1u << 0,
        CONN_EOF = 1u << 1, /* peer sent FIN: flush what is pending, then close */
        /* Inherited: PID 1 may still hold a copy (fd store), so close()
         * alone would not take it out of the epoll set. */
        CONN_ADOPTED = 1u << 2,
};

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
void conn_close_all(struct server *s);
