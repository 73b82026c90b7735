/* inherit.c - adopting the descriptors we are born with.
 *
 * Three ways lead here, and all take this one path: a .socket unit passes
 * listening sockets (named after the unit, or "unknown"); after
 * `systemctl restart` PID 1 adds what we put in its fd store ("connbox",
 * sockets holding the connections in flight, "state", "listen_ADDR"; and
 * "conn", one connection each, as older versions stored them); after SIGUSR2 our own previous image passes the
 * same names, plus "x" for descriptors it could not help passing (its epoll
 * fd, timers, ...). The order of the fds means nothing: the state is
 * matched to connections by socket inode.
 *
 * A bad socket from the .socket unit stops the start (the operator has to
 * fix the unit); a bad stored fd is closed with a log line, so one bad fd
 * never costs the other connections.
 */
#include "inherit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "conn.h"
#include "fdstore.h"
#include "header.h"
#include "idle.h"
#include "listener.h"
#include "log.h"
#include "server.h"
#include "state.h"

struct found {
        int state_fd;
        int *conns;
        unsigned n_conns, cap;
        bool stored_conns, stored_boxes, stored_state;
};

static void close_fd(int fd, const char *name, const char *why)
{
        if (why)
                log_warning("inherited fd %d (%s) %s; closing it", fd, name, why);
        if (close(fd) < 0)
                log_warning("close of inherited fd %d failed: %s", fd, strerror(errno));
}

static bool is_connected_tcp(int fd)
{
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);

        /* sd_is_socket_inet() only knows "not listening"; a peer makes it
         * a connection. */
        return sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 0, 0) > 0 &&
               getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
}

static bool is_listening_tcp(int fd)
{
        return sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0;
}

static void add_conn(struct found *f, int fd)
{
        if (f->n_conns == f->cap) {
                unsigned cap = f->cap ? 2 * f->cap : 256;
                int *p = realloc(f->conns, cap * sizeof(*p));

                if (!p) {
                        close_fd(fd, "conn", "cannot be adopted: out of memory");
                        return;
                }
                f->conns = p;
                f->cap = cap;
        }
        f->conns[f->n_conns++] = fd;
}

static void take_conn(struct found *f, int fd)
{
        if (is_connected_tcp(fd))
                add_conn(f, fd);
        else
                close_fd(fd, "conn", "is not a connected TCP socket");
}

/* Receives one message of parked fds: > 0 while there was one, 0 when the
 * box is empty, or -errno. */
static int unbox_one(struct found *f, int box)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * 253)];
        } control;
        char byte;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr mh = { .msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control.buf,
                             .msg_controllen = sizeof(control.buf) };
        ssize_t n = recvmsg(box, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        int got = 0;

        if (n < 0)
                return errno == EAGAIN ? 0 : -errno;
        if (mh.msg_flags & MSG_CTRUNC)
                log_warning("a connection box message was cut short: connections lost");
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++, got++) {
                        int fd;

                        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                        take_conn(f, fd);
                }
        }
        return n == 0 && got == 0 ? 0 : got + 1;
}

/* A box (fdstore.c) holds connections in flight: take them all out. */
static void unbox(struct found *f, int box)
{
        int r;

        f->stored_boxes = true;
        if (sd_is_socket(box, AF_UNIX, SOCK_DGRAM, -1) <= 0) {
                close_fd(box, "connbox", "is not a connection box");
                return;
        }
        while ((r = unbox_one(f, box)) > 0)
                ;
        if (r < 0)
                log_warning("reading a connection box failed: %s", strerror(-r));
        close_fd(box, "connbox", NULL);
}

/* Returns -EINVAL for a bad socket from a .socket unit, else 0. */
static int classify(struct server *s, struct found *f, int fd, const char *name)
{
        if (strcmp(name, "x") == 0) {
                close_fd(fd, name, NULL); /* our previous image's own fds */
        } else if (strcmp(name, "conn") == 0) {
                f->stored_conns = true;
                take_conn(f, fd);
        } else if (strcmp(name, "connbox") == 0) {
                unbox(f, fd);
        } else if (strcmp(name, "state") == 0) {
                f->stored_state = true;
                if (f->state_fd < 0)
                        f->state_fd = fd;
                else
                        close_fd(fd, name, "is a second state file");
        } else if (strncmp(name, "listen_", 7) == 0) {
                if (!is_listening_tcp(fd) || listeners_adopt(s, fd, name, false) < 0)
                        close_fd(fd, name, "is not a usable listening TCP socket");
        } else if (listeners_adopt(s, fd, name, true) < 0) {
                close_fd(fd, name, NULL); /* the start fails; the fd is still ours to close */
                return -EINVAL;
        }
        return 0;
}

static void load_state(struct found *f, struct state *st)
{
        char why[256];

        if (f->state_fd < 0)
                return;
        if (state_read(f->state_fd, st, why, sizeof(why)) < 0)
                log_warning("ignoring the inherited connection state: %s; "
                            "connections get fresh state",
                            why);
        close_fd(f->state_fd, "state", NULL);
        f->state_fd = -1;
}

/* Adopts FD with its record R (or fresh); its idle clock goes on from the
 * record's last traffic, so no upgrade or restart resets a silence. */
static bool adopt_one(struct server *s, int fd, const struct state_record *r, uint64_t now)
{
        if (conn_adopt(s, fd, r) < 0)
                return false;
        if (r && s->conns[fd].flags & CONN_OPEN)
                idle_restore(s, fd, r->last_ms, now);
        return true;
}

static void adopt_connections(struct server *s, struct found *f)
{
        struct state st = { 0 };
        unsigned adopted = 0;
        uint64_t now = idle_clock(s);

        load_state(f, &st);
        if (st.next_id > s->stats.accepted)
                s->stats.accepted = st.next_id;
        s->stats.replies += st.replies;
        for (unsigned i = 0; i < f->n_conns; i++) {
                struct stat sb;
                const struct state_record *r = NULL;

                if (fstat(f->conns[i], &sb) == 0)
                        r = state_find(&st, sb.st_ino);
                adopted += adopt_one(s, f->conns[i], r, now);
        }
        idle_order(s);
        header_order(s);
        if (f->n_conns)
                log_notice("adopted %u of %u inherited connection(s)", adopted, f->n_conns);
        state_free(&st);
}

/* Names we give our own fds (fdstore.c, reexec.c): none of them is a
 * socket from a .socket unit, so none counts against its limit. */
static bool ours(const char *name)
{
        static const char *const own[] = { "x", "conn", "connbox", "state" };

        for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
                if (strcmp(name, own[i]) == 0)
                        return true;
        return strncmp(name, "listen_", 7) == 0;
}

/* More sockets from a .socket unit than we can serve is a unit to fix. */
static int count_activated(int n, char **names)
{
        int activated = 0;

        for (int i = 0; i < n; i++)
                activated += !(names && names[i] && ours(names[i]));
        if (activated <= CONFIG_MAX_LISTEN)
                return 0;
        log_err("socket activation: %d sockets passed, at most %d are supported", activated,
                CONFIG_MAX_LISTEN);
        return -E2BIG;
}

int inherit_begin(struct server *s)
{
        int n = sd_listen_fds_with_names(1, &s->inherited_names);

        if (n == -EBADF)
                log_err("socket activation: LISTEN_FDS names more descriptors than are open");
        else if (n < 0)
                log_err("socket activation: sd_listen_fds_with_names failed: %s", strerror(-n));
        if (n < 0)
                return n;
        s->n_inherited = n;
        return 0;
}

int inherit_all(struct server *s)
{
        struct found f = { .state_fd = -1 };
        char **names = s->inherited_names;
        int n = s->n_inherited, r = 0;

        s->inherited_names = NULL;
        s->n_inherited = 0;
        if (n == 0) {
                free(names);
                return 0;
        }
        r = count_activated(n, names);
        for (int i = 0; i < n; i++) {
                const char *name = names && names[i] ? names[i] : "unknown";

                if (r < 0)
                        close_fd(SD_LISTEN_FDS_START + i, name, NULL);
                else
                        r = classify(s, &f, SD_LISTEN_FDS_START + i, name);
        }
        if (r == 0)
                adopt_connections(s, &f);
        for (unsigned i = 0; r < 0 && f.conns && i < f.n_conns; i++)
                close_fd(f.conns[i], "conn", NULL);
        if (r < 0 && f.state_fd >= 0)
                close_fd(f.state_fd, "state", NULL);
        /* PID 1 still holds copies; they would keep closed sockets open. */
        if (f.stored_conns)
                fdstore_remove(s, "conn");
        if (f.stored_boxes)
                fdstore_remove(s, "connbox");
        if (f.stored_state)
                fdstore_remove(s, "state");
        free(f.conns);
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        return r;
}
