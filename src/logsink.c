/* logsink.c - the back ends of log.c, stderr lines and native journal
 * entries, both written so that the loop never blocks.
 *
 * stderr is shared with other processes (a supervisor's pipe, a terminal,
 * journald's stream socket): setting O_NONBLOCK on it would change it for
 * all of them. So each kind of stderr gets a write that cannot block and
 * leaves fd 2 as it is:
 *  - a socket: send(MSG_DONTWAIT), non-blocking for that one call;
 *  - a pipe, FIFO or terminal: a second open file description of it,
 *    opened from /proc/self/fd/2 with O_NONBLOCK, a flag that is ours alone;
 *  - a regular file or block device: write(2) never waits for a reader;
 *  - if that reopen fails (no /proc; a pipe of another user after a
 *    re-exec under User=): write only when poll() reports room. A third
 *    process filling the pipe between the two calls is the one way left to
 *    block, and it takes such a process.
 * A line is one write of at most LINE_BYTES: a pipe takes it whole or not
 * at all (PIPE_BUF). A socket or terminal may take only its start; then
 * the rest is finished before any other line is begun, so lines never
 * interleave, and a line counts as not written only if none of it got out.
 * A re-exec waits a little for such a rest; if it still cannot go, it is
 * lost, and the new image begins with a newline (EPOLLD_LOG_CUT).
 *
 * The journal: when stderr is journald's stream (JOURNAL_STREAM names its
 * device and inode, as sd_journal_stream_fd(3) describes) and journald's
 * socket exists, entries go natively to that socket, so that fields like
 * REMOTE_ADDR= can be queried. sd_journal_sendv() sends on a blocking
 * socket and has no non-blocking form, so the datagram is built here, in
 * the same native protocol, and sent with MSG_DONTWAIT. A send that fails
 * (journald restarting, its queue full) writes that entry to stderr, and
 * so do the entries of the next JOURNAL_RETRY_MS; then the journal is
 * tried again.
 */
#include "logsink.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LINE_BYTES 1300 /* "epolld@INSTANCE: level: " + a 1023-byte message + "\n" fit */
#define JOURNAL_SOCKET "/run/systemd/journal/socket"
#define JOURNAL_SNDBUF (8 * 1024 * 1024) /* as libsystemd; the kernel caps it */
/* Set across a re-exec when a line was left unfinished (reexec.c). */
#define CUT_ENV "EPOLLD_LOG_CUT"

enum out_kind {
        OUT_FILE, /* regular file or block device */
        OUT_SOCKET, /* send(MSG_DONTWAIT) on fd 2 */
        OUT_REOPENED, /* our own O_NONBLOCK open file description */
        OUT_POLLED, /* fd 2, after poll() says there is room */
};

static char instance[LOG_INSTANCE_MAX + 1]; /* "" = not an instance */
static char ident[sizeof("epolld@") + LOG_INSTANCE_MAX];

static struct {
        enum out_kind kind;
        int fd;
        char rest[LINE_BYTES]; /* the unwritten end of a partly written line */
        size_t rest_len;
} out = { .kind = OUT_POLLED, .fd = STDERR_FILENO };

static struct {
        bool chosen; /* stderr is the journal's stream and its socket exists */
        bool failing; /* the last send failed: stderr until retry_at_ms */
        int fd; /* our datagram socket, opened with the first entry */
        uint64_t retry_at_ms;
} journal = { .fd = -1 };

uint64_t logsink_now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void out_init(void)
{
        struct stat st;
        int fd;

        if (fstat(STDERR_FILENO, &st) < 0)
                return; /* OUT_POLLED */
        if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
                out.kind = OUT_FILE;
                return;
        }
        if (S_ISSOCK(st.st_mode)) {
                out.kind = OUT_SOCKET;
                return;
        }
        /* O_NONBLOCK also keeps this open from waiting: a FIFO without a
         * reader fails with ENXIO instead. */
        fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return; /* OUT_POLLED */
        out.kind = OUT_REOPENED;
        out.fd = fd;
}

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

static bool journal_socket_present(void)
{
        struct stat st;

        return stat(JOURNAL_SOCKET, &st) == 0 && S_ISSOCK(st.st_mode);
}

void logsink_init(const char *name)
{
        const char *v = getenv(CUT_ENV);
        bool cut = v && strcmp(v, "1") == 0;

        unsetenv(CUT_ENV);
        snprintf(instance, sizeof(instance), "%s", name);
        snprintf(ident, sizeof(ident), "epolld%s%s", instance[0] ? "@" : "", instance);
        out_init();
        journal.chosen = stderr_is_journal() && journal_socket_present();
        if (cut) { /* the previous image left a line unfinished: end it first */
                out.rest[0] = '\n';
                out.rest_len = 1;
        }
}

static ssize_t out_write(const char *buf, size_t len)
{
        struct pollfd p = { .fd = out.fd, .events = POLLOUT };

        switch (out.kind) {
        case OUT_SOCKET:
                return send(out.fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        case OUT_POLLED:
                if (poll(&p, 1, 0) != 1 || !(p.revents & POLLOUT)) {
                        errno = EAGAIN;
                        return -1;
                }
                break;
        case OUT_FILE:
        case OUT_REOPENED:
                break;
        }
        return write(out.fd, buf, len);
}

/* True once no partly written line is left. */
static bool finish_rest(void)
{
        while (out.rest_len > 0) {
                ssize_t n = out_write(out.rest, out.rest_len);

                if (n <= 0)
                        return false;
                out.rest_len -= (size_t)n;
                memmove(out.rest, out.rest + n, out.rest_len);
        }
        return true;
}

static bool write_line(const char *line, size_t len)
{
        ssize_t n;

        if (!finish_rest())
                return false;
        n = out_write(line, len);
        if (n <= 0)
                return false;
        out.rest_len = len - (size_t)n;
        memcpy(out.rest, line + n, out.rest_len);
        return true;
}

static bool write_stderr(int priority, const char *msg)
{
        char line[LINE_BYTES];
        int len = snprintf(line, sizeof(line), "%s%s%s: %s\n", instance[0] ? ident : "",
                           instance[0] ? ": " : "", log_level_name(priority), msg);

        if (len < 0)
                return false;
        if ((size_t)len >= sizeof(line))
                len = sizeof(line) - 1, line[len - 1] = '\n';
        return write_line(line, (size_t)len);
}

/* Appends KEY=VALUE\n in journald's native protocol or, when the value
 * holds a newline, KEY\n, the length as 64-bit little endian, VALUE\n. A
 * field that does not fit is left out. */
static size_t add_field(char *buf, size_t at, size_t size, const char *key, const char *value)
{
        size_t klen = strlen(key), vlen = strlen(value);
        bool binary = memchr(value, '\n', vlen) != NULL;
        uint64_t le = htole64((uint64_t)vlen);

        /* >= : snprintf() also writes a NUL, overwritten by what follows. */
        if (at + klen + 1 + (binary ? sizeof(le) : 0) + vlen + 1 >= size)
                return at;
        if (!binary)
                return at + (size_t)snprintf(buf + at, size - at, "%s=%s\n", key, value);
        at += (size_t)snprintf(buf + at, size - at, "%s\n", key);
        memcpy(buf + at, &le, sizeof(le));
        at += sizeof(le);
        return at + (size_t)snprintf(buf + at, size - at, "%s\n", value);
}

static size_t add_number(char *buf, size_t at, size_t size, const char *key, uint64_t value)
{
        char num[24];

        snprintf(num, sizeof(num), "%llu", (unsigned long long)value);
        return add_field(buf, at, size, key, num);
}

static size_t journal_entry(char *buf, size_t size, int priority, const struct log_fields *f,
                            const char *msg)
{
        size_t n = add_field(buf, 0, size, "MESSAGE", msg);

        n = add_number(buf, n, size, "PRIORITY", (uint64_t)priority);
        n = add_field(buf, n, size, "SYSLOG_IDENTIFIER", ident);
        if (instance[0])
                n = add_field(buf, n, size, "EPOLLD_INSTANCE", instance);
        if (!f)
                return n;
        if (f->event)
                n = add_field(buf, n, size, "EPOLLD_EVENT", f->event);
        if (f->remote_addr) {
                n = add_field(buf, n, size, "REMOTE_ADDR", f->remote_addr);
                n = add_number(buf, n, size, "REMOTE_PORT", f->remote_port);
        }
        if (f->conn_id)
                n = add_number(buf, n, size, "CONNECTION_ID", f->conn_id);
        if (f->has_replies)
                n = add_number(buf, n, size, "REPLIES", f->replies);
        if (f->proxy_addr) {
                n = add_field(buf, n, size, "PROXY_ADDR", f->proxy_addr);
                n = add_number(buf, n, size, "PROXY_PORT", f->proxy_port);
        }
        if (f->has_duration)
                n = add_number(buf, n, size, "DURATION_USEC", f->duration_usec);
        if (f->reason)
                n = add_field(buf, n, size, "REASON", f->reason);
        return n;
}

static int journal_send(const char *entry, size_t len)
{
        static const struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET };
        const int sndbuf = JOURNAL_SNDBUF;

        if (journal.fd < 0) {
                journal.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                if (journal.fd < 0)
                        return -errno;
                /* Room for a burst; without it the first full queue fails. */
                (void)setsockopt(journal.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        }
        if (sendto(journal.fd, entry, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                   (const struct sockaddr *)&sa,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof(JOURNAL_SOCKET))) <
            0)
                return -errno;
        return 0;
}

/* False if the entry must go to stderr instead. */
static bool journal_write(int priority, const struct log_fields *f, const char *msg)
{
        char entry[2048], note[160];
        int r;

        if (journal.failing && logsink_now_ms() < journal.retry_at_ms)
                return false;
        r = journal_send(entry, journal_entry(entry, sizeof(entry), priority, f, msg));
        if (r == 0) {
                journal.failing = false;
                return true;
        }
        if (!journal.failing) {
                /* Once per failing spell; the entries themselves follow. */
                snprintf(note, sizeof(note),
                         "journal send failed: %s; writing to stderr, retrying every %u ms",
                         strerror(-r), LOG_JOURNAL_RETRY_MS);
                (void)write_stderr(LOG_WARNING, note);
        }
        journal.failing = true;
        journal.retry_at_ms = logsink_now_ms() + LOG_JOURNAL_RETRY_MS;
        return false;
}

bool logsink_write(int priority, const struct log_fields *fields, const char *msg)
{
        int saved_errno = errno;
        bool done = (journal.chosen && journal_write(priority, fields, msg)) ||
                    write_stderr(priority, msg);

        errno = saved_errno;
        return done;
}

bool logsink_pending(void)
{
        return out.rest_len > 0;
}

void logsink_before_exec(int ms)
{
        if (!out.rest_len)
                return;
        logsink_wait_writable(ms);
        if (out.rest_len)
                (void)setenv(CUT_ENV, "1", 1); /* ENOMEM: a glued line, no more */
}

void logsink_exec_failed(void)
{
        unsetenv(CUT_ENV);
}

void logsink_wait_writable(int ms)
{
        uint64_t end = logsink_now_ms() + (uint64_t)ms;
        struct pollfd p = { .fd = out.fd, .events = POLLOUT };

        if (out.kind == OUT_FILE)
                return;
        for (;;) {
                uint64_t now = logsink_now_ms();

                if (poll(&p, 1, now < end ? (int)(end - now) : 0) != 1 || !(p.revents & POLLOUT))
                        return;
                if (finish_rest())
                        return;
        }
}
