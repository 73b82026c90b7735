/* idle.c - closing connections that stay silent for idle_timeout seconds.
 *
 * A doubly linked list threaded through the connection table (by fd) holds
 * the open connections in order of last activity: activity moves a
 * connection to the tail, so the head is always the next to expire. One
 * timerfd is armed for the head's deadline. It is not re-armed on activity
 * (that would be a syscall per read); if the head was touched meanwhile,
 * the timer fires early, finds nothing expired and re-arms for the new head.
 * Every operation is O(1); expiry costs O(connections that expire).
 */
#include "idle.h"

#include <errno.h>
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

void idle_clock(struct server *s)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        s->now_ms = (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
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

void idle_remove(struct server *s, int fd)
{
        struct conn *c = &s->conns[fd];

        if (c->idle_prev < 0 && s->idle_head != fd)
                return; /* not on the list */
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
        while (s->idle_head >= 0)
                unlink_conn(s, s->idle_head);
        /* Reload is rare; a walk of the table here keeps the hot path free
         * of any per-connection bookkeeping while the timeout is off. */
        for (int fd = 0; s->cfg.idle_timeout && fd <= s->max_fd; fd++)
                if (s->conns[fd].flags & CONN_OPEN)
                        append(s, fd);
        arm(s);
}
