/* dlist.c - deadline lists: a doubly linked list threaded through the
 * connection table and one timerfd armed for the head's deadline.
 *
 * Every member of one list has the same timeout, so the list in order of
 * last_ms is the list in order of deadlines: appending at the tail keeps
 * it sorted, and the head is always the next to expire. The timer is not
 * re-armed when a member moves (that would be a syscall per read); if the
 * head moved meanwhile, the timer fires early, finds nothing expired and
 * is armed for the new head. For the same reason a member joining an
 * empty list does not re-arm a timer still set for an earlier member: a
 * stream of short-lived connections costs one timer wake-up per timeout,
 * not one timerfd_settime() each. Times are 32-bit milliseconds compared modulo
 * 2^32, exact up to 49 days, far past any timeout here.
 */
#include "dlist.h"

#include <errno.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "server.h"

int dlist_init(struct server *s, struct dlist *l, enum tag_kind kind, const char *what)
{
        int r;

        l->head = l->tail = -1;
        l->armed = false;
        l->what = what;
        l->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (l->timer_fd < 0) {
                r = -errno;
                log_err("timerfd_create for %s failed: %s", what, strerror(-r));
                return r;
        }
        r = loop_add(s, l->timer_fd, EPOLLIN, tag_make(kind, 0, 0));
        if (r < 0)
                log_err("epoll_ctl(ADD) of the %s timer failed: %s", what, strerror(-r));
        return r;
}

void dlist_deinit(struct dlist *l)
{
        if (l->timer_fd >= 0 && close(l->timer_fd) < 0)
                log_warning("close of the %s timer failed: %s", l->what, strerror(errno));
        l->timer_fd = -1;
}

void dlist_arm(struct server *s, struct dlist *l, uint32_t timeout_ms)
{
        struct itimerspec its = { 0 };

        if (l->head >= 0) {
                uint32_t waited = s->now_ms - s->conns[l->head].last_ms;
                uint32_t left = waited >= timeout_ms ? 1 : timeout_ms - waited;

                its.it_value.tv_sec = left / 1000u;
                its.it_value.tv_nsec = (long)(left % 1000u) * 1000000L;
        }
        if (timerfd_settime(l->timer_fd, 0, &its, NULL) < 0) {
                log_err("timerfd_settime for %s failed: %s", l->what, strerror(errno));
                l->armed = false;
                return;
        }
        l->armed = l->head >= 0;
}

void dlist_arm_lazily(struct server *s, struct dlist *l, uint32_t timeout_ms)
{
        if (!l->armed)
                dlist_arm(s, l, timeout_ms);
}

void dlist_read_timer(struct dlist *l)
{
        uint64_t expirations;

        l->armed = false;
        if (read(l->timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                log_err("read of the %s timer failed: %s", l->what, strerror(errno));
}

bool dlist_head_expired(const struct server *s, const struct dlist *l, uint32_t timeout_ms)
{
        return l->head >= 0 && s->now_ms - s->conns[l->head].last_ms >= timeout_ms;
}

void dlist_unlink(struct server *s, struct dlist *l, int fd)
{
        struct conn *c = &s->conns[fd];

        if (c->prev >= 0)
                s->conns[c->prev].next = c->next;
        else
                l->head = c->next;
        if (c->next >= 0)
                s->conns[c->next].prev = c->prev;
        else
                l->tail = c->prev;
        c->prev = c->next = -1;
}

void dlist_append(struct server *s, struct dlist *l, int fd)
{
        struct conn *c = &s->conns[fd];

        c->last_ms = s->now_ms;
        c->prev = l->tail;
        c->next = -1;
        if (l->tail >= 0)
                s->conns[l->tail].next = fd;
        else
                l->head = fd;
        l->tail = fd;
}

bool dlist_listed(const struct server *s, const struct dlist *l, int fd)
{
        return s->conns[fd].prev >= 0 || l->head == fd;
}

void dlist_clear(struct dlist *l)
{
        l->head = l->tail = -1;
}

static uint32_t age(const struct server *s, int32_t fd)
{
        return s->now_ms - s->conns[fd].last_ms;
}

/* Merges two lists linked by next, each oldest first. */
static int32_t merge(struct server *s, int32_t a, int32_t b)
{
        int32_t head = -1, *tail = &head;

        while (a >= 0 && b >= 0) {
                int32_t *from = age(s, a) >= age(s, b) ? &a : &b;
                int32_t fd = *from;

                *tail = fd;
                tail = &s->conns[fd].next;
                *from = s->conns[fd].next;
        }
        *tail = a >= 0 ? a : b;
        return head;
}

/* Merge sort of the N entries from HEAD (linked by next): recursion depth
 * log2(n). */
static int32_t sort(struct server *s, int32_t head, uint32_t n)
{
        int32_t mid = head, rest;

        if (n < 2)
                return head;
        for (uint32_t i = 1; i < n / 2; i++)
                mid = s->conns[mid].next;
        rest = s->conns[mid].next;
        s->conns[mid].next = -1;
        return merge(s, sort(s, head, n / 2), sort(s, rest, n - n / 2));
}

void dlist_order(struct server *s, struct dlist *l)
{
        uint32_t n = 0;
        int32_t prev = -1;

        for (int32_t fd = l->head; fd >= 0; fd = s->conns[fd].next)
                n++;
        l->head = sort(s, l->head, n);
        for (int32_t fd = l->head; fd >= 0; prev = fd, fd = s->conns[fd].next)
                s->conns[fd].prev = prev;
        l->tail = prev;
}
