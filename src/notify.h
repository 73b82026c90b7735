/* notify.h - the systemd service manager protocol: readiness, status,
 * reload and stop notifications, and the watchdog. All no-ops when
 * NOTIFY_SOCKET is unset; none blocks the loop. */
#pragma once

struct server;

/* Sets up the watchdog timer if WATCHDOG_USEC asks for one. */
int notify_init(struct server *s);

/* One message to NOTIFY_SOCKET, with N fds (at most 253), without waiting:
 * 0 (also when there is no NOTIFY_SOCKET), -EAGAIN when PID 1's queue is
 * full, or another -errno. */
int notify_send(const char *msg, const int *fds, unsigned n);
void notify_deinit(struct server *s);

/* READY=1 at the start, before the loop. */
void notify_started(struct server *s);
void notify_ready(struct server *s);
void notify_reloading(struct server *s);
void notify_reloaded(struct server *s, const char *status);
void notify_stopping(struct server *s);

/* Once per loop turn: schedules a STATUS= update if the counters moved. */
void notify_after_batch(struct server *s);

void notify_on_watchdog(struct server *s);
/* WATCHDOG=1 now, if the watchdog is on, without logging: right before
 * execve(), so that the new image's first ping is not a whole interval
 * after the last one. */
void notify_watchdog_now(void);
void notify_on_status(struct server *s);
