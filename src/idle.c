/* idle.c - closing connections that stay silent for idle_timeout seconds.
 *
 * A deadline list (dlist.c) holds the connections past their PROXY header
 * in order of last activity: activity moves a connection to the tail, so
 * the head is always the next to expire, and one timerfd is armed for it.
 * Every operation is O(1); expiry costs O(connections that expire).
 * Connections still waiting for their PROXY header are on the header list
 * instead (header.c): CONN_HEADER says which list the links belong to.
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
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "dlist.h"
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
        struct timespec ts;
        uint64_t now;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        s->now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        now = s->now_us / 1000u;
        s->now_ms = (uint32_t)now;
        s->now_cs = (uint32_t)(s->now_us / CONN_CS_US);
        return now;
}

int idle_init(struct server *s)
{
        idle_clock(s);
        return dlist_init(s, &s->idle, TAG_TIMER_IDLE, "idle_timeout");
}

void idle_deinit(struct server *s)
{
        dlist_deinit(&s->idle);
}

void idle_add(struct server *s, int fd)
{
        bool was_empty = s->idle.head < 0;

        if (!s->cfg.idle_timeout)
                return;
        dlist_append(s, &s->idle, fd);
        if (was_empty)
                dlist_arm_lazily(s, &s->idle, timeout_ms(s));
}

void idle_touch(struct server *s, int fd)
{
        if (!s->cfg.idle_timeout)
                return;
        if (s->idle.tail == fd) {
                s->conns[fd].last_ms = s->now_ms; /* already last in line */
                return;
        }
        dlist_unlink(s, &s->idle, fd);
        dlist_append(s, &s->idle, fd);
}

/* On the idle list (not the header list, whose links are the same). */
static bool listed(const struct server *s, int fd)
{
        return !(s->conns[fd].flags & CONN_HEADER) && dlist_listed(s, &s->idle, fd);
}

void idle_remove(struct server *s, int fd)
{
        if (listed(s, fd))
                dlist_unlink(s, &s->idle, fd);
}

void idle_on_timer(struct server *s)
{
        dlist_read_timer(&s->idle);
        if (!s->cfg.idle_timeout)
                return;
        while (dlist_head_expired(s, &s->idle, timeout_ms(s)))
                conn_close(s, s->idle.head, "idle timeout");
        dlist_arm(s, &s->idle, timeout_ms(s));
}

void idle_reconfigure(struct server *s, uint32_t old)
{
        if (old == s->cfg.idle_timeout)
                return;
        idle_clock(s);
        if (old && s->cfg.idle_timeout) {
                /* a reload is no traffic: every clock keeps running */
                dlist_arm(s, &s->idle, timeout_ms(s));
                return;
        }
        /* Off, or on after being off: no clock was kept, so each starts now. */
        while (s->idle.head >= 0)
                dlist_unlink(s, &s->idle, s->idle.head);
        /* Reload is rare; a walk of the table here keeps the hot path free
         * of any per-connection bookkeeping while the timeout is off. */
        for (int fd = 0; s->cfg.idle_timeout && fd <= s->max_fd; fd++)
                if ((s->conns[fd].flags & (CONN_OPEN | CONN_HEADER)) == CONN_OPEN)
                        dlist_append(s, &s->idle, fd);
        dlist_arm(s, &s->idle, timeout_ms(s));
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

void idle_order(struct server *s)
{
        dlist_order(s, &s->idle);
        dlist_arm(s, &s->idle, timeout_ms(s));
}
