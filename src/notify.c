/* notify.c - sd_notify glue: READY/RELOADING/STOPPING, STATUS= and the
 * watchdog, both timers living in the one epoll loop.
 *
 * The watchdog is fed from a timerfd at half of WATCHDOG_USEC, handled by
 * the same loop as the connections: if the loop is stuck, the pings stop
 * and systemd restarts us, which is the point.
 *
 * STATUS= is rate-limited without costing an idle wake-up: after a loop
 * turn in which the counters moved, a one-shot timer is armed (if it is not
 * already), and when it fires the current counters are sent. An idle daemon
 * arms nothing; a busy one sends at most one status per interval.
 */
#include "notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "loop.h"
#include "server.h"

#define STATUS_INTERVAL_MS 1000

static void notify_send(const char *what, const char *state)
{
        int r = sd_notify(0, state);

        if (r < 0)
                log_warning("sd_notify(%s) failed: %s", what, strerror(-r));
}

static int timer_open(struct server *s, enum tag_kind kind, int *fd)
{
        int r;

        *fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (*fd < 0) {
                r = -errno;
                log_err("timerfd_create failed: %s", strerror(-r));
                return r;
        }
        r = loop_add(s, *fd, EPOLLIN, tag_make(kind, 0, 0));
        if (r < 0)
                log_err("epoll_ctl(ADD) of a notify timer failed: %s", strerror(-r));
        return r;
}

static void timer_set(int fd, uint64_t usec, bool periodic)
{
        const struct timespec t = { .tv_sec = (time_t)(usec / 1000000u),
                                    .tv_nsec = (long)(usec % 1000000u) * 1000L };
        const struct timespec zero = { 0 };
        struct itimerspec its = { .it_value = t, .it_interval = periodic ? t : zero };

        if (timerfd_settime(fd, 0, &its, NULL) < 0)
                log_err("timerfd_settime failed: %s", strerror(errno));
}

static void timer_drain(int fd)
{
        uint64_t expirations;

        if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                log_err("read of a notify timer failed: %s", strerror(errno));
}

int notify_init(struct server *s)
{
        uint64_t usec = 0;
        int r;

        s->notify.enabled = getenv("NOTIFY_SOCKET") != NULL;
        if (s->notify.enabled) {
                r = timer_open(s, TAG_TIMER_STATUS, &s->notify.status_fd);
                if (r < 0)
                        return r;
        }
        r = sd_watchdog_enabled(0, &usec);
        if (r < 0)
                log_warning("ignoring the watchdog settings: %s", strerror(-r));
        if (r <= 0)
                return 0;
        r = timer_open(s, TAG_TIMER_WATCHDOG, &s->notify.watchdog_fd);
        if (r < 0)
                return r;
        timer_set(s->notify.watchdog_fd, usec / 2, true);
        log_info("watchdog enabled: pinging every %llu ms", (unsigned long long)(usec / 2000));
        return 0;
}

static void close_timer(int *fd)
{
        if (*fd >= 0 && close(*fd) < 0)
                log_warning("close of a notify timer failed: %s", strerror(errno));
        *fd = -1;
}

void notify_deinit(struct server *s)
{
        close_timer(&s->notify.status_fd);
        close_timer(&s->notify.watchdog_fd);
}

static void format_status(const struct server *s, char *buf, size_t size)
{
        snprintf(buf, size, "STATUS=%u connections, %llu replies", (unsigned)s->n_conns,
                 (unsigned long long)s->stats.replies);
}

void notify_ready(struct server *s)
{
        char msg[160], status[128];

        format_status(s, status, sizeof(status));
        snprintf(msg, sizeof(msg), "READY=1\n%s", status);
        notify_send("READY=1", msg);
}

void notify_reloading(struct server *s)
{
        struct timespec ts;
        char msg[96];

        (void)s;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        /* Newer systemd matches RELOADING=1 by this timestamp; without it
         * `systemctl reload` waits for a reload it never recognises. */
        snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ull +
                         (unsigned long long)ts.tv_nsec / 1000u);
        notify_send("RELOADING=1", msg);
}

void notify_reloaded(struct server *s, const char *status)
{
        char msg[600];

        if (!status) {
                notify_ready(s);
                return;
        }
        snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
        notify_send("READY=1", msg);
}

void notify_stopping(struct server *s)
{
        (void)s;
        notify_send("STOPPING=1", "STOPPING=1\nSTATUS=stopping");
}

void notify_after_batch(struct server *s)
{
        if (!s->notify.enabled || s->notify.status_armed)
                return;
        if (s->stats.replies == s->notify.sent_replies && s->n_conns == s->notify.sent_conns)
                return;
        timer_set(s->notify.status_fd, STATUS_INTERVAL_MS * 1000ull, false);
        s->notify.status_armed = true;
}

void notify_on_status(struct server *s)
{
        char status[128];

        timer_drain(s->notify.status_fd);
        s->notify.status_armed = false;
        s->notify.sent_replies = s->stats.replies;
        s->notify.sent_conns = s->n_conns;
        format_status(s, status, sizeof(status));
        notify_send("STATUS", status);
}

void notify_on_watchdog(struct server *s)
{
        timer_drain(s->notify.watchdog_fd);
        notify_send("WATCHDOG=1", "WATCHDOG=1");
}
