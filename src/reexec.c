/* reexec.c - in-place upgrade: execve() ourselves with our sockets.
 *
 * The new image is started exactly as systemd starts us after a restart:
 * fds 3..N with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, adopted by the
 * one path in inherit.c. It keeps our PID, so systemd keeps supervising it.
 *
 * The LISTEN_FDS protocol wants fds 3..N without gaps, and ours are
 * scattered among the epoll fd, timers and closed slots. Moving fds around
 * would be hard to undo if execve() failed, and a log line written during
 * such a shuffle could land in a client's connection. So nothing is moved:
 * every fd from 3 to the highest one is passed as it is (close-on-exec
 * cleared), gaps are filled with a copy of the state memfd, and whatever is
 * not a socket of ours is named "x" for the new image to close. Undoing it
 * is restoring close-on-exec and closing the fillers.
 *
 * The new image must run on exactly the configuration the old one checked.
 * Which file that is was decided once, at the first start (-c FILE, else
 * the default file if it existed, else none), and is passed on in
 * REEXEC_CONFIG_ENV: a default file written after the start must not be
 * picked up by the new image when the old one never read it.
 */
#include "reexec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "logsink.h"
#include "notify.h"
#include "server.h"
#include "state.h"

/* The configuration file the previous image ran on; empty: none. */
#define REEXEC_CONFIG_ENV "EPOLLD_REEXEC_CONFIG"
#define LOG_WAIT_MS 200

/* The kernel's limit for one environment string (MAX_ARG_STRLEN). */
#define ENV_STRING_MAX ((size_t)32 * 4096)

struct plan {
        int state_fd;
        int top; /* highest fd passed */
        char *names; /* LISTEN_FDNAMES value */
        int *fillers; /* gaps we filled, to close on failure */
        unsigned n_fillers;
};

/* Set by our previous image together with LISTEN_PID; a stray copy in an
 * operator's environment (LISTEN_PID not ours) is ignored. */
static bool from_previous_image(void)
{
        const char *pid = getenv("LISTEN_PID");
        char own[32];

        snprintf(own, sizeof(own), "%d", (int)getpid());
        return pid && strcmp(pid, own) == 0;
}

bool reexec_config(const char **path)
{
        static char passed[PATH_MAX];
        const char *v = getenv(REEXEC_CONFIG_ENV);
        bool ours = v && from_previous_image() && strlen(v) < sizeof(passed);

        if (ours) {
                snprintf(passed, sizeof(passed), "%s", v);
                *path = passed[0] ? passed : NULL;
        }
        if (v)
                unsetenv(REEXEC_CONFIG_ENV);
        return ours;
}

int reexec_init(struct server *s, char **argv)
{
        char cwd[PATH_MAX];

        s->argv = argv;
        /* The path we were started from, not /proc/self/exe: that is the
         * old image even after a new binary was installed at the path. A
         * name without '/' was found in PATH and is looked up again. */
        if (argv[0][0] == '/' || !strchr(argv[0], '/')) {
                snprintf(s->exec_path, sizeof(s->exec_path), "%s", argv[0]);
                return 0;
        }
        if (!getcwd(cwd, sizeof(cwd)))
                return -errno;
        if (snprintf(s->exec_path, sizeof(s->exec_path), "%s/%s", cwd, argv[0]) >=
            (int)sizeof(s->exec_path))
                return -ENAMETOOLONG;
        return 0;
}

static const char *name_of(const struct server *s, const struct plan *p, int fd)
{
        if (fd == p->state_fd)
                return "state";
        if (fd <= s->max_fd && s->conns[fd].flags & CONN_OPEN)
                return "conn";
        for (unsigned i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].fd == fd)
                        return s->listeners[i].fdname;
        return "x";
}

static int highest_fd(const struct server *s, int state_fd)
{
        int top = state_fd > s->max_fd ? state_fd : s->max_fd;

        for (unsigned i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].fd > top)
                        top = s->listeners[i].fd;
        return top;
}

/* Clears close-on-exec on fd, or fills the gap there. */
static int pass_fd(struct plan *p, int fd)
{
        if (fcntl(fd, F_GETFD) < 0) {
                if (errno != EBADF || dup2(p->state_fd, fd) < 0)
                        return -errno;
                p->fillers[p->n_fillers++] = fd;
                return 0; /* dup2 leaves close-on-exec off */
        }
        return fcntl(fd, F_SETFD, 0) < 0 ? -errno : 0;
}

static void undo(struct plan *p)
{
        for (int fd = 3; fd <= p->top; fd++)
                if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 && errno != EBADF)
                        log_warning("cannot restore close-on-exec on fd %d: %s", fd,
                                    strerror(errno));
        for (unsigned i = 0; i < p->n_fillers; i++)
                close(p->fillers[i]);
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        unsetenv("LISTEN_PID");
        unsetenv(REEXEC_CONFIG_ENV);
        logsink_exec_failed();
}

/* Room for every name in LISTEN_FDNAMES with its ':' (or the final NUL):
 * at most "conn:" per fd, one "state" and each listener's own name. */
static size_t names_size(const struct server *s, const struct plan *p)
{
        size_t size = (size_t)(p->top - 2) * (sizeof("conn:") - 1) + 1 + 1;

        for (unsigned i = 0; i < s->n_listeners; i++)
                size += strlen(s->listeners[i].fdname) + 1;
        return size;
}

/* Builds LISTEN_FDNAMES and readies every fd; -errno with nothing to undo
 * beyond what undo() handles. */
static int prepare(struct server *s, struct plan *p)
{
        size_t len = 0, cap = names_size(s, p);
        char num[32];
        int r;

        p->names = malloc(cap);
        p->fillers = calloc((size_t)(p->top - 2), sizeof(int));
        if (!p->names || !p->fillers)
                return -ENOMEM;
        for (int fd = 3; fd <= p->top; fd++) {
                const char *name = name_of(s, p, fd);
                size_t n = strlen(name);

                if (len + n + 1 > cap || len + n + 1 > ENV_STRING_MAX - 32)
                        return -E2BIG;
                memcpy(p->names + len, name, n);
                len += n;
                p->names[len++] = fd < p->top ? ':' : '\0';
                if ((r = pass_fd(p, fd)) < 0)
                        return r;
        }
        snprintf(num, sizeof(num), "%d", p->top - 2);
        if (setenv("LISTEN_FDS", num, 1) < 0 || setenv("LISTEN_FDNAMES", p->names, 1) < 0)
                return -errno;
        if (setenv(REEXEC_CONFIG_ENV, s->config_path ? s->config_path : "", 1) < 0)
                return -errno;
        snprintf(num, sizeof(num), "%d", (int)getpid());
        return setenv("LISTEN_PID", num, 1) < 0 ? -errno : 0;
}

/* LISTEN_FDNAMES names every fd up to the highest, and the kernel takes an
 * environment string of at most 128 KiB: past about 26,000 descriptors an
 * in-place re-exec is not possible (a restart through the fd store is). */
static bool names_fit(struct server *s)
{
        struct plan p = { .top = highest_fd(s, s->max_fd + 1) }; /* + the state memfd */
        char status[96];

        if (names_size(s, &p) + sizeof("LISTEN_FDNAMES=") <= ENV_STRING_MAX)
                return true;
        log_err("re-exec refused: %d descriptors are more than LISTEN_FDNAMES can name; "
                "use a restart through the service manager",
                p.top - 2);
        snprintf(status, sizeof(status), "re-exec refused: %d descriptors", p.top - 2);
        notify_reloaded(s, status);
        return false;
}

void reexec(struct server *s)
{
        struct plan p = { .state_fd = -1 };
        char status[128];
        int r;

        notify_reloading(s);
        /* The new image reads the file again: it must be valid, and what it
         * says must already be in place (its listeners bound), or the new
         * image would fail to start and take every connection with it. */
        if (!names_fit(s) || server_apply_config(s, true) < 0)
                return;
        log_event(LOG_NOTICE, "handover", "re-exec",
                  "SIGUSR2: re-executing %s with %u connection(s)", s->exec_path,
                  (unsigned)s->n_conns);
        p.state_fd = state_write(s);
        if (p.state_fd < 0) {
                r = p.state_fd;
                goto failed;
        }
        p.top = highest_fd(s, p.state_fd);
        log_flush_suppressed(); /* the new image starts with fresh counters */
        r = prepare(s, &p);
        if (r == 0) {
                /* From here to execve nothing logs: fds are not moved, but
                 * stay on the safe side of a client's socket. */
                /* A line half written to a full stderr: up to LOG_WAIT_MS
                 * for the reader, else the new image starts a new line. */
                logsink_before_exec(LOG_WAIT_MS);
                notify_watchdog_now(); /* RELOADING=1 does not reset it */
                if (strchr(s->exec_path, '/'))
                        execv(s->exec_path, s->argv);
                else
                        execvp(s->exec_path, s->argv);
                r = -errno;
        }
        undo(&p);
failed:
        if (p.state_fd >= 0)
                close(p.state_fd);
        free(p.names);
        free(p.fillers);
        log_event(LOG_ERR, "handover-failed", "re-exec",
                  "re-exec of %s failed: %s; still serving with the running binary", s->exec_path,
                  strerror(-r));
        snprintf(status, sizeof(status), "re-exec failed: %s", strerror(-r));
        notify_reloaded(s, status);
}
