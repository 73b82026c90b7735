/* listener.c - listening sockets and when they take part in the loop.
 *
 * Listeners come from three places: a .socket unit (socket activation),
 * systemd's fd store (ours, kept across a restart), or bind() from the
 * configuration. Whatever we bind ourselves also goes to the fd store, so a
 * restart does not refuse new clients while the new process starts.
 *
 * Accepting pauses for two independent reasons, kept as bits: the
 * connection limit (resumed when a connection closes) and a shortage of
 * descriptors (resumed from a timer, as nginx does, because no event tells
 * us when descriptors free up). While paused, the listeners are out of the
 * epoll set and new clients wait in the kernel's backlog; the loop never
 * spins on a listener it cannot serve.
 *
 * A listener's addr is always what its socket is bound to (getsockname),
 * however it came to us; one rule, listener_serves(), says whether it
 * stands for a configured address, so a configured port 0 keeps its
 * socket across a reload, a re-exec and a restart alike.
 */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "conn.h"
#include "fd.h"
#include "fdstore.h"
#include "log.h"
#include "loop.h"

#define NOFILE_RETRY_MS 100

/* The fd store name of a listener we bound: "listen_" and the address,
 * with ':' (the name separator of LISTEN_FDNAMES) turned into '_'. */
static void own_fdname(struct listener *l)
{
        size_t n = strnlen(l->name, sizeof(l->name) - 1);

        memcpy(l->fdname, "listen_", 7);
        memcpy(l->fdname + 7, l->name, n);
        l->fdname[7 + n] = '\0';
        for (char *p = l->fdname; *p; p++)
                if (*p == ':')
                        *p = '_';
}

/* REUSEPORT joins the kernel's SO_REUSEPORT group on the address, so that
 * several epolld processes (of one user) share a port and the kernel
 * spreads new connections over them. */
static int open_socket(const struct addr *a, int backlog, bool reuseport)
{
        int fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1, err;

        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                goto fail;
        if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
                goto fail;
        /* "*:PORT" binds both families on one port; that needs v6-only. */
        if (a->u.sa.sa_family == AF_INET6 &&
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
                goto fail;
        if (bind(fd, &a->u.sa, a->len) < 0 || listen(fd, backlog) < 0)
                goto fail;
        return fd;
fail:
        err = -errno;
        close(fd);
        return err;
}

/* The tag carries the listener set's generation, which every reload's
 * commit() bumps: an event queued before a reload in the same batch names
 * an index that may now be another listener's, and is dropped. */
static uint64_t listener_tag(const struct server *s, unsigned i)
{
        return tag_make(TAG_LISTENER, s->listeners_gen, i);
}

static int add_to_loop(struct server *s, unsigned i)
{
        return loop_add(s, s->listeners[i].fd, EPOLLIN, listener_tag(s, i));
}

void listeners_on_event(struct server *s, uint64_t tag)
{
        /* Stale: the listener, level-triggered, comes back with its new tag. */
        if (tag_gen(tag) != (s->listeners_gen & TAG_GEN_MASK))
                return;
        conn_accept(s, tag_id(tag));
}

/* With port 0 the kernel picks one: the listener's address is what it got,
 * as it will be for the next image or process that adopts the socket. */
static void name_bound(struct listener *l)
{
        struct addr got = { .len = sizeof(got.u) };

        if (getsockname(l->fd, &got.u.sa, &got.len) == 0)
                l->addr = got;
        addr_format(&l->addr.u.sa, l->name);
}

static int bind_one(struct listener *l, const struct addr *a, const struct config *c)
{
        int fd;

        *l = (struct listener){ .addr = *a };
        addr_format(&l->addr.u.sa, l->name);
        own_fdname(l);
        fd = open_socket(&l->addr, (int)c->backlog, c->reuseport);
        if (fd < 0) {
                log_err("cannot listen on %s: %s", l->name, strerror(-fd));
                return fd;
        }
        l->fd = fd;
        name_bound(l);
        return 0;
}

/* An inherited socket is checked, never trusted, and made non-blocking
 * here: a .socket unit without NonBlocking=yes passes blocking ones. */
int listeners_adopt(struct server *s, int fd, const char *fdname, bool activated)
{
        struct listener *l = &s->listeners[s->n_listeners];
        int r = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0);

        if (r <= 0) {
                log_err("socket activation: fd %d is not a listening TCP socket%s%s", fd,
                        r < 0 ? ": " : "", r < 0 ? strerror(-r) : "");
                return r < 0 ? r : -EINVAL;
        }
        if (s->n_listeners == CONFIG_MAX_LISTEN) {
                log_err("inherited listener fd %d: already %d listeners, the most supported", fd,
                        CONFIG_MAX_LISTEN);
                return -E2BIG;
        }
        *l = (struct listener){ .fd = fd, .activated = activated };
        snprintf(l->fdname, sizeof(l->fdname), "%s", fdname);
        l->addr.len = sizeof(l->addr.u);
        r = getsockname(fd, &l->addr.u.sa, &l->addr.len) < 0 ? -errno : fd_nonblock_cloexec(fd);
        if (r < 0) {
                log_err("cannot set up inherited listener fd %d: %s", fd, strerror(-r));
                return r;
        }
        addr_format(&l->addr.u.sa, l->name);
        s->n_listeners++;
        if (activated)
                log_info("using socket-activated listener %s (fd %d)", l->name, fd);
        return 0;
}

static int open_timer(struct server *s)
{
        int r;

        s->accept_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (s->accept_timer_fd < 0) {
                r = -errno;
                log_err("timerfd_create for accept retries failed: %s", strerror(-r));
                return r;
        }
        r = loop_add(s, s->accept_timer_fd, EPOLLIN, tag_make(TAG_TIMER_ACCEPT, 0, 0));
        if (r < 0)
                log_err("epoll_ctl(ADD) of the accept timer failed: %s", strerror(-r));
        return r;
}

/* Socket activation wins over our own stored listeners: drop those. */
static void drop_stored(struct server *s)
{
        unsigned kept = 0;

        for (unsigned i = 0; i < s->n_listeners; i++) {
                struct listener *l = &s->listeners[i];

                if (l->activated) {
                        s->listeners[kept++] = *l;
                        continue;
                }
                log_info("socket activation: dropping stored listener %s", l->name);
                fdstore_remove(s, l->fdname);
                if (close(l->fd) < 0) /* never added to the epoll set */
                        log_warning("close of listener %s failed: %s", l->name, strerror(errno));
        }
        s->n_listeners = kept;
}

static int use_activated(struct server *s)
{
        drop_stored(s);
        log_info("socket activation: %u socket(s) passed; ignoring the listen setting",
                 s->n_listeners);
        if (s->cfg.reuseport)
                log_notice("socket activation: ignoring reuseport = yes; the .socket unit's "
                           "ReusePort= decides");
        for (unsigned i = 0; i < s->n_listeners; i++) {
                int r = add_to_loop(s, i);

                if (r < 0) {
                        log_err("epoll_ctl(ADD) of listener %s failed: %s", s->listeners[i].name,
                                strerror(-r));
                        return r;
                }
        }
        return 0;
}

static bool any_activated(const struct server *s)
{
        for (unsigned i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].activated)
                        return true;
        return false;
}

int listeners_open(struct server *s)
{
        int r = open_timer(s);

        if (r < 0)
                return r;
        if (any_activated(s))
                return use_activated(s);
        /* Stored listeners that match the configuration are kept; the
         * rest is bound, exactly as a reload would do it. */
        return listeners_reconfigure(s, &s->cfg);
}

void listeners_close(struct server *s)
{
        for (unsigned i = 0; i < s->n_listeners; i++)
                if (close(s->listeners[i].fd) < 0)
                        log_warning("close of listener %s failed: %s", s->listeners[i].name,
                                    strerror(errno));
        s->n_listeners = 0;
        if (s->accept_timer_fd >= 0 && close(s->accept_timer_fd) < 0)
                log_warning("close of the accept timer failed: %s", strerror(errno));
        s->accept_timer_fd = -1;
}

/* EPOLLD_EVENT=accept-paused / accept-resumed, REASON= the pause's. */
static const struct log_fields pause_fields = { .event = "accept-paused",
                                                .reason = "max_connections" };
static const struct log_fields resume_fields = { .event = "accept-resumed",
                                                 .reason = "max_connections" };
static const struct log_fields nofile_fields = { .event = "accept-paused",
                                                 .reason = "descriptors" };

void listeners_pause(struct server *s, enum pause_reason why)
{
        bool was_active = s->paused == 0;

        s->paused |= why;
        if (!was_active)
                return;
        for (unsigned i = 0; i < s->n_listeners; i++) {
                int r = loop_del(s, s->listeners[i].fd);

                if (r < 0)
                        log_err("epoll_ctl(DEL) of listener %s failed: %s", s->listeners[i].name,
                                strerror(-r));
        }
        if (why == PAUSE_FULL)
                log_limited(LOG_INFO, LOG_LIMIT_PAUSE, &pause_fields,
                            "max_connections (%u) reached; accepting paused",
                            (unsigned)s->max_connections);
}

void listeners_resume(struct server *s, enum pause_reason why)
{
        if (!(s->paused & why))
                return;
        s->paused &= ~(unsigned)why;
        if (s->paused)
                return;
        for (unsigned i = 0; i < s->n_listeners; i++) {
                int r = add_to_loop(s, i);

                if (r < 0)
                        log_err("epoll_ctl(ADD) of listener %s failed: %s", s->listeners[i].name,
                                strerror(-r));
        }
        if (why == PAUSE_FULL)
                log_limited(LOG_INFO, LOG_LIMIT_PAUSE, &resume_fields,
                            "accepting again (%u connections)", (unsigned)s->n_conns);
}

static void arm_retry(struct server *s)
{
        struct itimerspec its = { .it_value = { .tv_nsec = NOFILE_RETRY_MS * 1000000L } };

        if (timerfd_settime(s->accept_timer_fd, 0, &its, NULL) < 0)
                log_err("timerfd_settime for accept retries failed: %s", strerror(errno));
}

void listeners_nofile(struct server *s, const struct listener *l, int err)
{
        if (s->accept_failures++ == 0)
                log_limited(LOG_WARNING, LOG_LIMIT_ACCEPT_ERROR, &nofile_fields,
                            "accept on %s failed: %s; pausing accepts, retrying every %d ms",
                            l->name, strerror(err), NOFILE_RETRY_MS);
        listeners_pause(s, PAUSE_NOFILE);
        arm_retry(s);
}

void listeners_nofile_over(struct server *s)
{
        log_event(LOG_NOTICE, "accept-resumed", "descriptors",
                  "accepting again after %llu failed attempts",
                  (unsigned long long)s->accept_failures);
        s->accept_failures = 0;
}

void listeners_on_timer(struct server *s)
{
        uint64_t expirations;

        if (read(s->accept_timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                log_err("read of the accept timer failed: %s", strerror(errno));
        listeners_resume(s, PAUSE_NOFILE);
}

static unsigned addr_port(const struct addr *a)
{
        return ntohs(a->u.sa.sa_family == AF_INET6 ? a->u.in6.sin6_port : a->u.in.sin_port);
}

static bool same_host(const struct addr *a, const struct addr *b)
{
        if (a->u.sa.sa_family != b->u.sa.sa_family)
                return false;
        if (a->u.sa.sa_family == AF_INET)
                return a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
        return memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, sizeof(struct in6_addr)) == 0 &&
               a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id;
}

static bool is_wildcard(const struct addr *a)
{
        if (a->u.sa.sa_family == AF_INET)
                return a->u.in.sin_addr.s_addr == htonl(INADDR_ANY);
        return memcmp(&a->u.in6.sin6_addr, &in6addr_any, sizeof(struct in6_addr)) == 0;
}

/* The one matching rule, for a reload and for every adoption path (fd
 * store, re-exec): same family and host, and the same port or a
 * configured port 0, for which any port the kernel picked will do. */
static bool listener_serves(const struct listener *l, const struct addr *want)
{
        unsigned port = addr_port(want);

        return same_host(&l->addr, want) && (port == 0 || port == addr_port(&l->addr));
}

/* The first listener not yet kept that serves WANT, now kept; or -1. */
static int claim(const struct server *s, const struct addr *want, bool *kept)
{
        for (unsigned j = 0; j < s->n_listeners; j++) {
                if (!kept[j] && listener_serves(&s->listeners[j], want)) {
                        kept[j] = true;
                        return (int)j;
                }
        }
        return -1;
}

/* FROM[i] = the index of the listener that stays for NEXT's address i, or
 * -1 to bind it. Exact ports first, so that a port 0 never takes the
 * socket another address names. */
static void match(const struct server *s, const struct config *next, int *from, bool *kept)
{
        for (unsigned i = 0; i < next->n_listen; i++)
                from[i] = addr_port(&next->listen[i]) ? claim(s, &next->listen[i], kept) : -1;
        for (unsigned i = 0; i < next->n_listen; i++)
                if (addr_port(&next->listen[i]) == 0)
                        from[i] = claim(s, &next->listen[i], kept);
}

/* Linux will not bind a wildcard and a specific host of one family on one
 * port at once (EADDRINUSE), so moving a port between the two would have
 * to close the old socket before binding the new one: clients would be
 * refused meanwhile, and a bind failing then (a privileged port after
 * dropping root, a race) could not be undone. Refused up front instead. */
static bool moves_port(const struct addr *a, const struct listener *l)
{
        return addr_port(a) != 0 && a->u.sa.sa_family == l->addr.u.sa.sa_family &&
               addr_port(a) == addr_port(&l->addr) && (is_wildcard(a) || is_wildcard(&l->addr));
}

static int check_moves(const struct server *s, const struct config *next, const int *from,
                       const bool *kept)
{
        for (unsigned i = 0; i < next->n_listen; i++) {
                for (unsigned j = 0; j < s->n_listeners && from[i] < 0; j++) {
                        const struct listener *l = &s->listeners[j];
                        char want[ADDR_TEXT_MAX];

                        if (kept[j] || !moves_port(&next->listen[i], l))
                                continue;
                        addr_format(&next->listen[i].u.sa, want);
                        log_err("cannot change %s to %s while running (Linux will not bind both "
                                "on one port at once): stop epolld and start it again to apply this",
                                l->name, want);
                        return -EADDRINUSE;
                }
        }
        return 0;
}

/* Closes the listeners l[i] for which which[i] == value. PID 1 may hold a
 * copy (fd store), so each leaves the epoll set explicitly first. */
static void close_where(struct server *s, struct listener *l, unsigned n, const bool *which,
                        bool value)
{
        for (unsigned i = 0; i < n; i++) {
                if (which[i] != value)
                        continue;
                (void)loop_del(s, l[i].fd); /* ENOENT is fine: never added, or paused */
                if (close(l[i].fd) < 0)
                        log_warning("close of listener %s failed: %s", l[i].name, strerror(errno));
        }
}

/* A kept socket stays in (or out of) its SO_REUSEPORT group as it was
 * bound: leaving or joining would take a new socket, and closing the old
 * one first would refuse clients. Said when it differs from the file. */
static void check_reuseport(const struct listener *l, bool want)
{
        int on = 0;
        socklen_t len = sizeof(on);

        if (getsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) < 0) {
                log_warning("getsockopt(SO_REUSEPORT) of listener %s failed: %s", l->name,
                            strerror(errno));
                return;
        }
        if ((on != 0) != want)
                log_notice("listener %s keeps its socket, bound with reuseport = %s; "
                           "reuseport = %s applies to addresses bound from now on "
                           "(stop and start epolld to rebind it)",
                           l->name, on ? "yes" : "no", want ? "yes" : "no");
}

/* Announces and stores what changed: listeners gone leave the fd store,
 * new ones enter it. */
static void announce(struct server *s, const struct config *c, const struct listener *next,
                     unsigned n, const bool *kept, const bool *opened)
{
        for (unsigned i = 0; i < s->n_listeners; i++) {
                if (kept[i]) {
                        check_reuseport(&s->listeners[i], c->reuseport);
                        continue;
                }
                log_event(LOG_INFO, "unlisten", NULL, "no longer listening on %s",
                          s->listeners[i].name);
                fdstore_remove(s, s->listeners[i].fdname);
        }
        for (unsigned i = 0; i < n; i++) {
                if (!opened[i])
                        continue;
                log_event(LOG_INFO, "listen", NULL, "listening on %s", next[i].name);
                fdstore_push_listener(s, &next[i]);
        }
}

/* Puts the new set in place: closes what is gone, re-tags what stays (its
 * index may have moved) with the set's next generation and registers what
 * is new. */
static void commit(struct server *s, struct listener *next, unsigned n, const bool *kept,
                   uint32_t backlog)
{
        close_where(s, s->listeners, s->n_listeners, kept, false);
        memcpy(s->listeners, next, n * sizeof(*next));
        s->n_listeners = n;
        s->listeners_gen++;
        for (unsigned i = 0; i < n; i++) {
                struct listener *l = &s->listeners[i];
                int r = 0;

                if (listen(l->fd, (int)backlog) < 0)
                        log_warning("listen(%s) with the new backlog failed: %s", l->name,
                                    strerror(errno));
                if (!s->paused)
                        r = loop_mod(s, l->fd, EPOLLIN, listener_tag(s, i));
                if (r == -ENOENT)
                        r = add_to_loop(s, i);
                if (r < 0)
                        log_err("epoll_ctl of listener %s failed: %s", l->name, strerror(-r));
        }
}

int listeners_reconfigure(struct server *s, const struct config *next)
{
        struct listener fresh[CONFIG_MAX_LISTEN];
        bool kept[CONFIG_MAX_LISTEN] = { false }, opened[CONFIG_MAX_LISTEN] = { false };
        int from[CONFIG_MAX_LISTEN];
        int r;

        if (any_activated(s))
                return 0; /* systemd's sockets are the listeners; listen is ignored */
        match(s, next, from, kept);
        r = check_moves(s, next, from, kept);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < next->n_listen; i++) {
                if (from[i] >= 0) {
                        fresh[i] = s->listeners[from[i]];
                        continue;
                }
                r = bind_one(&fresh[i], &next->listen[i], next);
                if (r < 0) {
                        close_where(s, fresh, i, opened, true);
                        return r;
                }
                opened[i] = true;
        }
        announce(s, next, fresh, next->n_listen, kept, opened);
        commit(s, fresh, next->n_listen, kept, next->backlog);
        return 0;
}
