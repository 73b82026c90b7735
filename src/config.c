/* config.c - INI file -> struct config, with defaults, validation and
 * "FILE:LINE: message" errors.
 *
 * inih does the INI syntax. We read the lines for it (ini_parse_stream with
 * our own reader) so that we always know the current line number: that is
 * how the key handler can name the line of a semantic error, how overlong
 * lines are reported instead of being split silently, and how an unknown
 * section is caught even when it has no keys. The reader also refuses what
 * inih would take in a way nobody means: an indented line (inih makes it a
 * continuation of the previous value, or silently a key or section) and
 * text after a section header (inih drops it). Only the first error is
 * kept, because later ones are often consequences of it, and reading stops
 * there: a device such as /dev/zero has no end of line or file to skip to.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "log.h"

enum key {
        KEY_LISTEN,
        KEY_MAX_EVENTS,
        KEY_BACKLOG,
        KEY_MAX_CONNECTIONS,
        KEY_IDLE_TIMEOUT,
        KEY_USER,
        KEY_REUSEPORT,
        KEY_LEVEL,
        KEY_PROXY_PROTOCOL,
        KEY_PROXY_FROM,
        KEY_PROXY_TIMEOUT,
        KEY_COUNT,
};

struct key_spec {
        const char *section;
        const char *name;
        uint32_t min, max; /* for numeric keys; max == 0: not numeric */
};

static const struct key_spec keys[KEY_COUNT] = {
        [KEY_LISTEN] = { "server", "listen", 0, 0 },
        [KEY_MAX_EVENTS] = { "server", "max_events", 1, 65536 },
        [KEY_BACKLOG] = { "server", "backlog", 1, 65535 },
        [KEY_MAX_CONNECTIONS] = { "server", "max_connections", 1, 1048576 },
        [KEY_IDLE_TIMEOUT] = { "server", "idle_timeout", 0, 604800 },
        [KEY_USER] = { "server", "user", 0, 0 },
        [KEY_REUSEPORT] = { "server", "reuseport", 0, 0 },
        [KEY_LEVEL] = { "log", "level", 0, 0 },
        [KEY_PROXY_PROTOCOL] = { "server", "proxy_protocol", 0, 0 },
        [KEY_PROXY_FROM] = { "server", "proxy_from", 0, 0 },
        [KEY_PROXY_TIMEOUT] = { "server", "proxy_timeout", 1, 60 },
};

static const char *const sections[] = { "server", "log" };

struct parser {
        FILE *f;
        const char *name;
        struct config *c;
        unsigned line; /* line the reader handed to inih last */
        unsigned seen[KEY_COUNT]; /* line a key was first set on, or 0 */
        unsigned err_line; /* first error, 0 = none */
        int prev_key; /* last key set in this section, or -1: what inih continues */
        unsigned prev_line; /* its line */
        size_t bytes; /* read so far */
        bool too_big; /* more than CONFIG_FILE_MAX bytes */
        bool lookup_user; /* check that [server] user exists (getpwnam) */
        char *err;
};

static void error_at(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void error_at(struct parser *p, const char *fmt, ...)
{
        char msg[CONFIG_ERROR_MAX];
        va_list ap;

        if (p->err_line)
                return;
        va_start(ap, fmt);
        /* va_start is right above: a clang 14 false positive. */
        // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
        (void)vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        p->err_line = p->line;
        (void)snprintf(p->err, CONFIG_ERROR_MAX, "%.200s:%u: %.280s", p->name, p->line, msg);
}

void config_defaults(struct config *c)
{
        char err[64];

        memset(c, 0, sizeof(*c));
        c->n_listen = (unsigned)addr_parse("127.0.0.1:8001", c->listen, err, sizeof(err));
        c->max_events = 1024;
        c->backlog = 4096;
        c->max_connections = 65536;
        c->idle_timeout = 0;
        c->log_level = LOG_INFO;
        c->proxy_timeout = 5;
}

static bool known_section(const char *name, size_t len)
{
        for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
                if (strlen(sections[i]) == len && strncmp(sections[i], name, len) == 0)
                        return true;
        return false;
}

/* White space as inih's ini_lskip() sees it. */
static size_t space_len(const char *s)
{
        size_t n = 0;

        while (s[n] && isspace((unsigned char)s[n]))
                n++;
        return n;
}

/* Length of S without its trailing white space (and newline). */
static int trimmed_len(const char *s)
{
        size_t n = strlen(s);

        while (n > 0 && isspace((unsigned char)s[n - 1]))
                n--;
        return (int)n;
}

/* A section line: a section we know, then nothing but white space or a
 * "; comment" (inih would drop any text after ']'). A section ends what
 * inih could continue. An unknown section is reported here because inih
 * only tells the handler about sections that contain keys. */
static void check_section_line(struct parser *p, const char *s)
{
        const char *end = strchr(s, ']'), *rest;
        int len;

        if (!end)
                return; /* inih reports the syntax error */
        len = (int)(end - s - 1);
        if (!known_section(s + 1, (size_t)len)) {
                error_at(p, "unknown section [%.*s]", len, s + 1);
                return;
        }
        rest = end + 1 + space_len(end + 1);
        if (*rest != '\0' && !(*rest == ';' && rest > end + 1)) {
                error_at(p, "unexpected text after [%.*s]: '%.*s'", len, s + 1, trimmed_len(rest),
                         rest);
                return;
        }
        p->prev_key = -1;
}

/* inih would make an indented line a continuation of the key above it
 * (after a listen line: one more address) or, with no key above it in the
 * section, parse it as a key or section. Neither is what the file says. */
static void refuse_indented(struct parser *p)
{
        if (p->prev_key < 0)
                error_at(p, "indented line (keys and sections must not be indented)");
        else if (p->prev_key == KEY_LISTEN || p->prev_key == KEY_PROXY_FROM)
                error_at(p,
                         "indented line continues '%s' from line %u (continuation lines are not "
                         "allowed; repeat the key)",
                         keys[p->prev_key].name, p->prev_line);
        else
                error_at(p, "indented line continues '%s' from line %u (keys must not be indented)",
                         keys[p->prev_key].name, p->prev_line);
}

/* TEXT is a whole line of the file, BOM aside. */
static void check_line(struct parser *p, const char *text)
{
        const char *start = text + space_len(text);

        if (*start == '\0' || *start == ';' || *start == '#')
                return; /* blank or comment, indented or not */
        if (start != text)
                refuse_indented(p);
        else if (*text == '[')
                check_section_line(p, text);
}

/* After a full buffer: true if the line ends right there (consumes the
 * newline), false with the stream untouched otherwise. */
static bool line_ends_here(FILE *f)
{
        int ch = fgetc(f);

        if (ch == EOF || ch == '\n')
                return true;
        return ungetc(ch, f) == EOF; /* cannot push back: treat as ended */
}

/* How many bytes fgets() just stored: strlen() stops at a NUL byte, the
 * file position does not. */
static size_t bytes_read(FILE *f, long before, const char *str)
{
        long after = ftell(f);

        return before >= 0 && after >= before ? (size_t)(after - before) : strlen(str);
}

/* Hands inih one line at a time and keeps the line number. A line with an
 * error (NUL bytes, too long for inih, or refused by check_line) is
 * replaced by an empty line, and it is the last line read. */
static char *read_line(char *str, int num, void *stream)
{
        struct parser *p = stream;
        long before;
        const char *text;
        size_t len;

        if (p->err_line || p->too_big)
                return NULL;
        before = ftell(p->f);
        if (!fgets(str, num, p->f))
                return NULL;
        p->line++;
        len = bytes_read(p->f, before, str);
        p->bytes += len;
        if (p->bytes > CONFIG_FILE_MAX) {
                p->too_big = true; /* a file that grew, or one without a size */
                return NULL;
        }
        text = str;
        if (p->line == 1 && strncmp(str, "\xEF\xBB\xBF", 3) == 0)
                text += 3; /* inih skips a UTF-8 byte order mark; so do we */
        if (len == 0 || memchr(str, '\0', len)) /* 0: a NUL first, unseekable input */
                error_at(p, "NUL byte in line");
        else if (str[len - 1] != '\n' && !feof(p->f) && !line_ends_here(p->f))
                error_at(p, "line too long (at most %d characters)", num - 1);
        else
                check_line(p, text);
        if (p->err_line)
                str[0] = '\0';
        return str;
}

static int find_key(const char *section, const char *name)
{
        for (int k = 0; k < KEY_COUNT; k++)
                if (strcmp(keys[k].section, section) == 0 && strcmp(keys[k].name, name) == 0)
                        return k;
        return -1;
}

/* Decimal digits only: no sign, no spaces, no hex, no trailing junk. */
static int parse_number(struct parser *p, const struct key_spec *k, const char *v, uint32_t *out)
{
        uint64_t n = 0;
        bool overflow = false;

        for (const char *s = v; *s; s++) {
                if (*s < '0' || *s > '9') {
                        error_at(p, "%s: '%s' is not a number", k->name, v);
                        return -1;
                }
                n = n * 10 + (uint64_t)(*s - '0');
                if (n > k->max)
                        overflow = true, n = (uint64_t)k->max + 1;
        }
        if (overflow || n < k->min || n > k->max) {
                error_at(p, "%s: %s is out of range (%u..%u)", k->name, v, k->min, k->max);
                return -1;
        }
        *out = (uint32_t)n;
        return 0;
}

static void set_listen(struct parser *p, const char *v)
{
        struct config *c = p->c;
        struct addr a[2];
        char why[256];
        int n = addr_parse(v, a, why, sizeof(why));

        if (n < 0) {
                error_at(p, "listen: invalid address '%s': %s", v, why);
                return;
        }
        if (!p->seen[KEY_LISTEN])
                c->n_listen = 0; /* the first listen line replaces the default */
        for (int i = 0; i < n; i++) {
                for (unsigned j = 0; j < c->n_listen; j++) {
                        if (addr_equal(&c->listen[j], &a[i])) {
                                error_at(p, "listen: duplicate address '%s' (also on line %u)", v,
                                         c->listen_line[j]);
                                return;
                        }
                }
                if (c->n_listen == CONFIG_MAX_LISTEN) {
                        error_at(p, "listen: too many addresses (at most %d)", CONFIG_MAX_LISTEN);
                        return;
                }
                c->listen_line[c->n_listen] = p->line;
                c->listen[c->n_listen++] = a[i];
        }
}

static void set_level(struct parser *p, const char *v)
{
        int level = log_level_from_name(v);

        if (level < 0) {
                error_at(p,
                         "level: unknown level '%s' (expected emerg, alert, crit, err, "
                         "warning, notice, info or debug)",
                         v);
                return;
        }
        p->c->log_level = level;
}

/* At a start and with -t the user must exist: a typo is a configuration
 * error at its line, not a start that fails after binding. A reload does
 * not look it up: getpwnam() asks NSS (LDAP, sssd, userdb over varlink),
 * which may stall the loop, and the user in force cannot change without a
 * restart anyway (the same name is kept, another one refused). */
static void set_user(struct parser *p, const char *v)
{
        struct passwd *pw;

        if (strlen(v) > CONFIG_USER_MAX || v[0] == '-' ||
            strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                    strlen(v)) {
                error_at(p, "user: invalid user name '%s'", v);
                return;
        }
        if (!p->lookup_user) {
                memcpy(p->c->user, v, strlen(v) + 1);
                return;
        }
        errno = 0;
        pw = getpwnam(v);
        if (!pw) {
                error_at(p, "user: unknown user '%s'%s%s", v, errno ? ": " : "",
                         errno ? strerror(errno) : "");
                return;
        }
        memcpy(p->c->user, v, strlen(v) + 1); /* length checked above */
}

static void set_reuseport(struct parser *p, const char *v)
{
        if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
                error_at(p, "reuseport: expected yes or no, not '%s'", v);
                return;
        }
        p->c->reuseport = v[0] == 'y';
}

static void set_proxy_protocol(struct parser *p, const char *v)
{
        if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
                error_at(p, "proxy_protocol: expected yes or no, not '%s'", v);
                return;
        }
        p->c->proxy_protocol = v[0] == 'y';
}

/* Repeatable, like listen; a network given twice is a typo. */
static void set_proxy_from(struct parser *p, const char *v)
{
        struct config *c = p->c;
        char why[256], shown[CIDR_TEXT_MAX];
        struct cidr net;

        if (cidr_parse(v, &net, why, sizeof(why)) < 0) {
                error_at(p, "proxy_from: %s", why);
                return;
        }
        for (unsigned i = 0; i < c->n_proxy_from; i++) {
                const struct cidr *o = &c->proxy_from[i];

                if (o->family == net.family && o->prefix == net.prefix &&
                    memcmp(o->addr, net.addr, sizeof(net.addr)) == 0) {
                        cidr_format(&net, shown);
                        error_at(p, "proxy_from: duplicate network %s (also on line %u)", shown,
                                 c->proxy_from_line[i]);
                        return;
                }
        }
        if (c->n_proxy_from == CONFIG_MAX_PROXY_FROM) {
                error_at(p, "proxy_from: too many networks (at most %d)", CONFIG_MAX_PROXY_FROM);
                return;
        }
        c->proxy_from_line[c->n_proxy_from] = p->line;
        c->proxy_from[c->n_proxy_from++] = net;
}

static uint32_t *number_field(struct config *c, int key)
{
        switch (key) {
        case KEY_MAX_EVENTS:
                return &c->max_events;
        case KEY_BACKLOG:
                return &c->backlog;
        case KEY_MAX_CONNECTIONS:
                return &c->max_connections;
        case KEY_IDLE_TIMEOUT:
                return &c->idle_timeout;
        case KEY_PROXY_TIMEOUT:
                return &c->proxy_timeout;
        default:
                return NULL;
        }
}

static void set_key(struct parser *p, int key, const char *value)
{
        uint32_t *field = number_field(p->c, key);

        if (key == KEY_PROXY_PROTOCOL)
                set_proxy_protocol(p, value);
        else if (key == KEY_PROXY_FROM)
                set_proxy_from(p, value);
        else if (key == KEY_LISTEN)
                set_listen(p, value);
        else if (key == KEY_LEVEL)
                set_level(p, value);
        else if (key == KEY_USER)
                set_user(p, value);
        else if (key == KEY_REUSEPORT)
                set_reuseport(p, value);
        else if (field)
                parse_number(p, &keys[key], value, field);
}

/* inih's callback: one key = value. Always returns 1 because we keep our
 * own (better worded) first error; inih then reports only syntax errors. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
        struct parser *p = user;
        int key;

        if (section[0] == '\0') {
                error_at(p, "key '%s' outside of any section", name);
                return 1;
        }
        if (!known_section(section, strlen(section)))
                return 1; /* already reported at the section's line */
        key = find_key(section, name);
        if (key < 0) {
                error_at(p, "unknown key '%s' in section [%s]", name, section);
                return 1;
        }
        if (p->seen[key] && key != KEY_LISTEN && key != KEY_PROXY_FROM) {
                error_at(p, "duplicate key '%s' (first set on line %u)", name, p->seen[key]);
                return 1;
        }
        if (value[0] == '\0') {
                error_at(p, "%s: empty value", name);
                return 1;
        }
        set_key(p, key, value);
        if (!p->seen[key])
                p->seen[key] = p->line;
        p->prev_key = key;
        p->prev_line = p->line;
        return 1;
}

static int parse_stream(struct config *c, FILE *f, const char *name, bool lookup_user,
                        char err[CONFIG_ERROR_MAX])
{
        struct parser p = {
                .f = f, .name = name, .c = c, .prev_key = -1, .lookup_user = lookup_user, .err = err
        };
        int r;

        config_defaults(c);
        err[0] = '\0';
        r = ini_parse_stream(read_line, &p, on_key, &p);
        if (r > 0 && (!p.err_line || (unsigned)r < p.err_line)) {
                (void)snprintf(err, CONFIG_ERROR_MAX,
                               "%s:%d: syntax error (expected [section], key = value or a comment)",
                               name, r);
                return -1;
        }
        if (r < 0) {
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: out of memory while parsing", name);
                return -1;
        }
        if (ferror(f)) {
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: read error: %s", name, strerror(errno));
                return -1;
        }
        if (p.too_big) {
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: larger than %d bytes", name,
                               CONFIG_FILE_MAX);
                return -1;
        }
        return p.err_line ? -1 : 0;
}

int config_parse_stream(struct config *c, FILE *f, const char *name, char err[CONFIG_ERROR_MAX])
{
        return parse_stream(c, f, name, true, err);
}

/* O_NONBLOCK: open() of a FIFO would wait for a writer, and of a file with
 * a lease for the lease to break. It stays set: a regular file's data is
 * read without waiting anyway, and an odd file system that answered EAGAIN
 * would give a read error, never a stall of the loop. Returns an fd open on
 * a regular file of at most CONFIG_FILE_MAX bytes, or -1 with ERR set. */
static int open_regular(const char *path, char err[CONFIG_ERROR_MAX])
{
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        struct stat st;

        if (fd < 0) {
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: cannot open: %s", path, strerror(errno));
                return -1;
        }
        if (fstat(fd, &st) < 0)
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: cannot stat: %s", path, strerror(errno));
        else if (!S_ISREG(st.st_mode))
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: not a regular file", path);
        else if (st.st_size > CONFIG_FILE_MAX)
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: larger than %d bytes", path,
                               CONFIG_FILE_MAX);
        else
                return fd;
        (void)close(fd);
        return -1;
}

int config_load(struct config *c, const char *path, bool lookup_user, char err[CONFIG_ERROR_MAX])
{
        int fd = open_regular(path, err);
        FILE *f;
        int r;

        if (fd < 0)
                return -1;
        f = fdopen(fd, "r");
        if (!f) {
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: cannot open: %s", path, strerror(errno));
                (void)close(fd);
                return -1;
        }
        r = parse_stream(c, f, path, lookup_user, err);
        if (fclose(f) != 0 && r == 0) {
                (void)snprintf(err, CONFIG_ERROR_MAX, "%s: close: %s", path, strerror(errno));
                return -1;
        }
        return r;
}
