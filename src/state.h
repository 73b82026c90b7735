/* state.h - what a connection needs beyond its fd to survive a restart or a
 * re-exec, in a small versioned binary format carried in a memfd. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct server;

/* Matched to an inherited fd by its socket inode, never by position. The
 * layout of a version 3 record in the file. */
struct state_record {
        uint64_t ino;
        uint64_t id;
        uint64_t replies;
        /* CLOCK_MONOTONIC ms of the last traffic; 0 = unknown (idle_timeout
         * was off, or a version 1 file): the adopter counts from "now". */
        uint64_t last_ms;
        /* Version 3: CLOCK_MONOTONIC us of the accept; 0 = unknown (an older
         * file): then addr and port are unknown too, and the adopter asks
         * the socket. */
        uint64_t born_us;
        uint8_t addr[16]; /* the client (from a PROXY header, or the peer) */
        uint16_t port;
        uint16_t reserved16;
        /* Bytes of replies pending; in the header phase (CONN_HEADER), the
         * header bytes seen so far. */
        uint32_t pending;
        uint32_t flags; /* CONN_STATE_FLAGS */
        uint32_t reserved32;
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
 * last_ms unknown, and version 2 ones, with every born_us unknown). On any fault returns -EBADMSG (or -errno) and fills
 * WHY; ST is then empty. */
int state_read(int fd, struct state *st, char *why, size_t whylen);

/* The record for socket inode INO, or NULL. O(log n). */
const struct state_record *state_find(const struct state *st, uint64_t ino);

void state_free(struct state *st);
