/* notify.c - the service manager protocol: READY/RELOADING/STOPPING,
 * STATUS= and the watchdog, both timers living in the one epoll loop.
 *
 * The watchdog is fed from a timerfd at half of WATCHDOG_USEC, handled by
 * the same loop as the connections: if the loop is stuck, the pings stop
 * and systemd restarts us, which is the point. systemd does not reset the
 * watchdog for RELOADING=1, so across a re-exec the old image pings right
 * before execve() and the new one right after it starts and again when
 * ready; each of those restarts the timer, so no gap is longer than half
 * the interval plus the exec or the adoption of the connections.
 *
 * STATUS= is rate-limited without costing an idle wake-up: after a loop
 * turn in which the counters moved, a one-shot timer is armed (if it is not
 * already), and when it fires the current counters are sent. An idle daemon
 * arms nothing; a busy one sends at most one status per interval.
 *
 * sd_notify() sends on a blocking socket and has no non-blocking form:
 * with PID 1 slow and its queue full it would stall the loop. So messages
 * go out here with MSG_DONTWAIT. What does not fit is not lost where it
 * matters: a state (READY=1, RELOADING=1) is kept, the latest replacing an
 * older one, and sent again from the status timer every RETRY_MS; STATUS=
 * is sent again from that timer; a WATCHDOG=1 is dropped, the next is due
 * half an interval later. STOPPING=1 comes after the loop, where a bounded
 * wait (STOP_WAIT_MS) is fine. The fd store's messages while the loop
 * runs (listeners at a reload, fdstore.c) use notify_send() too; the
 * connections handed over at stop, after the loop, keep libsystemd's.
 *
 * A NOTIFY_SOCKET that is neither a path nor an abstract name (vsock:...)
 * only libsystemd can reach, and it waits: then READY=1 at the start and
 * STOPPING=1 go through it, outside the loop, and the loop sends nothing
 * (one warning at the start says so).
 */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "loop.h"
#include "server.h"

#define STATUS_INTERVAL_MS 1000
#define RETRY_MS 100
#define STOP_WAIT_MS 1000
#define PENDING_MAX 600

/* Process-wide, as NOTIFY_SOCKET and WATCHDOG_USEC are. */
static uint64_t watchdog_half_usec; /* 0: no watchdog */
static char pending[PENDING_MAX]; /* a state message PID 1 did not take yet */
static bool foreign; /* NOTIFY_SOCKET in a form only libsystemd sends to */

/* A path or an abstract name: what we send to without waiting. */
static bool our_form(const char *path)
{
        size_t len = strlen(path);

        return (path[0] == '/' || path[0] == '@') && len >= 2 &&
               len <= sizeof(((struct sockaddr_un *)NULL)->sun_path);
}

/* FDS (N of them, at most 253) ride along as SCM_RIGHTS. */
static int send_msg(int fd, const struct sockaddr_un *sa, size_t pathlen, const char *text,
                    const int *fds, unsigned n)
{
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 253)];
        } control;
        struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
        struct msghdr mh = { .msg_name = (void *)sa,
                             .msg_namelen =
                                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pathlen),
                             .msg_iov = &iov,
                             .msg_iovlen = 1 };

        if (n > 253)
                return -EINVAL;
        if (n) {
                struct cmsghdr *c;

                memset(&control, 0, sizeof(control));
                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
        }
        return sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int notify_send(const char *msg, const int *fds, unsigned n)
{
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        size_t len = path ? strlen(path) : 0;
        int fd, r;

        if (!path || !our_form(path))
                return 0; /* none, or foreign: warned at the start */
        memcpy(sa.sun_path, path, len);
        if (sa.sun_path[0] == '@')
                sa.sun_path[0] = '\0'; /* abstract namespace */
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        r = send_msg(fd, &sa, len, msg, fds, n);
        close(fd);
        return r;
}

static int send_dontwait(const char *msg)
{
        return notify_send(msg, NULL, 0);
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

static int timer_set(int fd, uint64_t usec, bool periodic)
{
        const struct timespec t = { .tv_sec = (time_t)(usec / 1000000u),
                                    .tv_nsec = (long)(usec % 1000000u) * 1000L };
        const struct timespec zero = { 0 };
        struct itimerspec its = { .it_value = t, .it_interval = periodic ? t : zero };

        if (timerfd_settime(fd, 0, &its, NULL) == 0)
                return 0;
        /* Retried on the next loop turn: limited like a peer-driven line. */
        log_limited(LOG_ERR, LOG_LIMIT_TIMER, NULL, "timerfd_settime of fd %d failed: %s", fd,
                    strerror(errno));
        return -errno;
}

static void timer_drain(int fd)
{
        uint64_t expirations;

        if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
                log_err("read of a notify timer failed: %s", strerror(errno));
}

/* A failed arm leaves status_armed false, so the next loop turn tries
 * again instead of waiting for a timer that will never fire. */
static void status_arm(struct server *s, unsigned ms)
{
        s->notify.status_armed = timer_set(s->notify.status_fd, ms * 1000ull, false) == 0;
}

/* READY=1, RELOADING=1: PID 1 must see them, so one that does not fit now
 * is sent again from the status timer. */
static void send_state(struct server *s, const char *what, const char *msg)
{
        int r = send_dontwait(msg);

        if (r == 0) {
                pending[0] = '\0';
                return;
        }
        if (r != -EAGAIN) {
                log_warning("sd_notify(%s) failed: %s", what, strerror(-r));
                return;
        }
        if (!pending[0])
                log_warning("sd_notify(%s): the service manager is not taking messages; "
                            "retrying every %u ms",
                            what, RETRY_MS);
        snprintf(pending, sizeof(pending), "%s", msg);
        status_arm(s, RETRY_MS);
}

static void watchdog_ping(struct server *s)
{
        int r;

        if (!watchdog_half_usec)
                return;
        r = send_dontwait("WATCHDOG=1");
        if (r < 0)
                log_warning("sd_notify(WATCHDOG=1) failed: %s", strerror(-r));
        /* The period restarts here: the next ping is half an interval on. */
        (void)timer_set(s->notify.watchdog_fd, watchdog_half_usec, true);
}

int notify_init(struct server *s)
{
        uint64_t usec = 0;
        int r;

        const char *path = getenv("NOTIFY_SOCKET");

        foreign = path && !our_form(path);
        if (foreign) {
                log_warning("NOTIFY_SOCKET=%s: not a path or an abstract socket name; only "
                            "libsystemd can send there, and it waits: READY=1 at the start and "
                            "STOPPING=1 only, no reload, status or watchdog messages",
                            path);
                return 0;
        }
        s->notify.enabled = path != NULL;
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
        watchdog_half_usec = usec / 2;
        /* Right after start-up: a re-exec'd image has yet to adopt every
         * connection, and the old one's last ping came before execve(). */
        watchdog_ping(s);
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

        watchdog_ping(s); /* the adoption of connections is over */
        format_status(s, status, sizeof(status));
        snprintf(msg, sizeof(msg), "READY=1\n%s", status);
        send_state(s, "READY=1", msg);
}

void notify_started(struct server *s)
{
        int r;

        if (!foreign) {
                notify_ready(s);
                return;
        }
        r = sd_notify(0, "READY=1"); /* before the loop: waiting costs no client */
        if (r < 0)
                log_warning("sd_notify(READY=1) failed: %s", strerror(-r));
}

void notify_reloading(struct server *s)
{
        struct timespec ts;
        char msg[96];

        clock_gettime(CLOCK_MONOTONIC, &ts);
        /* Newer systemd matches RELOADING=1 by this timestamp; without it
         * `systemctl reload` waits for a reload it never recognises. */
        snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)ts.tv_sec * 1000000ull +
                         (unsigned long long)ts.tv_nsec / 1000u);
        send_state(s, "RELOADING=1", msg);
}

void notify_reloaded(struct server *s, const char *status)
{
        char msg[PENDING_MAX];

        if (!status) {
                notify_ready(s);
                return;
        }
        snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
        send_state(s, "READY=1", msg);
}

void notify_stopping(struct server *s)
{
        const struct timespec tick = { .tv_nsec = 10 * 1000000L };
        int r;

        (void)s;
        if (foreign) {
                r = sd_notify(0, "STOPPING=1\nSTATUS=stopping"); /* after the loop */
                if (r < 0)
                        log_warning("sd_notify(STOPPING=1) failed: %s", strerror(-r));
                return;
        }
        /* After the loop: waiting a little for PID 1 costs no client. */
        for (int waited = 0;; waited += 10) {
                r = send_dontwait("STOPPING=1\nSTATUS=stopping");
                if (r != -EAGAIN || waited >= STOP_WAIT_MS)
                        break;
                nanosleep(&tick, NULL);
        }
        if (r < 0)
                log_warning("sd_notify(STOPPING=1) failed: %s", strerror(-r));
}

void notify_watchdog_now(void)
{
        /* No log line: the caller is between its fd shuffle and execve(). */
        if (watchdog_half_usec)
                (void)send_dontwait("WATCHDOG=1");
}

static bool counters_moved(const struct server *s)
{
        return s->stats.replies != s->notify.sent_replies || s->n_conns != s->notify.sent_conns;
}

void notify_after_batch(struct server *s)
{
        if (!s->notify.enabled || s->notify.status_armed || !counters_moved(s))
                return;
        status_arm(s, STATUS_INTERVAL_MS);
}

void notify_on_status(struct server *s)
{
        char status[128];
        int r;

        timer_drain(s->notify.status_fd);
        s->notify.status_armed = false;
        if (pending[0]) {
                r = send_dontwait(pending);
                if (r == -EAGAIN) {
                        status_arm(s, RETRY_MS);
                        return;
                }
                if (r < 0)
                        log_warning("sd_notify(retried state) failed: %s", strerror(-r));
                pending[0] = '\0';
        }
        if (!counters_moved(s))
                return;
        format_status(s, status, sizeof(status));
        r = send_dontwait(status);
        if (r == -EAGAIN) {
                status_arm(s, RETRY_MS);
                return;
        }
        if (r < 0)
                log_warning("sd_notify(STATUS) failed: %s", strerror(-r));
        s->notify.sent_replies = s->stats.replies;
        s->notify.sent_conns = s->n_conns;
}

void notify_on_watchdog(struct server *s)
{
        int r;

        timer_drain(s->notify.watchdog_fd);
        r = send_dontwait("WATCHDOG=1");
        if (r < 0)
                log_warning("sd_notify(WATCHDOG=1) failed: %s", strerror(-r));
}
