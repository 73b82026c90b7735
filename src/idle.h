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

/* s->cfg.idle_timeout changed from OLD (reload): rebuild the list. */
void idle_reconfigure(struct server *s, uint32_t old);

/* Reads CLOCK_MONOTONIC into s->now_ms; called once per loop turn. */
void idle_clock(struct server *s);
