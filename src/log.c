/* log.c - priorities, the level filter, and the stderr and journal back ends.
 *
 * The back end is chosen once at start: if stderr is the journal's stream
 * (JOURNAL_STREAM names stderr's device and inode, as sd_journal_stream_fd(3)
 * describes, and journald's socket exists) we send native entries with sd_journal_sendv() so that fields
 * like REMOTE_ADDR= can be queried; otherwise one "level: message" line per
 * call, written with a single write(2) so lines from one process never
 * interleave.
 *
 * Several instances may share a port and a journal (epolld@.service sets
 * EPOLLD_INSTANCE=%i): then every line says which one wrote it, as
 * "epolld@N: " on stderr and as SYSLOG_IDENTIFIER=epolld@N and
 * EPOLLD_INSTANCE=N in the journal, so connection #12 of one instance is
 * never taken for #12 of another. Without it the output is unchanged.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

int log_max_priority = LOG_INFO;
static bool journal;
static char instance[LOG_INSTANCE_MAX + 1]; /* "" = not an instance */

struct limiter {
        uint64_t window_start_ms;
        uint32_t count;
        uint64_t suppressed;
};

static struct limiter limiters[LOG_LIMIT_COUNT];
static const char *const limit_names[LOG_LIMIT_COUNT] = {
        [LOG_LIMIT_ACCEPT] = "accept",
        [LOG_LIMIT_CLOSE] = "close",
        [LOG_LIMIT_ACCEPT_ERROR] = "accept error",
        [LOG_LIMIT_IO_ERROR] = "read/write error",
        [LOG_LIMIT_PAUSE] = "accept pause",
        [LOG_LIMIT_MEMORY] = "out of memory",
};

static const char *const level_names[] = {
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};

static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        char *end;

        if (!e)
                return false;
        errno = 0;
        dev = strtoull(e, &end, 10);
        if (errno || end == e || *end != ':')
                return false;
        e = end + 1;
        ino = strtoull(e, &end, 10);
        if (errno || end == e || *end != '\0')
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

/* sd_journal_sendv() reports success when journald's socket is missing
 * (it drops the entry on purpose), so check that the socket is there
 * before choosing it over stderr. */
static bool journal_socket_present(void)
{
        struct stat st;

        return stat("/run/systemd/journal/socket", &st) == 0 && S_ISSOCK(st.st_mode);
}

/* A unit's instance name (%i, escaped by systemd) or any short name
 * without spaces or control characters. */
static bool instance_valid(const char *v)
{
        size_t n = strlen(v);

        if (n == 0 || n > LOG_INSTANCE_MAX)
                return false;
        for (const char *p = v; *p; p++)
                if (*p <= ' ' || *p == 0x7f)
                        return false;
        return true;
}

void log_init(void)
{
        const char *v = getenv("EPOLLD_INSTANCE");

        journal = stderr_is_journal() && journal_socket_present();
        if (v && instance_valid(v))
                memcpy(instance, v, strlen(v) + 1);
        else if (v && v[0])
                log_warning("ignoring EPOLLD_INSTANCE: at most %d characters, no spaces or "
                            "control characters",
                            LOG_INSTANCE_MAX);
}

void log_set_max_priority(int priority)
{
        log_max_priority = priority;
}

int log_level_from_name(const char *name)
{
        for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
                if (strcmp(name, level_names[i]) == 0)
                        return i;
        return -1;
}

const char *log_level_name(int priority)
{
        if (priority < LOG_EMERG || priority > LOG_DEBUG)
                return "?";
        return level_names[priority];
}

/* Appends "KEY=value" to the iovec array; the text lives in buf. */
static size_t add_field(struct iovec *iov, size_t n, char *buf, size_t size, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
static size_t add_field(struct iovec *iov, size_t n, char *buf, size_t size, const char *fmt, ...)
{
        va_list ap;
        int len;

        va_start(ap, fmt);
        /* va_start is right above: a clang 14 false positive. */
        // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
        len = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        if (len < 0)
                return n;
        iov[n].iov_base = buf;
        iov[n].iov_len = (size_t)len < size ? (size_t)len : size - 1;
        return n + 1;
}

static void write_journal(int priority, const struct log_fields *f, const char *msg)
{
        char b[9][128], m[1100];
        struct iovec iov[10];
        size_t n = 0;

        n = add_field(iov, n, m, sizeof(m), "MESSAGE=%s", msg);
        n = add_field(iov, n, b[0], sizeof(b[0]), "PRIORITY=%d", priority);
        n = add_field(iov, n, b[1], sizeof(b[1]), "SYSLOG_IDENTIFIER=epolld%s%s",
                      instance[0] ? "@" : "", instance);
        if (instance[0])
                n = add_field(iov, n, b[7], sizeof(b[7]), "EPOLLD_INSTANCE=%s", instance);
        if (f && f->event)
                n = add_field(iov, n, b[2], sizeof(b[2]), "EPOLLD_EVENT=%s", f->event);
        if (f && f->remote_addr) {
                n = add_field(iov, n, b[3], sizeof(b[3]), "REMOTE_ADDR=%s", f->remote_addr);
                n = add_field(iov, n, b[4], sizeof(b[4]), "REMOTE_PORT=%u", f->remote_port);
        }
        if (f && f->conn_id)
                n = add_field(iov, n, b[5], sizeof(b[5]), "CONNECTION_ID=%llu",
                              (unsigned long long)f->conn_id);
        if (f && f->has_replies)
                n = add_field(iov, n, b[6], sizeof(b[6]), "REPLIES=%llu",
                              (unsigned long long)f->replies);
        if (sd_journal_sendv(iov, (int)n) < 0)
                journal = false; /* fall back to stderr lines for good */
}

static void write_stderr(int priority, const char *msg)
{
        char line[1200];
        int len = snprintf(line, sizeof(line), "%s%s%s%s: %s\n", instance[0] ? "epolld@" : "",
                           instance, instance[0] ? ": " : "", log_level_name(priority), msg);

        if (len < 0)
                return;
        if ((size_t)len >= sizeof(line))
                len = sizeof(line) - 1, line[len - 1] = '\n';
        /* A failed log write has nowhere to be reported; dropping it is the
         * only choice that cannot recurse or block the loop further. */
        if (write(STDERR_FILENO, line, (size_t)len) < 0)
                return;
}

void log_write(int priority, const struct log_fields *fields, const char *fmt, ...)
{
        int saved_errno = errno;
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        /* va_start is right above: a clang 14 false positive. */
        // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
        (void)vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (journal)
                write_journal(priority, fields, msg);
        if (!journal)
                write_stderr(priority, msg);
        errno = saved_errno;
}

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void report_suppressed(enum log_limit kind)
{
        struct limiter *l = &limiters[kind];

        if (!l->suppressed)
                return;
        if (log_enabled(LOG_WARNING))
                log_write(LOG_WARNING, NULL, "%llu %s messages suppressed (more than %u in %u s)",
                          (unsigned long long)l->suppressed, limit_names[kind], LOG_LIMIT_BURST,
                          LOG_LIMIT_INTERVAL_MS / 1000u);
        l->suppressed = 0;
}

bool log_allow(enum log_limit kind)
{
        struct limiter *l = &limiters[kind];
        uint64_t now = now_ms();

        if (now - l->window_start_ms >= LOG_LIMIT_INTERVAL_MS) {
                report_suppressed(kind);
                l->window_start_ms = now;
                l->count = 0;
        }
        if (l->count < LOG_LIMIT_BURST) {
                l->count++;
                return true;
        }
        l->suppressed++;
        return false;
}

void log_flush_suppressed(void)
{
        for (int k = 0; k < LOG_LIMIT_COUNT; k++)
                report_suppressed((enum log_limit)k);
}
