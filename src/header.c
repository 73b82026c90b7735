/* header.c - the PROXY header phase: with proxy_protocol = yes every
 * connection must begin with a PROXY v1 or v2 header (proxy.c parses it).
 *
 * Nothing is buffered: a header is read with recv(MSG_PEEK) into the shared
 * scratch buffer and judged whole each time (it is at most PROXY_MAX_LEN
 * bytes). Only once it is complete are the bytes taken, with one recv() of
 * exactly what was peeked: the header, and whatever client bytes came with
 * it, which count as one read (one "Hi!"). An incomplete header leaves the
 * bytes in the kernel and raises SO_RCVLOWAT to one more than it saw:
 * tcp_poll() then stops reporting the socket readable until something new
 * arrives (or the peer closes), so level-triggered epoll does not present
 * the same bytes again and the loop never spins on them. The common case,
 * a header and its data in one segment, costs one extra syscall (the peek)
 * and no epoll_ctl; the EPOLLET alternative would cost an epoll_ctl(MOD)
 * per connection to leave edge-triggered mode. SO_RCVLOWAT is set back to
 * 1 when the header is done, and only if it was raised (conn.peeked).
 * A peek that sees no more than last time is refused at once (so nothing
 * can spin), for the reason the socket gives: a FIN (the TCP state), an
 * urgent byte (tcp_poll() counts it towards SO_RCVLOWAT, and a peek
 * cannot get past its mark, so the header could never complete), or else
 * receive queue pressure, which also makes tcp_poll() ignore SO_RCVLOWAT.
 *
 * Deadline: every waiting connection has the same proxy_timeout, so a
 * deadline list (dlist.c) in accept order with one timerfd is O(1). A
 * connection leaves it when its header is done and joins the idle list.
 * Refused connections (a peer not in proxy_from, a malformed header, no
 * header in time) were never a client's: they get a rate-limited line
 * naming the socket's peer, and no accept or close line.
 */
#include "header.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "conn.h"
#include "dlist.h"
#include "log.h"
#include "proxy.h"
#include "server.h"

static uint32_t timeout_ms(const struct server *s)
{
        return s->cfg.proxy_timeout * 1000u;
}

int header_init(struct server *s)
{
        return dlist_init(s, &s->hdr, TAG_TIMER_HEADER, "proxy_timeout");
}

void header_deinit(struct server *s)
{
        dlist_deinit(&s->hdr);
}

bool header_peer_allowed(const struct server *s, const struct sockaddr *peer)
{
        if (s->cfg.n_proxy_from == 0)
                return true;
        for (unsigned i = 0; i < s->cfg.n_proxy_from; i++)
                if (cidr_match(&s->cfg.proxy_from[i], peer))
                        return true;
        return false;
}

void header_log_refusal(const struct sockaddr *peer, int fd, const char *why)
{
        char host[ADDR_TEXT_MAX], text[ADDR_TEXT_MAX];
        struct log_fields f = { .event = "refuse", .remote_addr = host, .reason = why };

        if (!log_enabled(LOG_WARNING) || !log_allow(LOG_LIMIT_PROXY))
                return;
        addr_host(peer, host, &f.remote_port);
        addr_format(peer, text);
        log_write(LOG_WARNING, &f, "refused connection from %s (fd %d): %s", text, fd, why);
}

void header_begin(struct server *s, int fd)
{
        bool was_empty = s->hdr.head < 0;

        dlist_append(s, &s->hdr, fd);
        if (was_empty)
                dlist_arm_lazily(s, &s->hdr, timeout_ms(s));
}

void header_adopt(struct server *s, int fd, uint32_t accepted_ms)
{
        dlist_append(s, &s->hdr, fd);
        s->conns[fd].last_ms = accepted_ms;
}

void header_order(struct server *s)
{
        dlist_order(s, &s->hdr);
        dlist_arm(s, &s->hdr, timeout_ms(s));
}

void header_remove(struct server *s, int fd)
{
        if (dlist_listed(s, &s->hdr, fd))
                dlist_unlink(s, &s->hdr, fd);
}

static void refuse(struct server *s, int fd, const char *why)
{
        struct sockaddr_storage peer;

        conn_client(&s->conns[fd], &peer); /* still the socket's peer */
        header_log_refusal((struct sockaddr *)&peer, fd, why);
        header_remove(s, fd);
        conn_drop(s, fd);
}

static int set_lowat(int fd, int bytes)
{
        return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes)) < 0 ? -errno : 0;
}

/* Readable, yet no byte more than last time: why? Only this rare path
 * pays for the two syscalls. */
static const char *why_nothing_new(int fd)
{
        struct tcp_info ti;
        socklen_t len = sizeof(ti);
        ssize_t r;
        char b;

        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
            ti.tcpi_state != TCP_ESTABLISHED)
                return "closed before the end of its PROXY header";
        r = recv(fd, &b, 1, MSG_OOB | MSG_PEEK); /* EAGAIN: announced, not arrived */
        if (r == 1 || (r < 0 && errno == EAGAIN))
                return "urgent data in a PROXY header";
        return "receive queue under pressure before the end of its PROXY header";
}

/* N bytes are a valid beginning: wait for byte N + 1. */
static enum header_result wait_for_more(struct server *s, int fd, size_t n)
{
        struct conn *c = &s->conns[fd];
        char why[128];
        int r;

        if (n <= c->peeked) {
                refuse(s, fd, why_nothing_new(fd));
                return HEADER_CLOSED;
        }
        r = set_lowat(fd, (int)n + 1);
        if (r < 0) {
                snprintf(why, sizeof(why), "setsockopt(SO_RCVLOWAT) failed: %s", strerror(-r));
                refuse(s, fd, why);
                return HEADER_CLOSED;
        }
        c->peeked = n;
        return HEADER_WAITING;
}

/* The header is LEN bytes of the N peeked: take all N, name the client. */
static enum header_result finish(struct server *s, int fd, const struct proxy_header *h, size_t len,
                                 size_t n)
{
        struct conn *c = &s->conns[fd];
        struct sockaddr_storage peer;
        ssize_t got = recv(fd, conn_scratch, n, 0);
        char why[128];
        int r;

        if (got < (ssize_t)len) {
                snprintf(why, sizeof(why), "taking the PROXY header failed: %s",
                         got < 0 ? strerror(errno) : "short read");
                refuse(s, fd, why);
                return HEADER_CLOSED;
        }
        r = c->peeked ? set_lowat(fd, 1) : 0;
        if (r < 0) { /* left raised, short reads would never be reported */
                snprintf(why, sizeof(why), "setsockopt(SO_RCVLOWAT) back to 1 failed: %s",
                         strerror(-r));
                refuse(s, fd, why);
                return HEADER_CLOSED;
        }
        conn_client(c, &peer);
        header_remove(s, fd);
        c->flags = (uint8_t)((c->flags & ~CONN_HEADER) | CONN_PROXIED);
        c->peeked = 0; /* and so replies: it shares their place */
        if (h->has_addr)
                conn_set_client(c, (const struct sockaddr *)&h->src);
        if (h->version == 2 && h->command == PROXY_LOCAL)
                c->flags |= CONN_LOCAL;
        conn_established(s, fd, (struct sockaddr *)&peer, h->version);
        return (size_t)got > len ? HEADER_DONE_DATA : HEADER_DONE;
}

enum header_result header_on_event(struct server *s, int fd)
{
        struct proxy_header h;
        ssize_t n = recv(fd, conn_scratch, CONN_SCRATCH_SIZE, MSG_PEEK);
        int r;

        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return HEADER_WAITING;
        if (n <= 0) {
                refuse(s, fd,
                       n == 0 ? "closed before the end of its PROXY header" : strerror(errno));
                return HEADER_CLOSED;
        }
        r = proxy_parse(conn_scratch, (size_t)n, &h);
        if (r < 0) {
                refuse(s, fd, proxy_strerror(r));
                return HEADER_CLOSED;
        }
        if (r == 0)
                return wait_for_more(s, fd, (size_t)n);
        return finish(s, fd, &h, (size_t)r, (size_t)n);
}

void header_on_timer(struct server *s)
{
        char why[64];

        dlist_read_timer(&s->hdr);
        snprintf(why, sizeof(why), "no complete PROXY header within %u s",
                 (unsigned)s->cfg.proxy_timeout);
        while (dlist_head_expired(s, &s->hdr, timeout_ms(s)))
                refuse(s, s->hdr.head, why);
        dlist_arm(s, &s->hdr, timeout_ms(s));
}

void header_reconfigure(struct server *s)
{
        dlist_arm(s, &s->hdr, timeout_ms(s));
}
