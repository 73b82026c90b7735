/* idle.c - closing connections that stay silent for idle_timeout seconds.
 *
 * A doubly linked list threaded through the connection table (by fd) holds
 * the open connections in order of last activity: activity moves a
 * connection to the tail, so the head is always the next to expire. One
 * timerfd is armed for the head's deadline. It is not re-armed on activity
 * (that would be a syscall per read); if the head was touched meanwhile,
 * the timer fires early, finds nothing expired and re-arms for the new head.
 * Every operation is O(1); expiry costs O(connections that expire).
 *
 * A connection's clock is its silence, and nothing but traffic resets it:
 * a reload that changes the timeout keeps every clock, and an upgrade or a
 * restart carries each last activity in the state file (on CLOCK_MONOTONIC,
 * which execve and a restart on the same host do not reset), so frequent
 * upgrades cannot keep a silent connection open for ever. Clocks are 32-bit
 * milliseconds: silences are compared modulo 2^32, which is exact up to 49
 * days, far past the longest idle_timeout (7 days).
 */
#include "idle.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "loop.h"
#include "server.h"

static uint32_t timeout_ms(const struct server *s)
{
        return s->cfg.idle_timeout * 1000u;
}

/* A silence this long is past any idle_timeout; capping restored silences
 * at it keeps them clear of the 32-bit wrap. */
#define SILENCE_MAX (UINT32_MAX / 2)

uint64_t idle_monotonic_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t idle_clock(struct server *s)
{
        uint64_t now = idle_monotonic_ms();

        s->now_ms = (uint32_t)now;
        return now;
}

int idle_init(struct server *s)
{
        int r;

        s->idle_head = s->idle_tail = -1;
        s->idle_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (s->idle_timer_fd < 0) {
                r = -errno;
                log_err("timerfd_create for idle_timeout failed: %s", strerror(-r));
                return r;
        }
        r = loop_add(s, s->idle_timer_fd, EPOLLIN, tag_make(TAG_TIMER_IDLE, 0, 0));
        if (r < 0)
                log_err("epoll_ctl(ADD) of the idle timer failed: %s", strerror(-r));
        idle_clock(s);
        return r;
}

void idle_deinit(struct server *s)
{
        if (s->idle_timer_fd >= 0 && close(s->idle_timer_fd) < 0)
                log_warning("close of the idle timer failed: %s", strerror(errno));
        s->idle_timer_fd = -1;
}

/* Arms the timer for the head's deadline, or disarms it if the list is empty. */
static void arm(struct server *s)
{
        struct itimerspec its = { 0 };

        if (s->idle_head >= 0) {
                uint32_t silent = s->now_ms - s->conns[s->idle_head].last_ms;
                uint32_t left = silent >= timeout_ms(s) ? 1 : timeout_ms(s) - silent;

                its.it_value.tv_sec = left / 1000u;
                its.it_value.tv_nsec = (long)(left % 1000u) * 1000000L;
        }
        if (timerfd_settime(s->idle_timer_fd, 0, &its, NULL) < 0)
                log_err("timerfd_settime for idle_timeout failed: %s", strerror(errno));
}

static void unlink_conn(struct server *s, int fd)
{
        struct conn *c = &s->conns[fd];

        if (c->idle_prev >= 0)
                s->conns[c->idle_prev].idle_next = c->idle_next;
        else
                s->idle_head = c->idle_next;
        if (c->idle_next >= 0)
                s->conns[c->idle_next].idle_prev = c->idle_prev;
        else
                s->idle_tail = c->idle_prev;
        c->idle_prev = c->idle_next = -1;
}

static void append(struct server *s, int fd)
{
        struct conn *c = &s->conns[fd];

        c->last_ms = s->now_ms;
        c->idle_prev = s->idle_tail;
        c->idle_next = -1;
        if (s->idle_tail >= 0)
                s->conns[s->idle_tail].idle_next = fd;
        else
                s->idle_head = fd;
        s->idle_tail = fd;
}

void idle_add(struct server *s, int fd)
{
        bool was_empty = s->idle_head < 0;

        if (!s->cfg.idle_timeout)
                return;
        append(s, fd);
        if (was_empty)
                arm(s);
}

void idle_touch(struct server *s, int fd)
{
        if (!s->cfg.idle_timeout)
                return;
        if (s->idle_tail == fd) {
                s->conns[fd].last_ms = s->now_ms; /* already last in line */
                return;
        }
        unlink_conn(s, fd);
        append(s, fd);
}

static bool listed(const struct server *s, int fd)
{
        return s->conns[fd].idle_prev >= 0 || s->idle_head == fd;
}

void idle_remove(struct server *s, int fd)
{
        if (listed(s, fd))
                unlink_conn(s, fd);
}

void idle_on_timer(struct server *s)
{
        uint64_t expirations;

        if (read(s->idle_timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                log_err("read of the idle timer failed: %s", strerror(errno));
        if (!s->cfg.idle_timeout)
                return;
        while (s->idle_head >= 0 && s->now_ms - s->conns[s->idle_head].last_ms >= timeout_ms(s))
                conn_close(s, s->idle_head, "idle timeout");
        arm(s);
}

void idle_reconfigure(struct server *s, uint32_t old)
{
        if (old == s->cfg.idle_timeout)
                return;
        idle_clock(s); /* the loop only keeps the clock while the timeout is on */
        if (old && s->cfg.idle_timeout) {
                arm(s); /* a reload is no traffic: every clock keeps running */
                return;
        }
        /* Off, or on after being off: no clock was kept, so each starts now. */
        while (s->idle_head >= 0)
                unlink_conn(s, s->idle_head);
        /* Reload is rare; a walk of the table here keeps the hot path free
         * of any per-connection bookkeeping while the timeout is off. */
        for (int fd = 0; s->cfg.idle_timeout && fd <= s->max_fd; fd++)
                if (s->conns[fd].flags & CONN_OPEN)
                        append(s, fd);
        arm(s);
}

uint64_t idle_last_activity(const struct server *s, int fd, uint64_t now)
{
        uint64_t last;

        if (!s->cfg.idle_timeout || !listed(s, fd))
                return 0;
        last = now - (uint32_t)((uint32_t)now - s->conns[fd].last_ms);
        return last ? last : 1;
}

void idle_restore(struct server *s, int fd, uint64_t last, uint64_t now)
{
        uint64_t silent;

        if (!s->cfg.idle_timeout || !last || !listed(s, fd))
                return;
        silent = last < now ? now - last : 0;
        if (silent > SILENCE_MAX)
                silent = SILENCE_MAX;
        s->conns[fd].last_ms = (uint32_t)now - (uint32_t)silent;
}

static uint32_t silence(const struct server *s, int32_t fd)
{
        return s->now_ms - s->conns[fd].last_ms;
}

/* Merges two lists linked by idle_next, each longest silence first. */
static int32_t merge(struct server *s, int32_t a, int32_t b)
{
        int32_t head = -1, *tail = &head;

        while (a >= 0 && b >= 0) {
                int32_t *from = silence(s, a) >= silence(s, b) ? &a : &b;
                int32_t fd = *from;

                *tail = fd;
                tail = &s->conns[fd].idle_next;
                *from = s->conns[fd].idle_next;
        }
        *tail = a >= 0 ? a : b;
        return head;
}

/* Merge sort of the N entries from HEAD (linked by idle_next): no memory
 * to allocate, O(n log n), recursion depth log2(n). */
static int32_t sort(struct server *s, int32_t head, uint32_t n)
{
        int32_t mid = head, rest;

        if (n < 2)
                return head;
        for (uint32_t i = 1; i < n / 2; i++)
                mid = s->conns[mid].idle_next;
        rest = s->conns[mid].idle_next;
        s->conns[mid].idle_next = -1;
        return merge(s, sort(s, head, n / 2), sort(s, rest, n - n / 2));
}

void idle_order(struct server *s)
{
        uint32_t n = 0;
        int32_t prev = -1;

        for (int32_t fd = s->idle_head; fd >= 0; fd = s->conns[fd].idle_next)
                n++;
        s->idle_head = sort(s, s->idle_head, n);
        for (int32_t fd = s->idle_head; fd >= 0; prev = fd, fd = s->conns[fd].idle_next)
                s->conns[fd].idle_prev = prev;
        s->idle_tail = prev;
        arm(s);
}
