/* server.c - the start, stop and reload sequences of the daemon.
 *
 * Start: descriptor limit, the connection table, epoll set, signals, timers,
 * then what we inherited (sockets, connections) and the listeners, last, so
 * nothing is accepted before everything else is in place; then root is
 * dropped. Stop: listeners first (no new clients), then connections.
 * Reload: parse into a fresh struct config; only if it is whole and its new
 * listeners could be opened is it swapped in. Failure changes nothing.
 */
#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "conn.h"
#include "fdstore.h"
#include "header.h"
#include "idle.h"
#include "inherit.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "notify.h"
#include "privileges.h"
#include "reexec.h"
#include "sig.h"

/* Descriptors the daemon needs besides connections: stdio, epoll, signalfd,
 * timers, the journal and notify sockets, with room to spare. Listeners
 * count twice because a reload opens new ones before closing old ones. */
#define FD_RESERVE 16u
/* The table is reserved, not touched; still, keep its address space sane
 * when RLIMIT_NOFILE is huge or unlimited. */
#define TABLE_MAX (1u << 22)

static uint32_t raise_nofile(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
                log_warning("getrlimit(RLIMIT_NOFILE) failed: %s", strerror(errno));
                return 1024;
        }
        if (rl.rlim_cur < rl.rlim_max) {
                rlim_t old = rl.rlim_cur;

                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                        log_warning("raising RLIMIT_NOFILE from %llu to %llu failed: %s",
                                    (unsigned long long)old, (unsigned long long)rl.rlim_max,
                                    strerror(errno));
                        rl.rlim_cur = old;
                }
        }
        return rl.rlim_cur > TABLE_MAX ? TABLE_MAX : (uint32_t)rl.rlim_cur;
}

/* max_connections as configured, or less if the descriptors do not allow
 * it; logged when the effective value changes (start, or a reload). */
static void apply_max_connections(struct server *s)
{
        unsigned listeners = s->n_listeners > s->cfg.n_listen ? s->n_listeners : s->cfg.n_listen;
        uint32_t reserve = FD_RESERVE + 2u * listeners;
        uint32_t room = s->table_size > reserve ? s->table_size - reserve : 1;
        uint32_t effective = s->cfg.max_connections < room ? s->cfg.max_connections : room;

        if (effective < s->cfg.max_connections && effective != s->max_connections)
                log_notice("max_connections capped from %u to %u: RLIMIT_NOFILE is %u",
                           (unsigned)s->cfg.max_connections, (unsigned)effective,
                           (unsigned)s->table_size);
        s->max_connections = effective;
        if (s->n_conns < s->max_connections)
                listeners_resume(s, PAUSE_FULL);
}

static void log_started(const struct server *s)
{
        log_event(LOG_INFO, "start", NULL,
                  "epolld %s started: %u listener(s), max_events=%u, max_connections=%u, "
                  "backlog=%u, idle_timeout=%us, log level %s",
                  EPOLLD_VERSION, s->n_listeners, (unsigned)s->cfg.max_events,
                  (unsigned)s->max_connections, (unsigned)s->cfg.backlog,
                  (unsigned)s->cfg.idle_timeout, log_level_name(s->cfg.log_level));
}

int server_init(struct server *s, const struct config *cfg, const char *config_path, char **argv)
{
        int r;

        *s = (struct server){ .cfg = *cfg,
                              .config_path = config_path,
                              .epfd = -1,
                              .accept_timer_fd = -1,
                              .idle = { .timer_fd = -1 },
                              .hdr = { .timer_fd = -1 },
                              .signal_fd = -1,
                              .notify = { .status_fd = -1, .watchdog_fd = -1 } };
        r = inherit_begin(s);
        if (r < 0)
                return r;
        r = reexec_init(s, argv);
        if (r < 0) {
                log_err("cannot record the path of the binary: %s", strerror(-r));
                return r;
        }
        r = conn_table_init(s, raise_nofile());
        if (r < 0) {
                log_err("cannot reserve the connection table: %s", strerror(-r));
                return r;
        }
        r = loop_init(s);
        if (r < 0) {
                log_err("epoll_create1 failed: %s", strerror(-r));
                return r;
        }
        if ((r = sig_init(s)) < 0 || (r = idle_init(s)) < 0 || (r = header_init(s)) < 0 ||
            (r = notify_init(s)) < 0 || (r = inherit_all(s)) < 0 || (r = listeners_open(s)) < 0 ||
            (r = privileges_drop(s->cfg.user)) < 0)
                return r;
        apply_max_connections(s);
        log_started(s);
        return 0;
}

void server_deinit(struct server *s)
{
        listeners_close(s);
        if (s->conns)
                conn_close_all(s);
        notify_deinit(s);
        header_deinit(s);
        idle_deinit(s);
        sig_deinit(s);
        loop_deinit(s);
        conn_table_deinit(s);
        log_flush_suppressed();
}

int server_run(struct server *s)
{
        int r;

        notify_started(s);
        r = loop_run(s);
        notify_stopping(s);
        /* Under systemd the connections outlive us in its fd store: a
         * restart's new process adopts them, a stop closes them. */
        fdstore_push_connections(s);
        log_notice("stopping: closing %u connection(s); %llu accepted, %llu replies in all",
                   (unsigned)s->n_conns, (unsigned long long)s->stats.accepted,
                   (unsigned long long)s->stats.replies);
        return r;
}

/* Reads the configuration file into a fresh struct and applies it. On
 * failure nothing has changed and WHY says what failed. A change of user
 * is kept for the next start; BEFORE_EXEC refuses it instead, because the
 * new image could not switch users any more. */
static int apply_file(struct server *s, bool before_exec, char why[CONFIG_ERROR_MAX])
{
        struct config next;
        uint32_t old_idle = s->cfg.idle_timeout, old_proxy_timeout = s->cfg.proxy_timeout;
        int r;

        if (!s->config_path)
                return 0; /* built-in defaults: nothing to read */
        if (config_load(&next, s->config_path, false, why) < 0)
                return -1;
        if (strcmp(next.user, s->cfg.user) != 0) {
                if (before_exec) {
                        snprintf(why, CONFIG_ERROR_MAX, "a change of user takes a restart");
                        return -1;
                }
                log_warning("reload: a change of user takes a restart; keeping the current one");
                memcpy(next.user, s->cfg.user, sizeof(next.user));
        }
        r = listeners_reconfigure(s, &next);
        if (r < 0) {
                snprintf(why, CONFIG_ERROR_MAX, "cannot open a new listener: %s", strerror(-r));
                return -1;
        }
        s->cfg = next;
        log_set_max_priority(next.log_level);
        apply_max_connections(s);
        idle_reconfigure(s, old_idle);
        if (next.proxy_timeout != old_proxy_timeout)
                header_reconfigure(s);
        log_event(LOG_NOTICE, "reload-applied", NULL, "reloaded configuration from %s",
                  s->config_path);
        return 0;
}

int server_apply_config(struct server *s, bool before_exec)
{
        char why[CONFIG_ERROR_MAX], status[CONFIG_ERROR_MAX + 64];
        const char *what = before_exec ? "re-exec" : "reload";

        if (!s->config_path)
                log_notice("%s requested, but running on built-in defaults: nothing to read "
                           "(a file at the default path is read at the next start)",
                           what);
        if (apply_file(s, before_exec, why) == 0)
                return 0;
        log_err("%s", why);
        log_event(LOG_ERR, "reload-refused", why, "%s failed, keeping the previous configuration",
                  what);
        snprintf(status, sizeof(status), "%s failed: %s", what, why);
        notify_reloaded(s, status);
        return -1;
}

void server_reload(struct server *s)
{
        notify_reloading(s);
        if (server_apply_config(s, false) == 0)
                notify_reloaded(s, NULL);
}
