/* conn.c - the connection table, accept, read -> "Hi!", backpressure, close.
 *
 * The table is indexed by fd and reserved with mmap for every descriptor the
 * process may have; pages are only touched as connections use them, so a
 * large max_connections costs nothing up front.
 *
 * The hot path is conn_on_event(): one read into a shared scratch buffer,
 * one write of the pending replies, and no epoll_ctl unless the interest
 * really changes (it only does under backpressure). Replies are a constant,
 * so what is pending is a byte count: the next byte to write follows from
 * it, and "Hi!Hi!..." is sent straight from a static buffer.
 *
 * Stale events: when a connection closes, its slot's generation is bumped.
 * An event still queued in the same epoll_wait batch carries the old
 * generation and is dropped, even if accept4 reused the fd meanwhile.
 */
#include "conn.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "addr.h"
#include "dlist.h"
#include "fd.h"
#include "header.h"
#include "idle.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"
#include "server.h"
#include "state.h"

static void update_interest(struct server *s, int fd, struct conn *c);

char conn_scratch[CONN_SCRATCH_SIZE];
static char replies[CONN_PENDING_MAX];

int conn_table_init(struct server *s, uint32_t size)
{
        size_t bytes = (size_t)size * sizeof(struct conn);
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

        if (p == MAP_FAILED)
                return -errno;
        for (uint32_t i = 0; i < CONN_PENDING_MAX; i++)
                replies[i] = CONN_REPLY[i % CONN_REPLY_LEN];
        s->conns = p;
        s->table_size = size;
        s->max_fd = -1;
        return 0;
}

void conn_table_deinit(struct server *s)
{
        if (s->conns && munmap(s->conns, (size_t)s->table_size * sizeof(struct conn)) < 0)
                log_warning("munmap of the connection table failed: %s", strerror(errno));
        s->conns = NULL;
}

/* The project's target is at most 64 bytes of RSS per idle connection in
 * all; malloc, the epoll loop and the page tables add their part. */
_Static_assert(sizeof(struct conn) == 56, "a connection must cost 56 bytes");
_Static_assert((EPOLLIN | EPOLLOUT) <= UINT8_MAX, "conn.events is a byte");
_Static_assert(CONN_ADDR6 <= 1u << 7, "conn.flags has 8 bits");
_Static_assert(TAG_GEN_MASK == (1u << 24) - 1, "conn.gen has the bits of a tag's generation");
_Static_assert(CONN_PENDING_MAX <= UINT8_MAX, "conn.pending is a byte");

void conn_client(const struct conn *c, struct sockaddr_storage *out)
{
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

        memset(out, 0, sizeof(*out));
        if (c->flags & CONN_ADDR6) {
                in6->sin6_family = AF_INET6;
                memcpy(&in6->sin6_addr, c->addr, sizeof(in6->sin6_addr));
                in6->sin6_port = htons(c->port);
        } else {
                in->sin_family = AF_INET;
                memcpy(&in->sin_addr, c->addr, sizeof(in->sin_addr));
                in->sin_port = htons(c->port);
        }
}

void conn_set_client(struct conn *c, const struct sockaddr *sa)
{
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        memset(c->addr, 0, sizeof(c->addr));
        c->flags &= (uint8_t)~CONN_ADDR6;
        if (sa->sa_family == AF_INET6) {
                c->flags |= CONN_ADDR6;
                memcpy(c->addr, &in6->sin6_addr, sizeof(in6->sin6_addr));
                c->port = ntohs(in6->sin6_port);
        } else if (sa->sa_family == AF_INET) {
                memcpy(c->addr, &in->sin_addr, sizeof(in->sin_addr));
                c->port = ntohs(in->sin_port);
        } else {
                c->port = 0;
        }
}

/* Text and journal fields for C's client and, after a PROXY header, the
 * balancer (the socket's peer, looked up only when a line is written). */
struct names {
        char client[ADDR_TEXT_MAX], client_host[ADDR_TEXT_MAX];
        char via[ADDR_TEXT_MAX + 8], proxy_host[ADDR_TEXT_MAX];
};

static void name_peers(const struct conn *c, int fd, const struct sockaddr *balancer,
                       struct names *n, struct log_fields *f)
{
        struct sockaddr_storage client, peer = { 0 };
        socklen_t len = sizeof(peer);
        char text[ADDR_TEXT_MAX];

        conn_client(c, &client);
        addr_format((struct sockaddr *)&client, n->client);
        addr_host((struct sockaddr *)&client, n->client_host, &f->remote_port);
        f->remote_addr = n->client_host;
        n->via[0] = '\0';
        if (!(c->flags & CONN_PROXIED))
                return;
        if (!balancer && getpeername(fd, (struct sockaddr *)&peer, &len) == 0)
                balancer = (struct sockaddr *)&peer;
        if (!balancer)
                return;
        addr_format(balancer, text);
        snprintf(n->via, sizeof(n->via), " via %s", text);
        addr_host(balancer, n->proxy_host, &f->proxy_port);
        f->proxy_addr = n->proxy_host;
}

/* A health check (v2 LOCAL) is logged at debug: one every few seconds
 * from every balancer would drown the clients' lines. */
static int conn_priority(const struct conn *c)
{
        return c->flags & CONN_LOCAL ? LOG_DEBUG : LOG_INFO;
}

static const char *header_kind(const struct conn *c, int version)
{
        if (!(c->flags & CONN_PROXIED))
                return "";
        if (c->flags & CONN_LOCAL)
                return "PROXY v2 LOCAL, ";
        return version == 1 ? "PROXY v1, " : version == 2 ? "PROXY v2, " : "PROXY, ";
}

/* "accepted"/"adopted connection #ID from CLIENT[ via BALANCER] ([PROXY vN,
 * ]fd N)", with the client (and the balancer) as journal fields
 * (EPOLLD_EVENT=accept or adopt). */
static void log_opened(const char *verb, const struct conn *c, int fd,
                       const struct sockaddr *balancer, int version)
{
        struct log_fields f = { .event = verb[1] == 'c' ? "accept" : "adopt", .conn_id = c->id };
        struct names n;

        if (!log_enabled(conn_priority(c)) || !log_allow(LOG_LIMIT_ACCEPT))
                return;
        name_peers(c, fd, balancer, &n, &f);
        log_write(conn_priority(c), &f, "%s connection #%llu from %s%s (%sfd %d)", verb,
                  (unsigned long long)c->id, n.client, n.via, header_kind(c, version), fd);
}

void conn_established(struct server *s, int fd, const struct sockaddr *peer, int version)
{
        struct conn *c = &s->conns[fd];

        c->id = ++s->stats.accepted;
        idle_add(s, fd);
        log_opened("accepted", c, fd, peer, version);
}

/* Returns 0, or -errno if the fd could not join the epoll set (then it is
 * closed: the client sees a close, and the caller pauses accepting). */
static int conn_open(struct server *s, int fd, const struct sockaddr *peer)
{
        struct conn *c = &s->conns[fd];
        uint32_t gen = c->gen;
        int r = loop_add(s, fd, EPOLLIN, tag_make(TAG_CONN, gen, (uint32_t)fd));

        if (r < 0) {
                if (close(fd) < 0)
                        log_err("close of fd %d failed: %s", fd, strerror(errno));
                return r;
        }
        *c = (struct conn){ .gen = gen,
                            .born_cs = s->now_cs,
                            .events = EPOLLIN,
                            .flags = CONN_OPEN,
                            .prev = -1,
                            .next = -1 };
        conn_set_client(c, peer);
        s->n_conns++;
        if (fd > s->max_fd)
                s->max_fd = fd;
        if (s->cfg.proxy_protocol) {
                c->flags |= CONN_HEADER; /* a client's only once the header names it */
                header_begin(s, fd);
                return 0;
        }
        conn_established(s, fd, peer, 0);
        return 0;
}

/* A record of version 3 has the client, the accept time and the header
 * phase; older ones (born_us 0) and a missing one get the socket's peer
 * and start their life now. Returns the accept time in CLOCK_MONOTONIC us,
 * never after s->now_us (born_cs must not be after s->now_cs). */
static uint64_t restore(struct server *s, int fd, struct conn *c, const struct state_record *r)
{
        struct sockaddr_storage peer = { 0 };
        socklen_t len = sizeof(peer);
        uint64_t born_us = s->now_us;

        c->born_cs = s->now_cs;
        if (r) {
                c->id = r->id;
                c->flags |= (uint8_t)(r->flags & CONN_STATE_FLAGS);
                if (r->flags & CONN_HEADER) {
                        c->peeked = r->pending; /* checked: below PROXY_MAX_LEN */
                } else {
                        c->replies = r->replies;
                        c->pending = (uint8_t)r->pending; /* checked: <= CONN_PENDING_MAX */
                }
        }
        if (r && r->born_us) {
                born_us = r->born_us < s->now_us ? r->born_us : s->now_us;
                c->born_cs = (uint32_t)(born_us / CONN_CS_US);
                memcpy(c->addr, r->addr, sizeof(c->addr));
                c->port = r->port;
                return born_us;
        }
        if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0)
                conn_set_client(c, (struct sockaddr *)&peer);
        return born_us;
}

/* header.c leaves SO_RCVLOWAT at one past the header bytes it saw while a
 * header is incomplete, and only the state record says so. Without the
 * record the socket's own value is all that is left: with proxy_protocol
 * on, the header phase resumes from it (its deadline counted from now);
 * else, and for any connection past its header, it goes back to 1, or a
 * short read would never be reported. */
static void restore_lowat(struct server *s, int fd, struct conn *c, bool has_record)
{
        int lowat = 1, one = 1;
        socklen_t len = sizeof(lowat);

        if (c->flags & CONN_HEADER)
                return; /* the record's peeked matches the socket's value */
        if (getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, &len) < 0) {
                log_warning("getsockopt(SO_RCVLOWAT) of adopted fd %d failed: %s", fd,
                            strerror(errno));
                return;
        }
        if (lowat <= 1)
                return;
        if (!has_record && s->cfg.proxy_protocol && lowat - 1 < (int)PROXY_MAX_LEN) {
                c->flags |= CONN_HEADER;
                c->peeked = (uint64_t)(lowat - 1);
                return;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) < 0)
                log_warning("setsockopt(SO_RCVLOWAT) of adopted fd %d failed: %s", fd,
                            strerror(errno));
}

int conn_adopt(struct server *s, int fd, const struct state_record *r)
{
        struct conn *c;
        uint64_t born_us;
        int err = (uint32_t)fd < s->table_size ? fd_nonblock_cloexec(fd) : -EBADF;

        if (err == 0)
                err = loop_add(s, fd, EPOLLIN, tag_make(TAG_CONN, s->conns[fd].gen, (uint32_t)fd));
        if (err < 0) {
                log_warning("cannot adopt connection fd %d: %s; closing it", fd, strerror(-err));
                if (close(fd) < 0)
                        log_warning("close of fd %d failed: %s", fd, strerror(errno));
                return err;
        }
        c = &s->conns[fd];
        *c = (struct conn){ .gen = c->gen,
                            .events = EPOLLIN,
                            .flags = CONN_OPEN | CONN_ADOPTED,
                            .prev = -1,
                            .next = -1 };
        born_us = restore(s, fd, c, r);
        restore_lowat(s, fd, c, r != NULL);
        s->n_conns++;
        if (fd > s->max_fd)
                s->max_fd = fd;
        if (c->flags & CONN_HEADER) {
                /* not a client's yet: no line; its deadline in ms as before */
                header_adopt(s, fd, (uint32_t)(born_us / 1000u));
                return 0;
        }
        if (!c->id)
                c->id = ++s->stats.accepted;
        idle_add(s, fd);
        log_opened("adopted", c, fd, NULL, 0);
        if (c->flags & CONN_EOF && !c->pending)
                conn_close(s, fd, "closed by peer");
        else
                update_interest(s, fd, c);
        return 0;
}

/* Returns false when accepting must stop for now. */
static bool accept_one(struct server *s, const struct listener *l)
{
        struct sockaddr_storage peer = {
                .ss_family = AF_UNSPEC
        }; /* the analyzer cannot see accept4 fill it */
        socklen_t len = sizeof(peer);
        int r, fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd >= 0) {
                if ((uint32_t)fd >= s->table_size) { /* cannot happen: table covers RLIMIT */
                        log_err("accepted fd %d beyond the connection table; closing it", fd);
                        close(fd);
                        return true;
                }
                if (s->cfg.proxy_protocol && !header_peer_allowed(s, (struct sockaddr *)&peer)) {
                        header_log_refusal((struct sockaddr *)&peer, fd, "not in proxy_from");
                        close(fd); /* before anything is read: nothing to undo */
                        return true;
                }
                r = conn_open(s, fd, (struct sockaddr *)&peer);
                if (r == -ENOSPC || r == -ENOMEM) { /* epoll's max_user_watches, memory */
                        listeners_nofile(s, l, -r);
                        return false;
                }
                if (r < 0)
                        log_limited(LOG_ERR, LOG_LIMIT_ACCEPT_ERROR, NULL,
                                    "epoll_ctl(ADD) of accepted fd %d failed: %s", fd,
                                    strerror(-r));
                return true;
        }
        switch (errno) {
        case EAGAIN:
                /* The backlog is served: only now is a shortage over. accept4
                 * takes a descriptor before it looks at the queue, so one
                 * success right after a retry may be followed by EMFILE
                 * again, within the same episode. */
                if (s->accept_failures)
                        listeners_nofile_over(s);
                return false;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case EPERM: /* a firewall refused it; the next one may be fine */
                return true;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
                listeners_nofile(s, l, errno);
                return false;
        default:
                log_limited(LOG_ERR, LOG_LIMIT_ACCEPT_ERROR, NULL,
                            "accept4 on %s (fd %d) failed: %s", l->name, l->fd, strerror(errno));
                return false;
        }
}

void conn_accept(struct server *s, uint32_t idx)
{
        const struct listener *l;

        if (idx >= s->n_listeners)
                return; /* a reload earlier in this batch removed it */
        l = &s->listeners[idx];
        for (;;) {
                if (s->n_conns >= s->max_connections) {
                        listeners_pause(s, PAUSE_FULL);
                        return;
                }
                if (!accept_one(s, l))
                        return;
        }
}

/* born_cs is never after s->now_cs, so the difference modulo 2^32 is the
 * lifetime (to 10 ms, for up to 497 days). */
uint64_t conn_lifetime_us(const struct server *s, const struct conn *c)
{
        return (uint64_t)(uint32_t)(s->now_cs - c->born_cs) * CONN_CS_US;
}

/* "closed connection #ID (WHY) after N replies in S.mmm s; client
 * CLIENT[ via BALANCER] (fd N)" (EPOLLD_EVENT=close, with DURATION_USEC). */
static void log_close(const struct server *s, const struct conn *c, int fd, const char *why)
{
        struct log_fields f = { .event = "close",
                                .conn_id = c->id,
                                .replies = c->replies,
                                .has_replies = true,
                                .has_duration = true };
        struct names n;

        f.duration_usec = conn_lifetime_us(s, c);
        name_peers(c, fd, NULL, &n, &f);
        log_write(conn_priority(c), &f,
                  "closed connection #%llu (%s) after %llu replies in %llu.%03llu s; client %s%s "
                  "(fd %d)",
                  (unsigned long long)c->id, why, (unsigned long long)c->replies,
                  (unsigned long long)(f.duration_usec / 1000000u),
                  (unsigned long long)(f.duration_usec / 1000u % 1000u), n.client, n.via, fd);
}

/* Takes FD out of the table: the one place a connection's slot is freed. */
static void release(struct server *s, int fd)
{
        struct conn *c = &s->conns[fd];

        /* close() drops the fd from the epoll set only with the last copy
         * of the socket: ours, unless PID 1 still holds the adopted one. */
        if (c->flags & CONN_ADOPTED)
                (void)loop_del(s, fd); /* ENOENT is fine: not in the set */
        if (close(fd) < 0)
                log_warning("close of connection #%llu (fd %d) failed: %s",
                            (unsigned long long)c->id, fd, strerror(errno));
        c->flags = 0;
        c->gen = (c->gen + 1) & TAG_GEN_MASK;
        s->n_conns--;
        if (s->paused & PAUSE_FULL && s->n_conns < s->max_connections)
                listeners_resume(s, PAUSE_FULL);
}

void conn_close(struct server *s, int fd, const char *why)
{
        struct conn *c = &s->conns[fd];

        if (c->flags & CONN_HEADER) {
                header_remove(s, fd);
                release(s, fd);
                return;
        }
        if (log_enabled(conn_priority(c)) && log_allow(LOG_LIMIT_CLOSE))
                log_close(s, c, fd, why);
        idle_remove(s, fd);
        release(s, fd);
}

void conn_drop(struct server *s, int fd)
{
        release(s, fd);
}

void conn_close_all(struct server *s)
{
        unsigned n = 0;

        /* Shutdown: one summary line instead of one line per connection. */
        for (int fd = 0; fd <= s->max_fd; fd++) {
                struct conn *c = &s->conns[fd];

                if (!(c->flags & CONN_OPEN))
                        continue;
                if (close(fd) < 0)
                        log_warning("close of connection #%llu (fd %d) failed: %s",
                                    (unsigned long long)c->id, fd, strerror(errno));
                c->flags = 0;
                n++;
        }
        s->n_conns = 0;
        dlist_clear(&s->idle);
        dlist_clear(&s->hdr);
        if (n)
                log_info("closed %u connection(s) at shutdown", n);
}

/* Writes what is pending, once: a short write means the socket buffer is
 * full, and a second write would only return EAGAIN. Returns -1 if the
 * connection had to be closed. */
static int flush(struct server *s, int fd, struct conn *c)
{
        uint32_t off = (CONN_REPLY_LEN - c->pending % CONN_REPLY_LEN) % CONN_REPLY_LEN;
        ssize_t n = write(fd, replies + off, c->pending);

        if (n >= 0) {
                c->pending = (uint8_t)(c->pending - n);
                return 0;
        }
        if (errno == EAGAIN || errno == EINTR)
                return 0;
        log_limited(LOG_INFO, LOG_LIMIT_IO_ERROR, NULL,
                    "write to connection #%llu (fd %d) failed: %s", (unsigned long long)c->id, fd,
                    strerror(errno));
        conn_close(s, fd, errno == EPIPE || errno == ECONNRESET ? "reset by peer" : "write error");
        return -1;
}

static void count_reply(struct server *s, struct conn *c)
{
        c->pending = (uint8_t)(c->pending + CONN_REPLY_LEN); /* EPOLLIN only if it fits */
        c->replies++;
        s->stats.replies++;
}

/* Returns -1 if the connection was closed. */
static int read_once(struct server *s, int fd, struct conn *c)
{
        ssize_t n = read(fd, conn_scratch, sizeof(conn_scratch));

        if (n > 0) {
                count_reply(s, c);
                log_full(LOG_DEBUG, NULL, "connection #%llu: read %zd bytes",
                         (unsigned long long)c->id, n);
                return 0;
        }
        if (n == 0) {
                c->flags |= CONN_EOF;
                return 0;
        }
        if (errno == EAGAIN || errno == EINTR)
                return 0;
        if (errno == ECONNRESET) {
                conn_close(s, fd, "reset by peer");
                return -1;
        }
        log_limited(LOG_INFO, LOG_LIMIT_IO_ERROR, NULL,
                    "read from connection #%llu (fd %d) failed: %s", (unsigned long long)c->id, fd,
                    strerror(errno));
        conn_close(s, fd, "read error");
        return -1;
}

/* Reading stops at the backpressure limit and after EOF; writing is
 * watched only while something is pending. */
static void update_interest(struct server *s, int fd, struct conn *c)
{
        uint32_t want = 0;
        int r;

        if (c->pending + CONN_REPLY_LEN <= CONN_PENDING_MAX && !(c->flags & CONN_EOF))
                want |= EPOLLIN;
        if (c->pending)
                want |= EPOLLOUT;
        if (want == c->events)
                return;
        r = loop_mod(s, fd, want, tag_make(TAG_CONN, c->gen, (uint32_t)fd));
        if (r < 0) {
                log_err("epoll_ctl(MOD) of connection #%llu (fd %d) failed: %s",
                        (unsigned long long)c->id, fd, strerror(-r));
                conn_close(s, fd, "epoll error");
                return;
        }
        c->events = (uint8_t)want;
}

void conn_on_event(struct server *s, uint64_t tag, uint32_t events)
{
        int fd = (int)tag_id(tag);
        struct conn *c = &s->conns[fd];

        if (!(c->flags & CONN_OPEN) || c->gen != tag_gen(tag))
                return; /* closed earlier in this batch */
        if (c->flags & CONN_HEADER) {
                enum header_result r = header_on_event(s, fd);

                if (r == HEADER_CLOSED || r == HEADER_WAITING)
                        return;
                if (r == HEADER_DONE_DATA)
                        count_reply(s, c);
        } else {
                idle_touch(s, fd); /* any event is traffic: data, room to write, or an error */
                if (c->events & EPOLLIN && events & (EPOLLIN | EPOLLERR | EPOLLHUP) &&
                    read_once(s, fd, c) < 0)
                        return;
        }
        if (c->pending && flush(s, fd, c) < 0)
                return;
        if (c->flags & CONN_EOF && !c->pending) {
                conn_close(s, fd, "closed by peer");
                return;
        }
        if (!c->pending && events & (EPOLLERR | EPOLLHUP) && !(c->events & EPOLLIN)) {
                conn_close(s, fd, "reset by peer");
                return;
        }
        update_interest(s, fd, c);
}
