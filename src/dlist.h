/* dlist.h - deadline lists: connections in the order their deadlines come,
 * threaded through the connection table (by fd), with one timerfd each.
 * Used twice: the idle list (idle.c) and the PROXY header list (header.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

struct server;

struct dlist {
        int32_t head, tail; /* fds, -1 = empty; the oldest last_ms first */
        int timer_fd;
        bool armed; /* the timer is set and has not fired yet */
        const char *what; /* for log lines: "idle_timeout", "proxy_timeout" */
};

/* Creates the timerfd and adds it to the epoll set with tag KIND. */
int dlist_init(struct server *s, struct dlist *l, enum tag_kind kind, const char *what);
void dlist_deinit(struct dlist *l);

/* O(1). append() stamps the connection with s->now_ms. A connection is on
 * one list at most: its flags say which, so listed() alone cannot tell. */
void dlist_append(struct server *s, struct dlist *l, int fd);
void dlist_unlink(struct server *s, struct dlist *l, int fd);
bool dlist_listed(const struct server *s, const struct dlist *l, int fd);
void dlist_clear(struct dlist *l);

/* Arms the timer for the head's deadline (its last_ms + TIMEOUT_MS), or
 * disarms it when the list is empty. */
void dlist_arm(struct server *s, struct dlist *l, uint32_t timeout_ms);
/* A member joined an empty list: arms the timer unless it is still set
 * (for an earlier deadline: it fires, finds nothing expired, re-arms).
 * So a stream of short-lived members costs no timerfd_settime each. */
void dlist_arm_lazily(struct server *s, struct dlist *l, uint32_t timeout_ms);
/* Consumes the timer's expiration count. */
void dlist_read_timer(struct dlist *l);
/* True if the head's deadline has passed. */
bool dlist_head_expired(const struct server *s, const struct dlist *l, uint32_t timeout_ms);

/* After adoptions appended out of order: sorts by last_ms, oldest first
 * (merge sort, no allocation, O(n log n)). */
void dlist_order(struct server *s, struct dlist *l);
