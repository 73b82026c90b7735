/* loop.c - the epoll set and the one epoll_wait loop that drives epolld.
 *
 * Everything is an fd in one epoll set: listeners, connections, the
 * signalfd and the timerfds. All are level-triggered; the loop blocks with
 * no timeout, so an idle daemon makes no wake-ups at all. Each event's tag
 * says what it is for, so dispatch is one switch.
 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "header.h"
#include "idle.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "sig.h"

int loop_init(struct server *s)
{
        s->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (s->epfd < 0)
                return -errno;
        return 0;
}

void loop_deinit(struct server *s)
{
        if (s->epfd >= 0 && close(s->epfd) < 0)
                log_warning("close of the epoll fd failed: %s", strerror(errno));
        s->epfd = -1;
        free(s->events);
        s->events = NULL;
}

static int ctl(struct server *s, int op, int fd, uint32_t events, uint64_t tag)
{
        struct epoll_event ev = { .events = events, .data.u64 = tag };

        return epoll_ctl(s->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

int loop_add(struct server *s, int fd, uint32_t events, uint64_t tag)
{
        return ctl(s, EPOLL_CTL_ADD, fd, events, tag);
}

int loop_mod(struct server *s, int fd, uint32_t events, uint64_t tag)
{
        return ctl(s, EPOLL_CTL_MOD, fd, events, tag);
}

int loop_del(struct server *s, int fd)
{
        return ctl(s, EPOLL_CTL_DEL, fd, 0, 0);
}

/* The event array follows max_events, which a reload may change; it is
 * only resized here, between batches, never while one is being handled. */
static int size_events(struct server *s)
{
        struct epoll_event *e;

        if (s->events && s->n_events == s->cfg.max_events)
                return 0;
        e = realloc(s->events, s->cfg.max_events * sizeof(*e));
        if (!e && s->events) {
                /* A reload asked for more; the old array still works. */
                log_limited(LOG_WARNING, LOG_LIMIT_MEMORY, NULL,
                            "cannot resize the event array to %u: keeping %u",
                            (unsigned)s->cfg.max_events, (unsigned)s->n_events);
                return 0;
        }
        if (!e)
                return -ENOMEM;
        s->events = e;
        s->n_events = s->cfg.max_events;
        return 0;
}

static void dispatch(struct server *s, const struct epoll_event *ev)
{
        uint64_t tag = ev->data.u64;

        switch (tag_kind(tag)) {
        case TAG_CONN:
                conn_on_event(s, tag, ev->events);
                break;
        case TAG_LISTENER:
                listeners_on_event(s, tag);
                break;
        case TAG_SIGNAL:
                sig_on_readable(s);
                break;
        case TAG_TIMER_IDLE:
                idle_on_timer(s);
                break;
        case TAG_TIMER_ACCEPT:
                listeners_on_timer(s);
                break;
        case TAG_TIMER_WATCHDOG:
                notify_on_watchdog(s);
                break;
        case TAG_TIMER_STATUS:
                notify_on_status(s);
                break;
        case TAG_TIMER_HEADER:
                header_on_timer(s);
                break;
        }
}

int loop_run(struct server *s)
{
        while (!s->stopping) {
                int n, r = size_events(s);

                if (r < 0) {
                        log_err("cannot allocate %u epoll events: %s", s->cfg.max_events,
                                strerror(-r));
                        return r;
                }
                n = epoll_wait(s->epfd, s->events, (int)s->n_events, -1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        log_err("epoll_wait failed: %s", strerror(-r));
                        return r;
                }
                idle_clock(s); /* a vDSO call per turn: accept times, deadlines */
                for (int i = 0; i < n; i++)
                        dispatch(s, &s->events[i]);
                notify_after_batch(s);
        }
        return 0;
}
