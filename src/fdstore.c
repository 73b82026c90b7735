/* fdstore.c - handing connections to systemd's fd store at stop, and
 * keeping our own listeners there.
 *
 * On SIGTERM every connection fd goes to PID 1 with FDNAME=conn, plus a
 * memfd named "state" with what each one needs beyond its fd. If the stop
 * is part of `systemctl restart`, the new process gets them back through
 * sd_listen_fds_with_names() (inherit.c) and the clients notice nothing;
 * on `systemctl stop` PID 1 closes them and the clients see a close. Only
 * the stop pays: nothing is sent to PID 1 per accept.
 */
#include "fdstore.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
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

int fdstore_push_connections(struct server *s)
{
        int batch[FDS_PER_MESSAGE], r;
        unsigned n = 0, pushed = 0;

        if (!s->notify.enabled || s->n_conns == 0)
                return 0;
        r = push_state(s);
        for (int fd = 0; r >= 0 && fd <= s->max_fd; fd++) {
                if (!(s->conns[fd].flags & CONN_OPEN))
                        continue;
                batch[n++] = fd;
                if (n == FDS_PER_MESSAGE) {
                        r = push("conn", batch, n);
                        pushed += r >= 0 ? n : 0;
                        n = 0;
                }
        }
        if (r >= 0 && n > 0) {
                r = push("conn", batch, n);
                pushed += r >= 0 ? n : 0;
        }
        if (r < 0) {
                log_err("handing connections to the fd store failed after %u: %s", pushed,
                        strerror(-r));
                return r;
        }
        log_notice("handed %u connection(s) to the service manager's fd store", pushed);
        return 0;
}
