/* cidr.c - allow-list networks: parse, match, print.
 *
 * A network whose address has bits set past its prefix (10.0.0.1/8) is
 * refused rather than masked: it is most often a typo for a host (/32) or
 * for another prefix, and silently widening or narrowing who may speak the
 * PROXY protocol is the wrong way to find out. The message names the
 * network the text would have meant.
 *
 * IPv4 clients reach a dual-stack socket as ::ffff:A.B.C.D; both the client
 * and a rule written that way are reduced to plain IPv4 before comparing,
 * so one IPv4 rule covers both and no IPv6 rule (::/0 included) lets IPv4
 * clients in by accident.
 */
#include "cidr.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <netinet/in.h>

#define FORMS "expected A.B.C.D[/N] or IPv6[/N]; names are not resolved"

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static int fail(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        /* va_start is right above: a clang 14 false positive. */
        // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
        (void)vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        return -1;
}

static unsigned max_prefix(sa_family_t family)
{
        return family == AF_INET ? 32 : 128;
}

/* Zeroes the bits of ADDR past the first BITS. */
static void mask(uint8_t addr[16], unsigned bits)
{
        if (bits >= 128)
                return;
        if (bits % 8)
                addr[bits / 8] &= (uint8_t)(0xff << (8 - bits % 8));
        memset(addr + (bits + 7) / 8, 0, 16 - (bits + 7) / 8);
}

static bool same_prefix(const uint8_t *a, const uint8_t *b, unsigned bits)
{
        uint8_t m;

        if (memcmp(a, b, bits / 8) != 0)
                return false;
        if (bits % 8 == 0)
                return true;
        m = (uint8_t)(0xff << (8 - bits % 8));
        return ((a[bits / 8] ^ b[bits / 8]) & m) == 0;
}

static int parse_prefix(const char *s, unsigned max, uint8_t *prefix, char *err, size_t errlen)
{
        unsigned v = 0;

        if (*s == '\0')
                return fail(err, errlen, "missing prefix length after '/'");
        if (s[strspn(s, "0123456789")] != '\0')
                return fail(err, errlen, "prefix length '%s' is not a number", s);
        for (const char *p = s; *p; p++) {
                v = v * 10 + (unsigned)(*p - '0');
                if (v > max)
                        return fail(err, errlen, "prefix length '%s' is out of range (0..%u)", s,
                                    max);
        }
        *prefix = (uint8_t)v;
        return 0;
}

static int parse_host(const char *text, size_t len, struct cidr *c, char *err, size_t errlen)
{
        char host[INET6_ADDRSTRLEN];

        if (len == 0 || len >= sizeof(host))
                return fail(err, errlen, "invalid address '%.*s' (" FORMS ")", (int)len, text);
        memcpy(host, text, len);
        host[len] = '\0';
        if (inet_pton(AF_INET, host, c->addr) == 1)
                c->family = AF_INET;
        else if (inet_pton(AF_INET6, host, c->addr) == 1)
                c->family = AF_INET6;
        else
                return fail(err, errlen, "invalid address '%s' (" FORMS ")", host);
        return 0;
}

/* ::ffff:A.B.C.D/96+N is A.B.C.D/N. */
static void unmap(struct cidr *c)
{
        if (c->family != AF_INET6 || c->prefix < 96 || memcmp(c->addr, v4mapped, 12) != 0)
                return;
        c->family = AF_INET;
        c->prefix -= 96;
        memmove(c->addr, c->addr + 12, 4);
        memset(c->addr + 4, 0, 12);
}

int cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen)
{
        const char *slash = strchr(text, '/');
        struct cidr c, net;
        char shown[CIDR_TEXT_MAX];

        memset(&c, 0, sizeof(c));
        if (parse_host(text, slash ? (size_t)(slash - text) : strlen(text), &c, err, errlen) < 0)
                return -1;
        c.prefix = (uint8_t)max_prefix(c.family);
        if (slash && parse_prefix(slash + 1, max_prefix(c.family), &c.prefix, err, errlen) < 0)
                return -1;
        net = c;
        mask(net.addr, net.prefix);
        if (memcmp(net.addr, c.addr, sizeof(c.addr)) != 0) {
                cidr_format(&net, shown);
                return fail(err, errlen, "host bits set in '%s' (the network is %s)", text, shown);
        }
        unmap(&c);
        *out = c;
        return 0;
}

/* The bytes of SA's address and its family, ::ffff:A.B.C.D as IPv4; NULL
 * for other families. */
static const uint8_t *peer_addr(const struct sockaddr *sa, sa_family_t *family)
{
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        *family = sa->sa_family;
        if (sa->sa_family == AF_INET)
                return (const uint8_t *)&in->sin_addr;
        if (sa->sa_family != AF_INET6)
                return NULL;
        if (memcmp(in6->sin6_addr.s6_addr, v4mapped, sizeof(v4mapped)) != 0)
                return in6->sin6_addr.s6_addr;
        *family = AF_INET;
        return in6->sin6_addr.s6_addr + sizeof(v4mapped);
}

bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
        sa_family_t family;
        const uint8_t *a = peer_addr(sa, &family);

        return a && family == c->family && same_prefix(a, c->addr, c->prefix);
}

void cidr_format(const struct cidr *c, char buf[CIDR_TEXT_MAX])
{
        char host[INET6_ADDRSTRLEN];

        if (!inet_ntop(c->family, c->addr, host, sizeof(host)))
                snprintf(host, sizeof(host), "?");
        snprintf(buf, CIDR_TEXT_MAX, "%s/%u", host, (unsigned)c->prefix);
}
