/* fdstore.c - handing connections to systemd's fd store at stop, and
 * keeping our own listeners there.
 *
 * On SIGTERM every connection is parked in a "box" (an AF_UNIX socket
 * holding the fds in flight, 253 per message) and the box goes to PID 1
 * with FDNAME=connbox; then a memfd named "state" with what each stored
 * connection needs beyond its fd. Boxes go first so that the state never
 * describes a connection that did not reach the store: a box PID 1's
 * socket refuses, or one past $FDSTORE, stops the parking, and whatever is
 * not stored is closed and logged as such. PID 1 itself acknowledges
 * nothing: past FileDescriptorStoreMax= it drops fds silently, so "sent"
 * is all the log can say where $FDSTORE (systemd 254) does not tell. If the stop is part of `systemctl restart`, the new
 * process gets them back through sd_listen_fds_with_names() (inherit.c) and
 * the clients notice nothing; on `systemctl stop` PID 1 closes the box and
 * the clients see a close. Only the stop pays: nothing is sent to PID 1 per
 * accept.
 *
 * Why boxes and not one stored fd per connection: systemd 252 compares
 * every new store entry with every stored one (kcmp), so 8,000 connections
 * took it 30 s, during which it does nothing else; and at start it moves
 * the stored fds to 3..n+2, which fails (status 202/FDS) once n nears
 * RLIMIT_NOFILE. A box costs PID 1 one fd for up to tens of thousands of
 * connections.
 */
#include "fdstore.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "conn.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "state.h"

/* SCM_MAX_FD in the kernel. */
#define FDS_PER_MESSAGE 253

static int push(const char *name, const int *fds, unsigned n)
{
        char msg[128];

        snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
        return sd_pid_notify_with_fds(0, 0, msg, fds, n);
}

/* While the loop runs, a PID 1 that is not reading must not stall it: these
 * go out without waiting, and one that does not fit is only a warning (a
 * listener missing from the store is bound again at the next start; a
 * stale one is closed then as unconfigured). */
static const char *why_not(int r)
{
        return r == -EAGAIN ? "the service manager is not taking messages" : strerror(-r);
}

void fdstore_push_listener(const struct server *s, const struct listener *l)
{
        char msg[128];
        int r;

        if (!s->notify.enabled)
                return;
        snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", l->fdname);
        r = notify_send(msg, &l->fd, 1);
        if (r < 0)
                log_warning("cannot keep listener %s in the fd store: %s", l->name, why_not(r));
}

void fdstore_remove(const struct server *s, const char *name)
{
        char msg[128];
        int r;

        if (!s->notify.enabled)
                return;
        snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
        r = notify_send(msg, NULL, 0);
        if (r < 0)
                log_warning("cannot remove %s from the fd store: %s", name, why_not(r));
}

/* The state of the connections that were stored, after their boxes, so it
 * describes nothing that is not in the store. */
static int push_state(struct server *s)
{
        int fd = state_write(s), r;

        if (fd < 0)
                return fd;
        r = push("state", &fd, 1);
        if (close(fd) < 0)
                log_warning("close of the state memfd failed: %s", strerror(errno));
        return r < 0 ? r : 0; /* sd_pid_notify_with_fds() returns 1 when sent */
}

/* A box is an AF_UNIX datagram socket connected to itself: what it sends
 * waits in its own receive queue, SCM_RIGHTS fds included, for as long as
 * the socket lives. Having no peer, it never reports a hang-up, which would
 * make PID 1 drop it. */
static int box_open(void)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        socklen_t len = sizeof(sa_family_t);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), err;

        if (fd < 0)
                return -errno;
        /* Binding just the family autobinds a unique abstract address. */
        if (bind(fd, (struct sockaddr *)&addr, len) < 0)
                goto fail;
        len = sizeof(addr);
        if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0 ||
            connect(fd, (struct sockaddr *)&addr, len) < 0)
                goto fail;
        return fd;
fail:
        err = -errno;
        close(fd);
        return err;
}

/* Parks N fds in BOX; -EAGAIN when the box is full. */
static int box_send(int box, const int *fds, unsigned n)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * FDS_PER_MESSAGE)];
        } control;
        char byte = 'c';
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr mh = { .msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control.buf,
                             .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

        memset(control.buf, 0, sizeof(control.buf));
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
        return sendmsg(box, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* What parking has done so far. Boxes are filled in fd order and stored
 * one after the other, so what PID 1 took is every connection below
 * first_fd; at the first failure parking stops and the rest is closed. */
struct parking {
        int box; /* the box being filled, or -1 */
        int first_fd; /* the lowest connection not (yet) in a stored box */
        unsigned in_box; /* connections in the box being filled */
        unsigned boxes, stored; /* boxes PID 1 took, connections in them */
        unsigned max_boxes; /* from $FDSTORE; UINT_MAX if unknown */
        int err; /* why parking stopped, or 0 */
};

/* How many boxes PID 1 will take: $FDSTORE (set by systemd 254 and later
 * to FileDescriptorStoreMax= when it is not 0) less our listeners, which
 * are stored already, less one for the state. Unknown without it: PID 1
 * accepts every message and silently drops what does not fit. */
static unsigned max_boxes(const struct server *s)
{
        const char *v = getenv("FDSTORE");
        unsigned long max, taken = 1;
        char *end;

        if (!v || !*v)
                return UINT_MAX;
        errno = 0;
        max = strtoul(v, &end, 10);
        if (errno || *end)
                return UINT_MAX;
        for (unsigned i = 0; i < s->n_listeners; i++)
                taken += !s->listeners[i].activated;
        return max > taken ? (unsigned)(max - taken) : 0;
}

static int stop_parking(struct parking *p, int err)
{
        if (p->box >= 0 && close(p->box) < 0)
                log_warning("close of a connection box failed: %s", strerror(errno));
        p->box = -1;
        p->err = err;
        return err;
}

/* Hands the box being filled to PID 1 and closes our copy; its queue lives
 * on in PID 1's. */
static int seal(struct parking *p)
{
        int r = push("connbox", &p->box, 1);

        if (r < 0)
                return stop_parking(p, r);
        if (close(p->box) < 0)
                log_warning("close of a connection box failed: %s", strerror(errno));
        p->box = -1;
        p->boxes++;
        p->stored += p->in_box;
        p->in_box = 0;
        return 0;
}

static int open_box(struct parking *p, int first_fd)
{
        p->first_fd = first_fd;
        if (p->boxes >= p->max_boxes)
                return stop_parking(p, -ENOSPC);
        p->box = box_open();
        return p->box < 0 ? stop_parking(p, p->box) : 0;
}

/* Parks one batch, sealing the box and opening a new one when it is full. */
static int park(struct parking *p, const int *fds, unsigned n)
{
        int r;

        if (p->box < 0 && (r = open_box(p, fds[0])) < 0)
                return r;
        r = box_send(p->box, fds, n);
        if (r == -EAGAIN) {
                if ((r = seal(p)) < 0 || (r = open_box(p, fds[0])) < 0)
                        return r;
                r = box_send(p->box, fds, n);
        }
        if (r < 0)
                return stop_parking(p, r);
        p->in_box += n;
        return 0;
}

static int park_all(struct server *s, struct parking *p)
{
        int batch[FDS_PER_MESSAGE];
        unsigned n = 0, seen = 0; /* in the batch, in all */

        for (int fd = 0; fd <= s->max_fd; fd++) {
                if (!(s->conns[fd].flags & CONN_OPEN))
                        continue;
                batch[n++] = fd;
                if (n < FDS_PER_MESSAGE && ++seen < s->n_conns)
                        continue;
                if (park(p, batch, n) < 0)
                        return p->err;
                n = 0;
        }
        if (n && park(p, batch, n) < 0)
                return p->err;
        return p->box >= 0 ? seal(p) : 0;
}

/* What PID 1 did not take is closed now, with a line each, so that the
 * state describes only what was stored and the log does not count it. */
static unsigned close_unstored(struct server *s, const struct parking *p)
{
        unsigned lost = 0;

        for (int fd = p->first_fd; p->err && fd >= 0 && fd <= s->max_fd; fd++) {
                if (!(s->conns[fd].flags & CONN_OPEN))
                        continue;
                conn_close(s, fd, "not stored");
                lost++;
        }
        return lost;
}

static void log_outcome(const struct parking *p, unsigned lost, int state_err)
{
        if (lost)
                log_event(LOG_ERR, "handover-failed", "restart",
                          "could not hand %u connection(s) to the service manager's fd store (%s); "
                          "closed them",
                          lost,
                          p->err == -ENOSPC ? "no room left within FDSTORE=" : strerror(-p->err));
        if (!p->stored)
                return;
        if (state_err)
                log_err("stored %u connection(s) without their state (%s): the next start "
                        "adopts them as new, and their unwritten replies are lost",
                        p->stored, strerror(-state_err));
        log_event(LOG_NOTICE, "handover", "restart",
                  "handed %u connection(s) to the service manager's fd store in %u box(es)%s",
                  p->stored, p->boxes,
                  p->max_boxes == UINT_MAX
                          ? "; PID 1 keeps them only if FileDescriptorStoreMax= has room"
                          : "");
}

int fdstore_push_connections(struct server *s)
{
        struct parking p = { .box = -1, .first_fd = -1 };
        unsigned lost;
        int state_err = 0;

        if (!s->notify.enabled || s->n_conns == 0)
                return 0;
        p.max_boxes = max_boxes(s);
        park_all(s, &p);
        lost = close_unstored(s, &p);
        if (p.stored)
                state_err = push_state(s);
        log_outcome(&p, lost, state_err);
        return p.err ? p.err : state_err;
}
