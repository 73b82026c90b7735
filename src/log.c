/* log.c - priorities, the level filter, the rate limits, and the count of
 * lines that did not get out.
 *
 * Where a line goes, and how it is written without blocking, is logsink.c.
 * A line the output cannot take at once is dropped and counted, so a full
 * pipe or a slow journald cannot stall the loop. The count is reported
 * ("N log line(s) dropped: output not writable") before the next line that
 * does get out, exactly as the lines held back by a rate limit are ("N
 * accept messages suppressed ..."): both go through report_lost(), and a
 * count is cleared only once its report is written. At exit we wait a
 * little (EXIT_WAIT_MS) for the output to take what is still to report.
 *
 * Several instances may share a port and a journal (epolld@.service sets
 * EPOLLD_INSTANCE=%i): then every line says which one wrote it, as
 * "epolld@N: " on stderr and as SYSLOG_IDENTIFIER=epolld@N and
 * EPOLLD_INSTANCE=N in the journal (logsink.c), so connection #12 of one
 * instance is never taken for #12 of another. Without it the output is
 * unchanged.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logsink.h"

#define EXIT_WAIT_MS 500
#define DROPPED_WHAT "log line(s) dropped: output not writable"

int log_max_priority = LOG_INFO;
static uint64_t dropped;

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
        [LOG_LIMIT_TIMER] = "timer",
        [LOG_LIMIT_PROXY] = "PROXY refusal",
};

static const char *const level_names[] = {
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};

static bool anything_to_report(void)
{
        if (dropped || logsink_pending())
                return true;
        for (int k = 0; k < LOG_LIMIT_COUNT; k++)
                if (limiters[k].suppressed)
                        return true;
        return false;
}

/* A daemon stopped while its output was full still gets its counts out if
 * the reader catches up within EXIT_WAIT_MS. Only at exit: the loop never
 * waits. */
static void flush_at_exit(void)
{
        if (!anything_to_report())
                return;
        logsink_wait_writable(EXIT_WAIT_MS);
        log_flush_suppressed();
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

        logsink_init(v && instance_valid(v) ? v : "");
        if (v && v[0] && !instance_valid(v))
                log_warning("ignoring EPOLLD_INSTANCE: at most %d characters, no spaces or "
                            "control characters",
                            LOG_INSTANCE_MAX);
        if (atexit(flush_at_exit) != 0)
                log_warning("cannot register the log flush at exit");
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

/* The one way a count of lines that did not get out is reported: a
 * warning that starts with the count. True once nothing is left to report;
 * until its warning is written the count keeps growing. */
static bool report_lost(uint64_t *count, const char *what)
{
        char msg[160];

        if (*count == 0)
                return true;
        if (log_enabled(LOG_WARNING)) {
                snprintf(msg, sizeof(msg), "%llu %s", (unsigned long long)*count, what);
                if (!logsink_write(LOG_WARNING, NULL, msg))
                        return false;
        }
        *count = 0;
        return true;
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
        if (!report_lost(&dropped, DROPPED_WHAT) || !logsink_write(priority, fields, msg))
                dropped++;
        errno = saved_errno;
}

static void report_suppressed(enum log_limit kind)
{
        struct limiter *l = &limiters[kind];
        char what[96];

        if (!l->suppressed)
                return;
        snprintf(what, sizeof(what), "%s messages suppressed (more than %u in %u s)",
                 limit_names[kind], LOG_LIMIT_BURST, LOG_LIMIT_INTERVAL_MS / 1000u);
        if (report_lost(&dropped, DROPPED_WHAT))
                (void)report_lost(&l->suppressed, what);
}

bool log_allow(enum log_limit kind)
{
        struct limiter *l = &limiters[kind];
        uint64_t now = logsink_now_ms();

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
        (void)report_lost(&dropped, DROPPED_WHAT);
        for (int k = 0; k < LOG_LIMIT_COUNT; k++)
                report_suppressed((enum log_limit)k);
}
