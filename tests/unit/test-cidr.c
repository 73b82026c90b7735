/* test-cidr.c - allow-list networks: parsing, printing and matching. */
#include <arpa/inet.h>
#include <string.h>

#include "check.h"
#include "cidr.h"

struct good {
        const char *text;
        const char *printed;
};

static const struct good goods[] = {
        { "10.0.0.0/8", "10.0.0.0/8" },
        { "10.1.2.3", "10.1.2.3/32" },
        { "10.1.2.3/32", "10.1.2.3/32" },
        { "0.0.0.0/0", "0.0.0.0/0" },
        { "192.168.128.0/17", "192.168.128.0/17" },
        { "10.0.0.0/08", "10.0.0.0/8" },
        { "::1", "::1/128" },
        { "::/0", "::/0" },
        { "2001:db8::/32", "2001:db8::/32" },
        { "2001:DB8:0:0:8000::/65", "2001:db8:0:0:8000::/65" },
        { "fe80::/10", "fe80::/10" },
        { "::ffff:10.0.0.0/104", "10.0.0.0/8" },
        { "::ffff:10.1.2.3", "10.1.2.3/32" },
        { "::ffff:0.0.0.0/96", "0.0.0.0/0" },
        { "::fffe:0:0/95", "::fffe:0:0/95" },
};

struct bad {
        const char *text;
        const char *why;
};

#define FORMS "expected A.B.C.D[/N] or IPv6[/N]; names are not resolved"
static const struct bad bads[] = {
        { "", "invalid address '' (" FORMS ")" },
        { "/8", "invalid address '' (" FORMS ")" },
        { "localhost", "invalid address 'localhost' (" FORMS ")" },
        { "10.0.0", "invalid address '10.0.0' (" FORMS ")" },
        { "010.0.0.0/8", "invalid address '010.0.0.0' (" FORMS ")" },
        { "256.0.0.0/8", "invalid address '256.0.0.0' (" FORMS ")" },
        { " 10.0.0.0/8", "invalid address ' 10.0.0.0' (" FORMS ")" },
        { "[::1]/128", "invalid address '[::1]' (" FORMS ")" },
        { "fe80::1%eth0", "invalid address 'fe80::1%eth0' (" FORMS ")" },
        { "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:1/128",
          "invalid address 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:1' (" FORMS ")" },
        { "10.0.0.0/", "missing prefix length after '/'" },
        { "10.0.0.0/33", "prefix length '33' is out of range (0..32)" },
        { "::/129", "prefix length '129' is out of range (0..128)" },
        { "::ffff:0:0/95", "host bits set in '::ffff:0:0/95' (the network is ::fffe:0:0/95)" },
        { "10.0.0.0/99999999999999999999",
          "prefix length '99999999999999999999' is out of range (0..32)" },
        { "10.0.0.0/-1", "prefix length '-1' is not a number" },
        { "10.0.0.0/8 ", "prefix length '8 ' is not a number" },
        { "10.0.0.0/8/8", "prefix length '8/8' is not a number" },
        { "10.0.0.0/255.0.0.0", "prefix length '255.0.0.0' is not a number" },
        { "10.0.0.1/8", "host bits set in '10.0.0.1/8' (the network is 10.0.0.0/8)" },
        { "192.168.1.1/0", "host bits set in '192.168.1.1/0' (the network is 0.0.0.0/0)" },
        { "10.0.0.255/25", "host bits set in '10.0.0.255/25' (the network is 10.0.0.128/25)" },
        { "2001:db8::1/64", "host bits set in '2001:db8::1/64' (the network is 2001:db8::/64)" },
        { "::ffff:10.0.0.1/104",
          "host bits set in '::ffff:10.0.0.1/104' (the network is ::ffff:10.0.0.0/104)" },
};

struct match {
        const char *rule;
        const char *client; /* a bare IPv4 or IPv6 address, as a peer has */
        bool want;
};

static const struct match matches[] = {
        { "10.0.0.0/8", "10.255.1.2", true },
        { "10.0.0.0/8", "11.0.0.0", false },
        { "10.0.0.0/8", "9.255.255.255", false },
        { "10.0.0.0/8", "::ffff:10.1.2.3", true },
        { "10.0.0.0/8", "::ffff:11.1.2.3", false },
        { "10.0.0.0/8", "::a00:1", false },
        { "10.0.0.0/8", "::1", false },
        { "192.168.128.0/17", "192.168.128.0", true },
        { "192.168.128.0/17", "192.168.255.255", true },
        { "192.168.128.0/17", "192.168.127.255", false },
        { "10.1.2.3", "10.1.2.3", true },
        { "10.1.2.3", "10.1.2.4", false },
        { "0.0.0.0/0", "1.2.3.4", true },
        { "0.0.0.0/0", "::ffff:1.2.3.4", true },
        { "0.0.0.0/0", "::1", false },
        { "::/0", "2001:db8::1", true },
        { "::/0", "1.2.3.4", false },
        { "::/0", "::ffff:1.2.3.4", false },
        { "::1", "::1", true },
        { "::1", "127.0.0.1", false },
        { "2001:db8::/32", "2001:db8:ffff::1", true },
        { "2001:db8::/32", "2001:db9::1", false },
        { "2001:db8:0:0:8000::/65", "2001:db8::8000:0:0:1", true },
        { "2001:db8:0:0:8000::/65", "2001:db8::7fff:0:0:1", false },
        { "::ffff:10.0.0.0/104", "10.9.9.9", true },
        { "::ffff:10.0.0.0/104", "::ffff:10.9.9.9", true },
        { "::ffff:10.0.0.0/104", "11.0.0.0", false },
        { "::fffe:0:0/95", "::ffff:1.2.3.4", false },
        { "::fffe:0:0/95", "::fffe:1.2.3.4", true },
};

static void test_good(const struct good *g)
{
        struct cidr c, again;
        char err[256] = "", printed[CIDR_TEXT_MAX];

        CHECK(cidr_parse(g->text, &c, err, sizeof(err)) == 0, "'%s' refused: %s", g->text, err);
        cidr_format(&c, printed);
        CHECK_STR(printed, g->printed, g->text);
        CHECK(cidr_parse(printed, &again, err, sizeof(err)) == 0 &&
                      memcmp(&c, &again, sizeof(c)) == 0,
              "'%s' printed as '%s' does not read back", g->text, printed);
}

static void test_bad(const struct bad *b)
{
        struct cidr c;
        char err[256] = "";

        CHECK(cidr_parse(b->text, &c, err, sizeof(err)) == -1, "'%s' was accepted", b->text);
        CHECK_STR(err, b->why, b->text);
}

/* A peer as accept() reports it: IPv4, or IPv6 (v4-mapped included, which
 * addr_parse() rightly refuses as a listen address). */
static int peer_parse(const char *text, struct sockaddr_storage *ss)
{
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

        memset(ss, 0, sizeof(*ss));
        if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
                in->sin_family = AF_INET;
                return 0;
        }
        if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                return 0;
        }
        return -1;
}

static void test_match(const struct match *m)
{
        struct cidr c;
        struct sockaddr_storage peer;
        char err[256] = "";

        CHECK(cidr_parse(m->rule, &c, err, sizeof(err)) == 0, "rule '%s': %s", m->rule, err);
        CHECK(peer_parse(m->client, &peer) == 0, "client '%s' is not an address", m->client);
        CHECK(cidr_match(&c, (const struct sockaddr *)&peer) == m->want, "'%s' %s '%s'", m->client,
              m->want ? "does not match" : "matches", m->rule);
}

static void test_other_family(void)
{
        struct cidr c;
        struct sockaddr sa = { .sa_family = AF_UNIX };
        char err[256];

        cidr_parse("0.0.0.0/0", &c, err, sizeof(err));
        CHECK(!cidr_match(&c, &sa), "an AF_UNIX peer matches 0.0.0.0/0");
        cidr_parse("::/0", &c, err, sizeof(err));
        CHECK(!cidr_match(&c, &sa), "an AF_UNIX peer matches ::/0");
}

int main(void)
{
        for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++)
                test_good(&goods[i]);
        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++)
                test_bad(&bads[i]);
        for (size_t i = 0; i < sizeof(matches) / sizeof(matches[0]); i++)
                test_match(&matches[i]);
        test_other_family();
        return check_summary();
}
