/* test-config.c - the INI loader: defaults, every key, and every error with
 * its exact "FILE:LINE: message". */
#include <stdlib.h>

#include "check.h"
#include "config.h"
#include "log.h"

struct bad {
        const char *ini;
        const char *error; /* exact, after "t.ini:" */
};

static const struct bad bads[] = {
        { "[nope]\n", "1: unknown section [nope]" },
        { "[server]\nlisten = 127.0.0.1:1\n[extra]\nfoo = 1\n", "3: unknown section [extra]" },
        { "foo = 1\n", "1: key 'foo' outside of any section" },
        { "[server]\nport = 80\n", "2: unknown key 'port' in section [server]" },
        { "[log]\nmax_events = 1\n", "2: unknown key 'max_events' in section [log]" },
        { "[server]\nbacklog = 1\nbacklog = 2\n",
          "3: duplicate key 'backlog' (first set on line 2)" },
        { "[log]\nlevel = info\n[log]\nlevel = debug\n",
          "4: duplicate key 'level' (first set on line 2)" },
        { "[server]\nbacklog =\n", "2: backlog: empty value" },
        { "[server]\nlisten = \n", "2: listen: empty value" },
        { "[server]\nmax_events = abc\n", "2: max_events: 'abc' is not a number" },
        { "[server]\nmax_events = 12x\n", "2: max_events: '12x' is not a number" },
        { "[server]\nmax_events = -1\n", "2: max_events: '-1' is not a number" },
        { "[server]\nmax_events = +5\n", "2: max_events: '+5' is not a number" },
        { "[server]\nmax_events = 0x10\n", "2: max_events: '0x10' is not a number" },
        { "[server]\nmax_events = 1 2\n", "2: max_events: '1 2' is not a number" },
        { "[server]\nmax_events = 0\n", "2: max_events: 0 is out of range (1..65536)" },
        { "[server]\nmax_events = 65537\n", "2: max_events: 65537 is out of range (1..65536)" },
        { "[server]\nmax_events = 99999999999999999999999\n",
          "2: max_events: 99999999999999999999999 is out of range (1..65536)" },
        { "[server]\nbacklog = 0\n", "2: backlog: 0 is out of range (1..65535)" },
        { "[server]\nmax_connections = 0\n", "2: max_connections: 0 is out of range (1..1048576)" },
        { "[server]\nmax_connections = 1048577\n",
          "2: max_connections: 1048577 is out of range (1..1048576)" },
        { "[server]\nidle_timeout = 604801\n",
          "2: idle_timeout: 604801 is out of range (0..604800)" },
        { "[server]\nidle_timeout = 1.5\n", "2: idle_timeout: '1.5' is not a number" },
        { "[log]\nlevel = loud\n",
          "2: level: unknown level 'loud' (expected emerg, alert, crit, err, warning, notice, "
          "info or debug)" },
        { "[log]\nlevel = INFO\n",
          "2: level: unknown level 'INFO' (expected emerg, alert, crit, err, warning, notice, "
          "info or debug)" },
        { "[server]\nlisten = localhost:80\n",
          "2: listen: invalid address 'localhost:80': invalid IPv4 address 'localhost' (expected "
          "A.B.C.D:PORT, [IPv6]:PORT or *:PORT; names are not resolved)" },
        { "[server]\nlisten = 127.0.0.1:70000\n",
          "2: listen: invalid address '127.0.0.1:70000': port '70000' is out of range (0..65535)" },
        { "[server]\nlisten = [::1]:1\nlisten = [::1]:1\n",
          "3: listen: duplicate address '[::1]:1' (also on line 2)" },
        { "[server]\nlisten = 0.0.0.0:5\nlisten = *:5\n",
          "3: listen: duplicate address '*:5' (also on line 2)" },
        { "[server\nlisten = 127.0.0.1:1\n",
          "1: syntax error (expected [section], key = value or a comment)" },
        { "[server]\njust some words\n",
          "2: syntax error (expected [section], key = value or a comment)" },
        { "[server]\nbacklog = 5\n  idle_timeout = 3\n",
          "3: indented line continues 'backlog' from line 2 (keys must not be indented)" },
        { "[server]\nbacklog = 5\n[log]\nlevel = info\n  warning\n",
          "5: indented line continues 'level' from line 4 (keys must not be indented)" },
        { "; comment\n\n# another\n[server]\nmax_events = 0 ; inline comment\n",
          "5: max_events: 0 is out of range (1..65536)" },
        { "[server]\nuser = nosuchuser-epolld\n", "2: user: unknown user 'nosuchuser-epolld'" },
        { "[server]\nuser = a b\n", "2: user: invalid user name 'a b'" },
        { "[server]\nuser = -x\n", "2: user: invalid user name '-x'" },
        { "[server]\nuser = nobody\nuser = nobody\n",
          "3: duplicate key 'user' (first set on line 2)" },
        /* No line is indented but blank lines and comments: inih would make
         * it a continuation of the previous value, or a key or section. */
        { "[server]\nlisten = 127.0.0.1:1\n  127.0.0.1:2\n",
          "3: indented line continues 'listen' from line 2 (continuation lines are not allowed; "
          "repeat the key)" },
        { "[server]\nlisten = 127.0.0.1:1\n  [::1]:2\n",
          "3: indented line continues 'listen' from line 2 (continuation lines are not allowed; "
          "repeat the key)" },
        { "[server]\nlisten = 127.0.0.1:1\n\t[log]\nlevel = info\n",
          "3: indented line continues 'listen' from line 2 (continuation lines are not allowed; "
          "repeat the key)" },
        { "  max_events = 5\n", "1: indented line (keys and sections must not be indented)" },
        { "[server]\n  max_events = 5\n",
          "2: indented line (keys and sections must not be indented)" },
        { "[server]\n\tbacklog = 5\n",
          "2: indented line (keys and sections must not be indented)" },
        { "[server]\nbacklog = 5\n[log]\n level = info\n",
          "4: indented line (keys and sections must not be indented)" },
        { " [server]\n", "1: indented line (keys and sections must not be indented)" },
        { "[server]\n  garbage\n", "2: indented line (keys and sections must not be indented)" },
        /* a section line holds the section and at most a comment */
        { "[server] junk\n", "1: unexpected text after [server]: 'junk'" },
        { "[server]junk\nbacklog = 1\n", "1: unexpected text after [server]: 'junk'" },
        { "[server]]\n", "1: unexpected text after [server]: ']'" },
        { "[log] # not a comment here\n",
          "1: unexpected text after [log]: '# not a comment here'" },
        { "[server];x\n", "1: unexpected text after [server]: ';x'" },
        { "[server]\n[log] level = info\n", "2: unexpected text after [log]: 'level = info'" },
        { "[server]\nlisten = *:0\n",
          "2: listen: invalid address '*:0': *:0 would bind IPv4 and IPv6 on different ports; "
          "use 0.0.0.0:0 or [::]:0" },
        { "[server]\nlisten = [::ffff:127.0.0.1]:1\n",
          "2: listen: invalid address '[::ffff:127.0.0.1]:1': IPv4-mapped address "
          "'::ffff:127.0.0.1' cannot be bound (IPv6 sockets are IPV6_V6ONLY); use 127.0.0.1:PORT" },
        /* only the first error is reported, even after a syntax error */
        { "[server]\nbogus\nport = 1\n",
          "2: syntax error (expected [section], key = value or a comment)" },
        { "[server]\nport = 1\nbogus\n", "2: unknown key 'port' in section [server]" },
        /* the PROXY protocol */
        { "[server]\nproxy_protocol = on\n", "2: proxy_protocol: expected yes or no, not 'on'" },
        { "[server]\nproxy_protocol = YES\n", "2: proxy_protocol: expected yes or no, not 'YES'" },
        { "[server]\nproxy_protocol = no\nproxy_protocol = yes\n",
          "3: duplicate key 'proxy_protocol' (first set on line 2)" },
        { "[server]\nproxy_timeout = 0\n", "2: proxy_timeout: 0 is out of range (1..60)" },
        { "[server]\nproxy_timeout = 61\n", "2: proxy_timeout: 61 is out of range (1..60)" },
        { "[server]\nproxy_timeout = 5s\n", "2: proxy_timeout: '5s' is not a number" },
        { "[server]\nproxy_from = lb.example\n",
          "2: proxy_from: invalid address 'lb.example' (expected A.B.C.D[/N] or IPv6[/N]; names "
          "are not resolved)" },
        { "[server]\nproxy_from = 10.0.0.1/8\n",
          "2: proxy_from: host bits set in '10.0.0.1/8' (the network is 10.0.0.0/8)" },
        { "[server]\nproxy_from = 10.0.0.0/33\n",
          "2: proxy_from: prefix length '33' is out of range (0..32)" },
        { "[server]\nproxy_from = 10.0.0.0/\n", "2: proxy_from: missing prefix length after '/'" },
        { "[server]\nproxy_from = 10.0.0.0/8\nproxy_from = ::ffff:10.0.0.0/104\n",
          "3: proxy_from: duplicate network 10.0.0.0/8 (also on line 2)" },
        { "[server]\nproxy_from = ::1\n  10.0.0.1\n",
          "3: indented line continues 'proxy_from' from line 2 (continuation lines are not "
          "allowed; repeat the key)" },
        { "[server]\nproxy_from =\n", "2: proxy_from: empty value" },
        { "[log]\nproxy_protocol = yes\n", "2: unknown key 'proxy_protocol' in section [log]" },
};

static void test_bad(const struct bad *b)
{
        char err[CONFIG_ERROR_MAX], want[CONFIG_ERROR_MAX];
        struct config c;
        FILE *f = fmemopen((void *)b->ini, strlen(b->ini), "r");
        int r = config_parse_stream(&c, f, "t.ini", err);

        fclose(f);
        snprintf(want, sizeof(want), "t.ini:%s", b->error);
        CHECK(r == -1, "accepted: %s", b->ini);
        CHECK_STR(err, want, b->ini);
}

static int parse(const char *ini, struct config *c, char *err)
{
        FILE *f = fmemopen((void *)ini, strlen(ini), "r");
        int r = config_parse_stream(c, f, "t.ini", err);

        fclose(f);
        return r;
}

/* Lines that look odd but are fine: comments and blank lines may be
 * indented, a section line may end in white space or a ; comment. */
static void test_good_lines(void)
{
        static const char *const goods[] = {
                "[server] ; the server\nbacklog = 3\n",
                "[server]\t\nbacklog = 3\n",
                "[server]\r\nbacklog = 3\r\n",
                "[server]\n  ; an indented comment\n\t# another\nbacklog = 3\n \t \n",
                "[server]\nlisten = 127.0.0.1:1\n   \nlisten = 127.0.0.1:2\nbacklog = 3\n",
        };
        char err[CONFIG_ERROR_MAX];
        struct config c;

        for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++)
                CHECK(parse(goods[i], &c, err) == 0 && c.backlog == 3, "refused: %s: %s", goods[i],
                      err);
}

static void test_defaults(void)
{
        char err[CONFIG_ERROR_MAX], buf[ADDR_TEXT_MAX];
        struct config c;

        CHECK(parse("", &c, err) == 0, "empty file: %s", err);
        CHECK(c.n_listen == 1, "default listen count %u", c.n_listen);
        addr_format(&c.listen[0].u.sa, buf);
        CHECK_STR(buf, "127.0.0.1:8001", "default listen");
        CHECK(c.max_events == 1024 && c.backlog == 4096 && c.max_connections == 65536 &&
                      c.idle_timeout == 0 && c.log_level == LOG_INFO,
              "defaults %u %u %u %u %d", c.max_events, c.backlog, c.max_connections, c.idle_timeout,
              c.log_level);
        CHECK(!c.proxy_protocol && c.proxy_timeout == 5 && c.n_proxy_from == 0,
              "proxy defaults %d %u %u", c.proxy_protocol, c.proxy_timeout, c.n_proxy_from);
}

static void test_proxy_keys(void)
{
        static const char ini[] = "[server]\n"
                                  "proxy_protocol = yes\n"
                                  "proxy_timeout = 60\n"
                                  "proxy_from = 10.0.0.0/8\n"
                                  "proxy_from = 2001:db8::/32\n"
                                  "proxy_from = ::ffff:192.0.2.7\n";
        char err[CONFIG_ERROR_MAX], text[CIDR_TEXT_MAX], many[64 * 32 + 16] = "[server]\n";
        struct config c;

        CHECK(parse(ini, &c, err) == 0, "proxy keys: %s", err);
        CHECK(c.proxy_protocol && c.proxy_timeout == 60 && c.n_proxy_from == 3,
              "proxy values %d %u %u", c.proxy_protocol, c.proxy_timeout, c.n_proxy_from);
        cidr_format(&c.proxy_from[1], text);
        CHECK_STR(text, "2001:db8::/32", "proxy_from 2");
        cidr_format(&c.proxy_from[2], text);
        CHECK_STR(text, "192.0.2.7/32", "proxy_from 3 (v4-mapped is IPv4)");
        CHECK(c.proxy_from_line[2] == 6, "line of proxy_from 3: %u", c.proxy_from_line[2]);
        CHECK(parse("[server]\nproxy_protocol = no\n", &c, err) == 0 && !c.proxy_protocol,
              "proxy_protocol = no: %s", err);
        for (int i = 0; i <= CONFIG_MAX_PROXY_FROM; i++)
                snprintf(many + strlen(many), sizeof(many) - strlen(many),
                         "proxy_from = 10.0.%d.0/24\n", i);
        CHECK(parse(many, &c, err) == -1, "65 proxy_from accepted");
        CHECK_STR(err, "t.ini:66: proxy_from: too many networks (at most 64)", "65 proxy_from");
}

static void test_every_key(void)
{
        static const char ini[] = "\xEF\xBB\xBF; a BOM and comments are fine\n"
                                  "[server]\n"
                                  "listen = 127.0.0.2:9000 ; first replaces the default\n"
                                  "listen = [::1]:9001\n"
                                  "listen = *:9002\n"
                                  "max_events = 65536\n"
                                  "backlog = 1\n"
                                  "max_connections = 1048576\n"
                                  "idle_timeout = 604800\n"
                                  "user = nobody\n"
                                  "[log]\n"
                                  "level = debug\n";
        char err[CONFIG_ERROR_MAX], buf[ADDR_TEXT_MAX];
        struct config c;

        CHECK(parse(ini, &c, err) == 0, "every key: %s", err);
        CHECK(c.n_listen == 4, "listen count %u", c.n_listen);
        addr_format(&c.listen[0].u.sa, buf);
        CHECK_STR(buf, "127.0.0.2:9000", "listen 1");
        addr_format(&c.listen[3].u.sa, buf);
        CHECK_STR(buf, "[::]:9002", "listen 4");
        CHECK_STR(c.user, "nobody", "user");
        CHECK(c.listen_line[1] == 4, "line of listen 2: %u", c.listen_line[1]);
        CHECK(c.max_events == 65536 && c.backlog == 1 && c.max_connections == 1048576 &&
                      c.idle_timeout == 604800 && c.log_level == LOG_DEBUG,
              "values %u %u %u %u %d", c.max_events, c.backlog, c.max_connections, c.idle_timeout,
              c.log_level);
}

/* A comment line of LEN characters, then "backlog = 7" unless LAST. */
static int parse_line_of(size_t len, bool last, struct config *c, char *err)
{
        char ini[600] = "[server]\n";
        size_t at = strlen(ini);

        memset(ini + at, '#', len);
        strcpy(ini + at + len, last ? "" : "\nbacklog = 7\n");
        return parse(ini, c, err);
}

static void test_long_lines(void)
{
        char err[CONFIG_ERROR_MAX];
        struct config c;

        /* inih reads at most 199 characters of a line, its newline aside. */
        CHECK(parse_line_of(199, false, &c, err) == 0 && c.backlog == 7, "199 chars: %s", err);
        CHECK(parse_line_of(199, true, &c, err) == 0, "199 chars at the end: %s", err);
        CHECK(parse_line_of(200, false, &c, err) == -1, "200-char line accepted");
        CHECK_STR(err, "t.ini:2: line too long (at most 199 characters)", "200 chars");
        CHECK(parse_line_of(200, true, &c, err) == -1, "200-char last line accepted");
        CHECK(parse_line_of(400, false, &c, err) == -1, "400-char line accepted");
        CHECK_STR(err, "t.ini:2: line too long (at most 199 characters)", "400 chars");
}

static void test_nul_byte(void)
{
        static const char ini[] = "[server]\nbacklog = 1\0junk\nbacklog = 2\n";
        static const char at_end[] = "[server]\nbacklog = 1\0junk";
        char err[CONFIG_ERROR_MAX];
        struct config c;
        FILE *f = fmemopen((void *)ini, sizeof(ini) - 1, "r");
        int r = config_parse_stream(&c, f, "t.ini", err);

        fclose(f);
        CHECK(r == -1, "NUL byte accepted");
        CHECK_STR(err, "t.ini:2: NUL byte in line", "NUL byte");
        f = fmemopen((void *)at_end, sizeof(at_end) - 1, "r");
        r = config_parse_stream(&c, f, "t.ini", err);
        fclose(f);
        CHECK(r == -1, "NUL byte in the last line accepted");
        CHECK_STR(err, "t.ini:2: NUL byte in line", "NUL byte, last line");
}

/* An endless stream of BYTE: /dev/zero, or a device that never ends. */
struct endless {
        char byte;
        size_t served;
};

static ssize_t endless_read(void *cookie, char *buf, size_t size)
{
        struct endless *e = cookie;

        memset(buf, e->byte, size);
        e->served += size;
        return (ssize_t)size;
}

static void test_stops_at_first_error(void)
{
        struct endless e = { .byte = '\0' };
        FILE *f = fopencookie(&e, "r", (cookie_io_functions_t){ .read = endless_read });
        char err[CONFIG_ERROR_MAX];
        struct config c;
        int r = config_parse_stream(&c, f, "t.ini", err);

        fclose(f);
        CHECK(r == -1, "endless NUL bytes accepted");
        CHECK_STR(err, "t.ini:1: NUL byte in line", "endless NUL bytes");
        CHECK(e.served <= 65536, "read %zu bytes after the first error", e.served);
}

static void test_size_limit(void)
{
        static const char line[] = "# 40 characters of comment, newline incl\n";
        size_t size = CONFIG_FILE_MAX + 1, n = sizeof(line) - 1;
        struct endless e = { .byte = '#' };
        char *ini = malloc(size), err[CONFIG_ERROR_MAX];
        struct config c;
        FILE *f;
        int r;

        CHECK(ini != NULL, "malloc");
        if (!ini)
                return;
        for (size_t at = 0; at < size; at += n)
                memcpy(ini + at, line, size - at < n ? size - at : n);
        ini[size - 1] = '\n';
        f = fmemopen(ini, size - 1, "r");
        r = config_parse_stream(&c, f, "t.ini", err);
        fclose(f);
        CHECK(r == 0, "a file of exactly %d bytes: %s", CONFIG_FILE_MAX, err);
        f = fmemopen(ini, size, "r");
        r = config_parse_stream(&c, f, "t.ini", err);
        fclose(f);
        CHECK(r == -1, "a file of %zu bytes accepted", size);
        CHECK_STR(err, "t.ini: larger than 1048576 bytes", "one byte too many");
        free(ini);
        /* "#####..." forever: one line too long, then nothing more is read */
        f = fopencookie(&e, "r", (cookie_io_functions_t){ .read = endless_read });
        r = config_parse_stream(&c, f, "t.ini", err);
        fclose(f);
        CHECK_STR(err, "t.ini:1: line too long (at most 199 characters)", "endless line");
        CHECK(e.served <= 65536, "read %zu bytes after the first error", e.served);
}

static void test_missing_file(void)
{
        char err[CONFIG_ERROR_MAX];
        struct config c;

        CHECK(config_load(&c, "/nonexistent/epolld.ini", true, err) == -1, "missing file loaded");
        CHECK_STR(err, "/nonexistent/epolld.ini: cannot open: No such file or directory",
                  "missing file");
        CHECK(config_load(&c, "/", true, err) == -1, "a directory loaded");
        CHECK_STR(err, "/: not a regular file", "directory");
        CHECK(config_load(&c, "/dev/zero", true, err) == -1, "/dev/zero loaded");
        CHECK_STR(err, "/dev/zero: not a regular file", "/dev/zero");
}

int main(void)
{
        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++)
                test_bad(&bads[i]);
        test_good_lines();
        test_defaults();
        test_every_key();
        test_proxy_keys();
        test_long_lines();
        test_nul_byte();
        test_stops_at_first_error();
        test_size_limit();
        test_missing_file();
        return check_summary();
}
