/* server.h - the daemon's state, shared by the modules that act on it.
 *
 * One struct, owned by main(), passed to every handler: the loop, the
 * listeners, the connection table, the idle list, signals and timers.
 * Each module owns the descriptors in its part and closes them in its
 * deinit function; nothing else closes them.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "config.h"
#include "dlist.h"

struct conn;

struct listener {
        int fd;
        struct addr addr;
        bool activated; /* from a .socket unit, not bound by us */
        char name[ADDR_TEXT_MAX];
        char fdname[ADDR_TEXT_MAX + 8]; /* LISTEN_FDNAMES / FDNAME= name */
};

/* Why accepting is paused; listeners are in the epoll set iff none. */
enum pause_reason {
        PAUSE_FULL = 1u << 0, /* max_connections reached */
        PAUSE_NOFILE = 1u << 1, /* EMFILE/ENFILE: retry from a timer */
};

struct stats {
        uint64_t accepted;
        uint64_t replies;
};

struct notify_state {
        bool enabled; /* NOTIFY_SOCKET is set */
        bool status_armed;
        int status_fd; /* one-shot: rate-limits STATUS= */
        int watchdog_fd; /* periodic at WATCHDOG_USEC / 2 */
        uint64_t sent_replies; /* what the last STATUS= said */
        uint32_t sent_conns;
};

struct server {
        struct config cfg;
        const char *config_path; /* NULL: built-in defaults */
        char **argv; /* for re-exec */
        int n_inherited; /* LISTEN_FDS, until inherit_all() */
        char **inherited_names;
        char exec_path[4096];

        int epfd;
        struct epoll_event *events;
        uint32_t n_events;

        struct listener listeners[CONFIG_MAX_LISTEN];
        unsigned n_listeners;
        uint32_t listeners_gen; /* bumped when a reload renumbers them (tags) */
        unsigned paused; /* enum pause_reason bits */
        int accept_timer_fd;
        uint64_t accept_failures; /* in the current EMFILE episode */

        struct conn *conns; /* indexed by fd, table_size slots, lazily touched */
        uint32_t table_size;
        uint32_t n_conns;
        uint32_t max_connections; /* cfg.max_connections capped by RLIMIT_NOFILE */
        int max_fd; /* highest fd ever used for a connection */

        struct dlist idle; /* past the header: oldest activity first (idle.c) */
        struct dlist hdr; /* awaiting a PROXY header: oldest accept first (header.c) */
        uint32_t now_ms; /* CLOCK_MONOTONIC, once per loop turn */
        uint64_t now_us; /* the same reading, in microseconds */
        uint32_t now_cs; /* and in centiseconds (10 ms), modulo 2^32: accept times */

        int signal_fd;
        bool stopping;

        struct stats stats;
        struct notify_state notify;
};

/* The start and stop sequence, and reload (server.c). */
int server_init(struct server *s, const struct config *cfg, const char *config_path, char **argv);
void server_deinit(struct server *s);
int server_run(struct server *s);
void server_reload(struct server *s);
/* Reads and applies the configuration file: the work of a reload, and the
 * first step of a re-exec (BEFORE_EXEC, which also refuses a change of
 * user). On failure logs, sends READY=1 with the reason and returns -1;
 * the running configuration stays. */
int server_apply_config(struct server *s, bool before_exec);
