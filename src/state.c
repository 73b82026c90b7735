/* state.c - the state file handed across a restart or re-exec.
 *
 * Layout (host byte order; the magic catches a foreign file):
 *   header: magic "EPOLLDST", version, record size, count, next id, replies
 *   count records: socket inode, id, replies, last traffic (CLOCK_MONOTONIC
 *   ms, 0 = unknown), accept time (CLOCK_MONOTONIC us; written to 10 ms, as
 *   struct conn keeps it, and a finer one is rounded down when read), the
 *   client's address and port, pending bytes, flags
 * Version 1 records lack the last traffic, version 2 ones the accept time
 * and the client; both are still read (as unknown), so a restart from an
 * older binary keeps its connections. A connection still waiting for its
 * PROXY header (CONN_HEADER) has id 0, no replies, and in "pending" the
 * header bytes it has seen (SO_RCVLOWAT, which the socket keeps, is one
 * more), so the new image neither reads it twice nor misses its end.
 * The reader trusts nothing: sizes, counts, every field's range and the
 * uniqueness of inodes are checked, and one bad field rejects the whole
 * file (the connections are then adopted with fresh state by the caller).
 */
#include "state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conn.h"
#include "idle.h"
#include "proxy.h"
#include "server.h"

#define STATE_MAGIC "EPOLLDST"
#define STATE_VERSION 3u
#define STATE_MAX_BYTES (64u << 20)
#define STATE_MAX_ID (UINT64_MAX / 2)

/* A record of version 1, before last_ms. */
struct state_record_v1 {
        uint64_t ino;
        uint64_t id;
        uint64_t replies;
        uint32_t pending;
        uint32_t flags;
};

/* A record of version 2, before the accept time and the client. */
struct state_record_v2 {
        uint64_t ino;
        uint64_t id;
        uint64_t replies;
        uint64_t last_ms;
        uint32_t pending;
        uint32_t flags;
};

struct state_header {
        char magic[8];
        uint32_t version;
        uint32_t record_size;
        uint64_t count;
        uint64_t next_id;
        uint64_t replies;
};

static int write_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* C's accept time in full CLOCK_MONOTONIC us (0 means unknown: 1 instead);
 * the table keeps it in centiseconds modulo 2^32, the lifetime back from
 * now. */
static uint64_t born_us(const struct server *s, const struct conn *c)
{
        uint64_t us = s->now_us / CONN_CS_US * CONN_CS_US - conn_lifetime_us(s, c);

        return us ? us : 1;
}

/* Fills the records of every open connection; returns how many. */
static size_t collect(const struct server *s, struct state_record *r)
{
        uint64_t now = idle_monotonic_ms();
        size_t n = 0;

        for (int fd = 0; fd <= s->max_fd; fd++) {
                const struct conn *c = &s->conns[fd];
                bool header = c->flags & CONN_HEADER; /* peeked, in replies' place */
                struct stat st;

                if (!(c->flags & CONN_OPEN) || fstat(fd, &st) < 0)
                        continue;
                r[n] = (struct state_record){ .ino = st.st_ino,
                                              .id = c->id,
                                              .replies = header ? 0 : c->replies,
                                              .last_ms = idle_last_activity(s, fd, now),
                                              .born_us = born_us(s, c),
                                              .port = c->port,
                                              .pending = header ? (uint32_t)c->peeked : c->pending,
                                              .flags = c->flags & CONN_STATE_FLAGS };
                memcpy(r[n++].addr, c->addr, sizeof(c->addr));
        }
        return n;
}

int state_write(const struct server *s)
{
        struct state_header h = { .magic = STATE_MAGIC,
                                  .version = STATE_VERSION,
                                  .record_size = sizeof(struct state_record),
                                  .next_id = s->stats.accepted,
                                  .replies = s->stats.replies };
        struct state_record *r = calloc(s->n_conns ? s->n_conns : 1, sizeof(*r));
        int fd, err;

        if (!r)
                return -ENOMEM;
        h.count = collect(s, r);
        fd = memfd_create("epolld-state", MFD_CLOEXEC);
        if (fd < 0) {
                err = -errno;
                free(r);
                return err;
        }
        err = write_all(fd, &h, sizeof(h));
        if (!err)
                err = write_all(fd, r, h.count * sizeof(*r));
        free(r);
        if (err) {
                close(fd);
                return err;
        }
        return fd;
}

static int reject(struct state *st, char *why, size_t whylen, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int reject(struct state *st, char *why, size_t whylen, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        /* va_start is right above: a clang 14 false positive. */
        // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
        (void)vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
        state_free(st);
        return -EBADMSG;
}

static int fail(struct state *st)
{
        state_free(st);
        return -EBADMSG;
}

static int by_ino(const void *a, const void *b)
{
        const struct state_record *x = a, *y = b;

        return (x->ino > y->ino) - (x->ino < y->ino);
}

static size_t record_size(uint32_t version)
{
        if (version == 1)
                return sizeof(struct state_record_v1);
        return version == 2 ? sizeof(struct state_record_v2) : sizeof(struct state_record);
}

static int check_header(const struct state_header *h, size_t size, char *why, size_t whylen)
{
        size_t rsize = record_size(h->version);

        if (memcmp(h->magic, STATE_MAGIC, sizeof(h->magic)) != 0)
                return snprintf(why, whylen, "not an epolld state file (bad magic)"), -1;
        if (h->version < 1 || h->version > STATE_VERSION)
                return snprintf(why, whylen, "unsupported version %u", h->version), -1;
        if (h->record_size != rsize)
                return snprintf(why, whylen, "record size %u, expected %zu", h->record_size, rsize),
                       -1;
        if (h->count != (size - sizeof(*h)) / rsize || (size - sizeof(*h)) % rsize != 0)
                return snprintf(why, whylen, "count %llu does not match the size %zu",
                                (unsigned long long)h->count, size),
                       -1;
        return 0;
}

static int by_id(const void *a, const void *b)
{
        const uint64_t *x = a, *y = b;

        return (*x > *y) - (*x < *y);
}

/* Ids must stay unique: no two records with one id. */
static int check_ids(const struct state *st, char *why, size_t whylen)
{
        uint64_t *ids = malloc(st->n ? st->n * sizeof(*ids) : 1);
        int r = 0;

        if (!ids)
                return snprintf(why, whylen, "out of memory for %zu ids", st->n), -1;
        for (size_t i = 0; i < st->n; i++)
                ids[i] = st->records[i].id; /* 0: headers awaited, not clients yet */
        qsort(ids, st->n, sizeof(*ids), by_id);
        for (size_t i = 1; i < st->n && r == 0; i++) {
                if (ids[i] != ids[i - 1] || ids[i] == 0)
                        continue;
                (void)snprintf(why, whylen, "id %llu twice", (unsigned long long)ids[i]);
                r = -1;
        }
        free(ids);
        return r;
}

/* A connection waiting for its header has no id, no replies, fewer header
 * bytes than a whole header and no client from a header yet. */
static int check_phase(const struct state_record *r, size_t i, char *why, size_t whylen)
{
        if (!(r->flags & CONN_HEADER))
                return 0;
        if (r->id != 0 || r->replies != 0 || r->pending >= PROXY_MAX_LEN ||
            r->flags & (CONN_PROXIED | CONN_LOCAL | CONN_EOF))
                return snprintf(why, whylen,
                                "record %zu: header phase with id %llu, %llu replies, %u bytes, "
                                "flags %#x",
                                i, (unsigned long long)r->id, (unsigned long long)r->replies,
                                r->pending, r->flags),
                       -1;
        return 0;
}

static int check_record(const struct state *st, const struct state_record *r, size_t i, char *why,
                        size_t whylen)
{
        uint64_t now_us = idle_monotonic_ms() * 1000u + 999u;
        /* Before version 3 (born_us unknown) only CONN_EOF was carried. */
        uint32_t allowed = r->born_us ? CONN_STATE_FLAGS : CONN_EOF;

        if (r->flags & ~allowed || (r->flags & (CONN_LOCAL | CONN_PROXIED)) == CONN_LOCAL ||
            (!(r->flags & CONN_HEADER) && r->pending > CONN_PENDING_MAX))
                return snprintf(why, whylen, "record %zu: bad pending %u or flags %#x", i,
                                r->pending, r->flags),
                       -1;
        if (r->born_us > now_us)
                return snprintf(why, whylen, "record %zu: accept time %llu us is in the future", i,
                                (unsigned long long)r->born_us),
                       -1;
        if (r->flags & CONN_HEADER)
                return check_phase(r, i, why, whylen);
        if (r->id == 0 || r->id > st->next_id)
                return snprintf(why, whylen, "record %zu: id %llu out of range", i,
                                (unsigned long long)r->id),
                       -1;
        return 0;
}

static int check_records(const struct state *st, char *why, size_t whylen)
{
        uint64_t now = idle_monotonic_ms();

        /* New ids count up from next_id; they must not wrap to 0. */
        if (st->next_id > STATE_MAX_ID)
                return snprintf(why, whylen, "next id %llu out of range",
                                (unsigned long long)st->next_id),
                       -1;
        for (size_t i = 0; i < st->n; i++) {
                const struct state_record *r = &st->records[i];

                if (check_record(st, r, i, why, whylen) < 0)
                        return -1;
                /* Same boot, same clock: a later time was never written by us. */
                if (r->last_ms > now)
                        return snprintf(why, whylen,
                                        "record %zu: last traffic %llu ms is in the future", i,
                                        (unsigned long long)r->last_ms),
                               -1;
                if (i > 0 && r->ino == st->records[i - 1].ino)
                        return snprintf(why, whylen, "record %zu: inode %llu twice", i,
                                        (unsigned long long)r->ino),
                               -1;
        }
        return 0;
}

/* Records as the file has them (unaligned, maybe an older version) into ST. */
static void copy_records(struct state *st, const char *from, uint32_t version)
{
        struct state_record_v1 v1;
        struct state_record_v2 v2;

        if (version == STATE_VERSION) {
                memcpy(st->records, from, st->n * sizeof(*st->records));
                return;
        }
        for (size_t i = 0; i < st->n; i++) {
                if (version == 2) {
                        memcpy(&v2, from + i * sizeof(v2), sizeof(v2));
                } else {
                        memcpy(&v1, from + i * sizeof(v1), sizeof(v1));
                        v2 = (struct state_record_v2){ .ino = v1.ino,
                                                       .id = v1.id,
                                                       .replies = v1.replies,
                                                       .pending = v1.pending,
                                                       .flags = v1.flags };
                }
                /* Only CONN_EOF meant anything before version 3. */
                st->records[i] = (struct state_record){ .ino = v2.ino,
                                                        .id = v2.id,
                                                        .replies = v2.replies,
                                                        .last_ms = v2.last_ms,
                                                        .pending = v2.pending,
                                                        .flags = v2.flags };
        }
}

static int read_exact(int fd, void *buf, size_t len)
{
        ssize_t n = pread(fd, buf, len, 0);

        if (n < 0)
                return -errno;
        return (size_t)n == len ? 0 : -EIO;
}

int state_read(int fd, struct state *st, char *why, size_t whylen)
{
        struct state_header *h;
        struct stat sb;
        size_t size;
        char *buf;
        int r;

        *st = (struct state){ 0 };
        if (fstat(fd, &sb) < 0)
                return reject(st, why, whylen, "fstat: %s", strerror(errno));
        if (!S_ISREG(sb.st_mode) || sb.st_size < (off_t)sizeof(*h) || sb.st_size > STATE_MAX_BYTES)
                return reject(st, why, whylen,
                              "not a regular file of a plausible size (%lld bytes)",
                              (long long)sb.st_size);
        size = (size_t)sb.st_size;
        buf = malloc(size);
        if (!buf)
                return reject(st, why, whylen, "out of memory for %zu bytes", size);
        r = read_exact(fd, buf, size);
        h = (struct state_header *)buf;
        if (r < 0) {
                free(buf);
                return reject(st, why, whylen, "read: %s", strerror(-r));
        }
        if (check_header(h, size, why, whylen) < 0) {
                free(buf);
                return fail(st);
        }
        st->next_id = h->next_id;
        st->replies = h->replies;
        st->n = (size_t)h->count;
        st->records = malloc(st->n ? st->n * sizeof(*st->records) : 1);
        if (st->records)
                copy_records(st, buf + sizeof(*h), h->version);
        free(buf);
        if (!st->records)
                return reject(st, why, whylen, "out of memory for %zu records", st->n);
        qsort(st->records, st->n, sizeof(*st->records), by_ino);
        if (check_records(st, why, whylen) < 0 || check_ids(st, why, whylen) < 0)
                return fail(st);
        return 0;
}

const struct state_record *state_find(const struct state *st, uint64_t ino)
{
        struct state_record key = { .ino = ino };

        if (!st->n)
                return NULL;
        return bsearch(&key, st->records, st->n, sizeof(key), by_ino);
}

void state_free(struct state *st)
{
        free(st->records);
        *st = (struct state){ 0 };
}
