/* idle.h - idle_timeout: connections in order of last activity, one timer. */
#pragma once

#include <stdint.h>

struct server;

int idle_init(struct server *s);
void idle_deinit(struct server *s);

/* O(1) each; no-ops while idle_timeout is 0. */
void idle_add(struct server *s, int fd);
void idle_touch(struct server *s, int fd);
void idle_remove(struct server *s, int fd);

/* The timer fired: close what has been silent for idle_timeout. */
void idle_on_timer(struct server *s);

/* s->cfg.idle_timeout changed from OLD (reload): every clock keeps running,
 * unless the timeout was off (then none was kept, and all start now). */
void idle_reconfigure(struct server *s, uint32_t old);

/* Reads CLOCK_MONOTONIC into s->now_ms, now_us, now_cs (once per loop turn,
 * every turn: accept times need it); returns it in
 * whole milliseconds, as idle_monotonic_ms() does. */
uint64_t idle_clock(struct server *s);
uint64_t idle_monotonic_ms(void);

/* FD's last traffic in CLOCK_MONOTONIC ms (NOW: that clock, read lately),
 * or 0 when no clock is kept for it (idle_timeout is 0). For the state. */
uint64_t idle_last_activity(const struct server *s, int fd, uint64_t now);

/* Adoption: sets FD's clock back to its last traffic LAST (0: unknown, it
 * stays "now"; NOW: what idle_clock() returned). Leaves the list out of
 * order: call idle_order() after the last one. */
void idle_restore(struct server *s, int fd, uint64_t last, uint64_t now);
void idle_order(struct server *s);
