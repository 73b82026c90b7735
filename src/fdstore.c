/* fdstore.c - handing connections to systemd's fd store at stop, and
 * keeping our own listeners there.
 *
 * On SIGTERM every connection is parked in a "box" (an AF_UNIX socket
 * holding the fds in flight, 253 per message) and the box goes to PID 1
 * with FDNAME=connbox, plus a memfd named "state" with what each connection
 * needs beyond its fd. If the stop is part of `systemctl restart`, the new
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
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "conn.h"
#include "log.h"
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

void fdstore_push_listener(const struct server *s, const struct listener *l)
{
        int r;

        if (!s->notify.enabled)
                return;
        r = push(l->fdname, &l->fd, 1);
        if (r < 0)
                log_warning("cannot keep listener %s in the fd store: %s", l->name, strerror(-r));
}

void fdstore_remove(const struct server *s, const char *name)
{
        char msg[128];
        int r;

        if (!s->notify.enabled)
                return;
        snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
        r = sd_notify(0, msg);
        if (r < 0)
                log_warning("cannot remove %s from the fd store: %s", name, strerror(-r));
}

static int push_state(struct server *s)
{
        int fd = state_write(s), r;

        if (fd < 0) {
                log_err("cannot write the connection state: %s", strerror(-fd));
                return fd;
        }
        r = push("state", &fd, 1);
        if (close(fd) < 0)
                log_warning("close of the state memfd failed: %s", strerror(errno));
        if (r < 0)
                log_err("cannot store the connection state: %s", strerror(-r));
        return r;
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

/* Hands BOX to PID 1 and closes our copy; its queue lives on in PID 1's. */
static int box_store(int box)
{
        int r = push("connbox", &box, 1);

        if (close(box) < 0)
                log_warning("close of a connection box failed: %s", strerror(errno));
        return r;
}

/* Sends one batch, opening a new box when the current one is full. */
static int park(int *box, unsigned *boxes, const int *fds, unsigned n)
{
        int r = box_send(*box, fds, n);

        if (r != -EAGAIN)
                return r;
        r = box_store(*box);
        *box = r < 0 ? r : box_open();
        if (*box < 0)
                return *box;
        ++*boxes;
        return box_send(*box, fds, n);
}

int fdstore_push_connections(struct server *s)
{
        int batch[FDS_PER_MESSAGE], box, r;
        unsigned n = 0, parked = 0, boxes = 1;

        if (!s->notify.enabled || s->n_conns == 0)
                return 0;
        r = push_state(s);
        box = r < 0 ? r : box_open();
        for (int fd = 0; box >= 0 && r >= 0 && fd <= s->max_fd; fd++) {
                if (!(s->conns[fd].flags & CONN_OPEN))
                        continue;
                batch[n++] = fd;
                if (n < FDS_PER_MESSAGE && parked + n < s->n_conns)
                        continue;
                r = park(&box, &boxes, batch, n);
                parked += r >= 0 ? n : 0;
                n = 0;
        }
        if (box < 0) {
                r = box;
        } else {
                int stored = box_store(box); /* what was parked is kept even after an error */

                if (r >= 0)
                        r = stored;
        }
        if (r < 0) {
                log_err("handing connections to the fd store failed after %u: %s", parked,
                        strerror(-r));
                return r;
        }
        log_notice("handed %u connection(s) to the service manager's fd store in %u box(es)",
                   parked, boxes);
        return 0;
}
