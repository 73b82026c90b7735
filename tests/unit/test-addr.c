/* test-addr.c - the listen address parser and printer. */
#include <arpa/inet.h>

#include "addr.h"
#include "check.h"

struct good {
        const char *text;
        int n;
        const char *printed[2];
};

static const struct good goods[] = {
        { "127.0.0.1:8001", 1, { "127.0.0.1:8001" } },
        { "0.0.0.0:0", 1, { "0.0.0.0:0" } },
        { "255.255.255.255:65535", 1, { "255.255.255.255:65535" } },
        { "10.1.2.3:080", 1, { "10.1.2.3:80" } },
        { "[::1]:8001", 1, { "[::1]:8001" } },
        { "[::]:1", 1, { "[::]:1" } },
        { "[2001:db8::42]:443", 1, { "[2001:db8::42]:443" } },
        { "[::127.0.0.1]:9", 1, { "[::127.0.0.1]:9" } }, /* IPv4-compatible: not mapped */
        { "[::ffff:0:127.0.0.1]:9", 1, { "[::ffff:0:7f00:1]:9" } }, /* IPv4-translated */
        { "*:1", 2, { "0.0.0.0:1", "[::]:1" } },
        { "*:65535", 2, { "0.0.0.0:65535", "[::]:65535" } },
        { "*:8001", 2, { "0.0.0.0:8001", "[::]:8001" } },
};

struct bad {
        const char *text;
        const char *why;
};

#define FORMS "expected A.B.C.D:PORT, [IPv6]:PORT or *:PORT"
static const struct bad bads[] = {
        { "", "missing ':PORT' (" FORMS ")" },
        { ":80", "invalid IPv4 address '' (" FORMS "; names are not resolved)" },
        { "127.0.0.1", "missing ':PORT' (" FORMS ")" },
        { "127.0.0.1:", "missing port after ':' (" FORMS ")" },
        { "127.0.0.1:65536", "port '65536' is out of range (0..65535)" },
        { "127.0.0.1:99999999999999999999",
          "port '99999999999999999999' is out of range (0..65535)" },
        { "127.0.0.1:-1", "port '-1' is not a number" },
        { "127.0.0.1:80x", "port '80x' is not a number" },
        { "127.0.0.1: 80", "port ' 80' is not a number" },
        { "localhost:80", "invalid IPv4 address 'localhost' (" FORMS "; names are not resolved)" },
        { "1.2.3:80", "invalid IPv4 address '1.2.3' (" FORMS "; names are not resolved)" },
        { "256.1.1.1:80", "invalid IPv4 address '256.1.1.1' (" FORMS "; names are not resolved)" },
        { "::1:80", "IPv6 addresses need brackets, as in [::1]:PORT" },
        { "[::1]", "missing ':PORT' after ']' (" FORMS ")" },
        { "[::1:80", "missing ']' after IPv6 address (" FORMS ")" },
        { "[]:80", "invalid IPv6 address ''" },
        { "[::g]:80", "invalid IPv6 address '::g'" },
        { "[fe80::1%eth0]:80", "invalid IPv6 address 'fe80::1%eth0'" },
        { "[::1]:", "missing port after ':' (" FORMS ")" },
        { "*", "missing ':PORT' after '*' (" FORMS ")" },
        { "*:", "missing port after ':' (" FORMS ")" },
        { "*:http", "port 'http' is not a number" },
        /* one port for both families: the kernel would pick two */
        { "*:0", "*:0 would bind IPv4 and IPv6 on different ports; use 0.0.0.0:0 or [::]:0" },
        { "*:00", "*:0 would bind IPv4 and IPv6 on different ports; use 0.0.0.0:0 or [::]:0" },
        /* an IPV6_V6ONLY socket cannot bind an IPv4-mapped address */
        { "[::ffff:127.0.0.1]:9", "IPv4-mapped address '::ffff:127.0.0.1' cannot be bound (IPv6 "
                                  "sockets are IPV6_V6ONLY); use 127.0.0.1:PORT" },
        { "[::ffff:7f00:1]:9", "IPv4-mapped address '::ffff:7f00:1' cannot be bound (IPv6 "
                               "sockets are IPV6_V6ONLY); use 127.0.0.1:PORT" },
        { "[0:0:0:0:0:ffff:0.0.0.0]:0", "IPv4-mapped address '0:0:0:0:0:ffff:0.0.0.0' cannot be "
                                        "bound (IPv6 sockets are IPV6_V6ONLY); use 0.0.0.0:PORT" },
};

static void test_good(const struct good *g)
{
        struct addr a[2];
        char err[256] = "", buf[ADDR_TEXT_MAX];
        int n = addr_parse(g->text, a, err, sizeof(err));

        CHECK(n == g->n, "%s: parsed %d addresses, want %d (%s)", g->text, n, g->n, err);
        for (int i = 0; i < n && i < g->n; i++) {
                addr_format(&a[i].u.sa, buf);
                CHECK_STR(buf, g->printed[i], g->text);
        }
}

static void test_bad(const struct bad *b)
{
        struct addr a[2];
        char err[256] = "";
        int n = addr_parse(b->text, a, err, sizeof(err));

        CHECK(n == -1, "'%s' was accepted", b->text);
        CHECK_STR(err, b->why, b->text);
}

static void test_host_and_equal(void)
{
        struct addr a[2], b[2];
        char err[256], host[ADDR_TEXT_MAX];
        unsigned port;

        addr_parse("[::1]:8001", a, err, sizeof(err));
        addr_host(&a[0].u.sa, host, &port);
        CHECK_STR(host, "::1", "addr_host of [::1]:8001");
        CHECK(port == 8001, "port %u", port);
        addr_parse("[0::1]:8001", b, err, sizeof(err));
        CHECK(addr_equal(&a[0], &b[0]), "[::1] and [0::1] differ");
        addr_parse("[::1]:8002", b, err, sizeof(err));
        CHECK(!addr_equal(&a[0], &b[0]), "ports 8001 and 8002 compare equal");
}

int main(void)
{
        for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++)
                test_good(&goods[i]);
        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++)
                test_bad(&bads[i]);
        test_host_and_equal();
        return check_summary();
}
