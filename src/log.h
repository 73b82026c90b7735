/* log.h - the one logging interface of epolld.
 *
 * Every message has a syslog priority. The level filter is checked in the
 * macro, before any argument is evaluated, so a filtered-out line costs one
 * compare: this is what keeps per-read debug lines off the hot path.
 * Lines go to stderr, or natively to the journal when stderr is connected
 * to it, with optional structured fields (struct log_fields). No write
 * ever blocks: a line the output cannot take is dropped and counted, and
 * the count is reported once the output takes lines again (log.c,
 * logsink.c).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

/* Structured fields for the journal; on stderr only the message is printed. */
struct log_fields {
        const char *event; /* EPOLLD_EVENT=, e.g. "accept" */
        const char *remote_addr; /* REMOTE_ADDR= */
        unsigned remote_port; /* REMOTE_PORT=, with remote_addr */
        uint64_t conn_id; /* CONNECTION_ID=, when non-zero */
        uint64_t replies; /* REPLIES=, when has_replies */
        bool has_replies;
        const char *proxy_addr; /* PROXY_ADDR=: the balancer that sent a PROXY header */
        unsigned proxy_port; /* PROXY_PORT=, with proxy_addr */
        uint64_t duration_usec; /* DURATION_USEC=, when has_duration: a connection's life */
        bool has_duration;
        const char *reason; /* REASON=: why (a refusal, a pause, a failed reload, ...) */
};

/* Lines a remote peer can trigger at a high rate are rate-limited per kind,
 * so a connection storm cannot fill a disk. */
enum log_limit {
        LOG_LIMIT_ACCEPT,
        LOG_LIMIT_CLOSE,
        LOG_LIMIT_ACCEPT_ERROR,
        LOG_LIMIT_IO_ERROR,
        LOG_LIMIT_PAUSE,
        LOG_LIMIT_MEMORY,
        LOG_LIMIT_TIMER, /* a timer that cannot be armed, retried every loop turn */
        LOG_LIMIT_PROXY, /* a connection refused for its PROXY header or its peer */
        LOG_LIMIT_COUNT,
};

#define LOG_LIMIT_INTERVAL_MS 5000u
#define LOG_LIMIT_BURST 500u
/* After a failed journal send, entries go to stderr for this long. */
#define LOG_JOURNAL_RETRY_MS 1000u

extern int log_max_priority;

static inline bool log_enabled(int priority)
{
        return priority <= log_max_priority;
}

#define LOG_INSTANCE_MAX 64

/* Chooses the back end and reads EPOLLD_INSTANCE, the name that tags every
 * line when several instances share a journal. */
void log_init(void);
void log_set_max_priority(int priority);
int log_level_from_name(const char *name);
const char *log_level_name(int priority);

/* True if a line of this kind may be written now; counts it either way.
 * After a window with suppressed lines, the next call first writes
 * "N ... messages suppressed". */
bool log_allow(enum log_limit kind);
/* Reports what is still suppressed or dropped (at shutdown, before a
 * re-exec). */
void log_flush_suppressed(void);

void log_write(int priority, const struct log_fields *fields, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

#define log_full(prio, fields, ...)                                                                \
        do {                                                                                       \
                if (log_enabled(prio))                                                             \
                        log_write((prio), (fields), __VA_ARGS__);                                  \
        } while (0)

#define log_limited(prio, kind, fields, ...)                                                       \
        do {                                                                                       \
                if (log_enabled(prio) && log_allow(kind))                                          \
                        log_write((prio), (fields), __VA_ARGS__);                                  \
        } while (0)

/* A line an operator looks for: EPOLLD_EVENT=EVENT and, if not NULL,
 * REASON=REASON in the journal. */
#define log_event(prio, event_, reason_, ...)                                                      \
        do {                                                                                       \
                if (log_enabled(prio)) {                                                           \
                        struct log_fields f_ = { .event = (event_), .reason = (reason_) };         \
                        log_write((prio), &f_, __VA_ARGS__);                                       \
                }                                                                                  \
        } while (0)

#define log_err(...) log_full(LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_full(LOG_DEBUG, NULL, __VA_ARGS__)
