/* fuzz-config.c - libFuzzer target for the INI loader, end to end: bytes ->
 * fmemopen -> config_parse_stream -> a config or "NAME:LINE: message".
 *
 * Beyond "does not crash", every input is checked against what config.h and
 * the README promise, and any violation aborts (a finding):
 *  - success: no message, 1..64 listen addresses, each a well-formed IPv4 or
 *    IPv6 address (not IPv4-mapped) that prints and re-parses to itself, no
 *    two equal, each on a line of the input (or the built-in default's line
 *    0), and every number within its documented range, and user "" or a
 *    valid name, and no line indented but blank lines and comments, no text
 *    after a section header but a "; comment";
 *  - failure: a NUL-terminated message that starts with "NAME:" and goes on
 *    with " message" or "LINE: message", LINE being a line of the input;
 *  - a NUL byte anywhere is refused ("NUL byte in line");
 *  - a UTF-8 byte order mark in front changes nothing: same verdict, same
 *    message, same configuration (inih strips it; we must not see it).
 * The last two are metamorphic: they compare runs instead of trusting one.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "config.h"
#include "log.h"

#define NAME "fuzz.ini"
#define BOM "\xEF\xBB\xBF"
/* inih takes lines of up to 198 characters: keep the BOM variant below it. */
#define BOM_FIRST_LINE_MAX 190
#define USER_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct result {
        int r;
        struct config c;
        char err[CONFIG_ERROR_MAX];
};

static void fail(const char *what, const struct result *res)
{
        fprintf(stderr, "fuzz-config: invariant violated: %s (r=%d, err='%.*s')\n", what, res->r,
                CONFIG_ERROR_MAX, res->err);
        abort();
}

static void parse(const uint8_t *data, size_t size, struct result *res)
{
        /* fmemopen gets a copy: the parser must not depend on bytes past SIZE. */
        char *copy = malloc(size ? size : 1);
        FILE *f;

        if (!copy)
                abort();
        memcpy(copy, data, size);
        f = fmemopen(copy, size, "r");
        if (!f)
                abort();
        memset(res, 0, sizeof(*res));
        memset(res->err, 'x', sizeof(res->err)); /* no NUL unless the parser writes one */
        res->r = config_parse_stream(&res->c, f, NAME, res->err);
        fclose(f);
        free(copy);
}

static unsigned count_lines(const uint8_t *data, size_t size)
{
        unsigned n = 1;

        for (size_t i = 0; i < size; i++)
                n += data[i] == '\n';
        return n;
}

static void check_in_range(const struct result *res, uint32_t v, uint32_t min, uint32_t max,
                           const char *what)
{
        if (v < min || v > max)
                fail(what, res);
}

static void check_addr(const struct result *res, const struct addr *a)
{
        char text[ADDR_TEXT_MAX], err[256];
        struct addr again[2];

        if (!(a->u.sa.sa_family == AF_INET && a->len == sizeof(a->u.in)) &&
            !(a->u.sa.sa_family == AF_INET6 && a->len == sizeof(a->u.in6)))
                fail("listen address with a bad family or length", res);
        if (a->u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr))
                fail("IPv4-mapped listen address accepted: an IPV6_V6ONLY socket cannot bind it",
                     res);
        addr_format(&a->u.sa, text);
        if (addr_parse(text, again, err, sizeof(err)) != 1 || !addr_equal(a, &again[0]))
                fail("listen address does not re-parse to itself", res);
}

/* Does the line [AT, END) hold what the parser must refuse? An indented
 * line that is not blank or a comment (inih would continue the previous
 * value with it, or take it as a key or section), or text after a section
 * header other than a "; comment" (inih would drop it). */
static bool refused_line(const uint8_t *data, size_t at, size_t end)
{
        size_t text = at;

        while (text < end && isspace(data[text]))
                text++;
        if (text == end || data[text] == ';' || data[text] == '#')
                return false;
        if (text > at)
                return true;
        if (data[at] != '[')
                return false;
        while (at < end && data[at] != ']')
                at++;
        if (at == end)
                return false; /* a syntax error anyway */
        text = ++at;
        while (text < end && isspace(data[text]))
                text++;
        return text < end && !(data[text] == ';' && text > at);
}

static bool has_refused_line(const uint8_t *data, size_t size)
{
        size_t at = size >= 3 && memcmp(data, BOM, 3) == 0 ? 3 : 0; /* a BOM is no indent */

        while (at < size) {
                const uint8_t *nl = memchr(data + at, '\n', size - at);
                size_t end = nl ? (size_t)(nl - data) : size;

                if (refused_line(data, at, end))
                        return true;
                at = end + 1;
        }
        return false;
}

static void check_success(const struct result *res, unsigned lines)
{
        const struct config *c = &res->c;

        if (res->err[0] != '\0')
                fail("success with a message", res);
        if (c->n_listen < 1 || c->n_listen > CONFIG_MAX_LISTEN)
                fail("n_listen out of 1..64", res);
        for (unsigned i = 0; i < c->n_listen; i++) {
                check_addr(res, &c->listen[i]);
                if (c->listen_line[i] > lines)
                        fail("listen_line beyond the input", res);
                for (unsigned j = 0; j < i; j++)
                        if (addr_equal(&c->listen[i], &c->listen[j]))
                                fail("duplicate listen address accepted", res);
        }
        check_in_range(res, c->max_events, 1, 65536, "max_events out of range");
        check_in_range(res, c->backlog, 1, 65535, "backlog out of range");
        check_in_range(res, c->max_connections, 1, 1048576, "max_connections out of range");
        check_in_range(res, c->idle_timeout, 0, 604800, "idle_timeout out of range");
        if (c->log_level < LOG_EMERG || c->log_level > LOG_DEBUG)
                fail("log_level out of range", res);
        if (!memchr(c->user, '\0', sizeof(c->user)) || c->user[0] == '-' ||
            strspn(c->user, USER_CHARS) != strlen(c->user))
                fail("user not a NUL-terminated valid name", res);
}

static void check_failure(const struct result *res, unsigned lines)
{
        const char *p = res->err + strlen(NAME ":");
        unsigned long line = 0;

        if (!memchr(res->err, '\0', sizeof(res->err)))
                fail("message not NUL-terminated", res);
        if (strncmp(res->err, NAME ":", strlen(NAME ":")) != 0)
                fail("message does not start with NAME:", res);
        if (*p == ' ') {
                if (p[1] == '\0')
                        fail("empty message", res);
                return; /* "NAME: message" */
        }
        if (*p < '1' || *p > '9')
                fail("neither 'NAME: message' nor 'NAME:LINE: message'", res);
        while (*p >= '0' && *p <= '9' && line <= lines)
                line = line * 10 + (unsigned long)(*p++ - '0');
        if (line < 1 || line > lines)
                fail("LINE is not a line of the input", res);
        if (p[0] != ':' || p[1] != ' ' || p[2] == '\0')
                fail("no ': message' after LINE", res);
}

static void check_same(const struct result *a, const struct result *b)
{
        if (a->r != b->r || strcmp(a->err, b->err) != 0)
                fail("a leading BOM changed the verdict or the message", b);
        if (a->r == 0 && memcmp(&a->c, &b->c, sizeof(a->c)) != 0)
                fail("a leading BOM changed the configuration", b);
}

/* The same text behind a BOM, if its first line leaves room for one. */
static void check_bom(const uint8_t *data, size_t size, const struct result *plain)
{
        const uint8_t *nl = memchr(data, '\n', size);
        size_t first = nl ? (size_t)(nl - data) : size;
        struct result *res;
        uint8_t *with;

        if (first > BOM_FIRST_LINE_MAX || memchr(data, '\0', first) ||
            (size >= 3 && memcmp(data, BOM, 3) == 0))
                return;
        with = malloc(size + 3);
        res = malloc(sizeof(*res));
        if (!with || !res)
                abort();
        memcpy(with, BOM, 3);
        memcpy(with + 3, data, size);
        parse(with, size + 3, res);
        check_same(plain, res);
        free(res);
        free(with);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static struct result res; /* 4 KiB and more: keep it off the stack */
        unsigned lines = count_lines(data, size);

        parse(data, size, &res);
        if (res.r == 0)
                check_success(&res, lines);
        else if (res.r == -1)
                check_failure(&res, lines);
        else
                fail("returned neither 0 nor -1", &res);
        if (memchr(data, '\0', size) && res.r == 0)
                fail("a NUL byte was accepted", &res);
        if (res.r == 0 && has_refused_line(data, size))
                fail("an indented line or text after a section header was accepted", &res);
        check_bom(data, size, &res);
        return 0;
}
