/* state.h - what a connection needs beyond its fd to survive a restart or a
 * re-exec, in a small versioned binary format carried in a memfd. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct server;

/* Matched to an inherited fd by its socket inode, never by position. */
struct state_record {
        uint64_t ino;
        uint64_t id;
        uint64_t replies;
        /* CLOCK_MONOTONIC ms of the last traffic; 0 = unknown (idle_timeout
         * was off, or a version 1 file): the adopter counts from "now". */
        uint64_t last_ms;
        uint32_t pending;
        uint32_t flags;
};

struct state {
        uint64_t next_id; /* connection ids already used */
        uint64_t replies; /* replies in all, for STATUS= */
        struct state_record *records; /* sorted by ino */
        size_t n;
};

/* Writes the open connections of S to a new memfd; returns it or -errno. */
int state_write(const struct server *s);

/* Reads and validates FD field by field (version 1 files too, with every
 * last_ms unknown). On any fault returns -EBADMSG (or -errno) and fills
 * WHY; ST is then empty. */
int state_read(int fd, struct state *st, char *why, size_t whylen);

/* The record for socket inode INO, or NULL. O(log n). */
const struct state_record *state_find(const struct state *st, uint64_t ino);

void state_free(struct state *st);
