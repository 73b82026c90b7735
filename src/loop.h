/* loop.h - the epoll set, event tags and the epoll_wait loop. */
#pragma once

#include <stdint.h>
#include <sys/epoll.h>

struct server;

/* What an epoll event is about. The tag travels in epoll_data.u64, so
 * dispatch is one switch and no lookup. */
enum tag_kind {
        TAG_LISTENER = 1, /* id: index in the listener array; gen: s->listeners_gen */
        TAG_CONN, /* id: fd; gen: the slot's generation */
        TAG_SIGNAL,
        TAG_TIMER_IDLE,
        TAG_TIMER_ACCEPT,
        TAG_TIMER_WATCHDOG,
        TAG_TIMER_STATUS,
        TAG_TIMER_HEADER, /* proxy_timeout */
};

#define TAG_GEN_MASK 0xffffffu

static inline uint64_t tag_make(enum tag_kind kind, uint32_t gen, uint32_t id)
{
        return ((uint64_t)kind << 56) | ((uint64_t)(gen & TAG_GEN_MASK) << 32) | id;
}

static inline enum tag_kind tag_kind(uint64_t tag)
{
        return (enum tag_kind)(tag >> 56);
}
static inline uint32_t tag_gen(uint64_t tag)
{
        return (uint32_t)(tag >> 32) & TAG_GEN_MASK;
}
static inline uint32_t tag_id(uint64_t tag)
{
        return (uint32_t)tag;
}

int loop_init(struct server *s);
void loop_deinit(struct server *s);

/* epoll_ctl wrappers; return 0 or -errno. */
int loop_add(struct server *s, int fd, uint32_t events, uint64_t tag);
int loop_mod(struct server *s, int fd, uint32_t events, uint64_t tag);
int loop_del(struct server *s, int fd);

/* Runs until s->stopping; returns 0, or -errno if epoll_wait fails. */
int loop_run(struct server *s);
