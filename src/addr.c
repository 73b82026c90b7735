/* addr.c - parsing and printing of listen addresses.
 *
 * Names are never resolved: a daemon that binds at boot must not depend on
 * DNS, so only numeric forms are accepted and the error says which part of
 * the text is wrong.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FORMS "expected A.B.C.D:PORT, [IPv6]:PORT or *:PORT"

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

static int parse_port(const char *s, unsigned *port, char *err, size_t errlen)
{
        unsigned long v = 0;

        if (*s == '\0')
                return fail(err, errlen, "missing port after ':' (" FORMS ")");
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return fail(err, errlen, "port '%s' is not a number", s);
                v = v * 10 + (unsigned long)(*p - '0');
                if (v > 65535)
                        return fail(err, errlen, "port '%s' is out of range (0..65535)", s);
        }
        *port = (unsigned)v;
        return 0;
}

static void set_any4(struct addr *a, unsigned port)
{
        memset(a, 0, sizeof(*a));
        a->u.in.sin_family = AF_INET;
        a->u.in.sin_port = htons((uint16_t)port);
        a->u.in.sin_addr.s_addr = htonl(INADDR_ANY);
        a->len = sizeof(a->u.in);
}

static void set_any6(struct addr *a, unsigned port)
{
        memset(a, 0, sizeof(*a));
        a->u.in6.sin6_family = AF_INET6;
        a->u.in6.sin6_port = htons((uint16_t)port);
        a->u.in6.sin6_addr = in6addr_any;
        a->len = sizeof(a->u.in6);
}

/* Every IPv6 socket is IPV6_V6ONLY, and the kernel refuses to bind such a
 * socket to ::ffff:A.B.C.D (EINVAL): refused here, so that -t and a start
 * agree, with the IPv4 form that does work. */
static int fail_v4mapped(const char *host, const struct in6_addr *in6, char *err, size_t errlen)
{
        char v4[INET_ADDRSTRLEN] = "A.B.C.D";

        (void)inet_ntop(AF_INET, &in6->s6_addr[12], v4, sizeof(v4)); /* cannot fail */
        return fail(err, errlen,
                    "IPv4-mapped address '%s' cannot be bound (IPv6 sockets are IPV6_V6ONLY); "
                    "use %s:PORT",
                    host, v4);
}

static int parse_v6(const char *text, struct addr *a, char *err, size_t errlen)
{
        const char *end = strchr(text, ']');
        char host[INET6_ADDRSTRLEN + 1];
        unsigned port = 0;
        size_t len;

        if (!end)
                return fail(err, errlen, "missing ']' after IPv6 address (" FORMS ")");
        len = (size_t)(end - text - 1);
        if (end[1] != ':')
                return fail(err, errlen, "missing ':PORT' after ']' (" FORMS ")");
        if (len == 0 || len >= sizeof(host))
                return fail(err, errlen, "invalid IPv6 address '%.*s'", (int)len, text + 1);
        memcpy(host, text + 1, len);
        host[len] = '\0';
        memset(a, 0, sizeof(*a));
        if (inet_pton(AF_INET6, host, &a->u.in6.sin6_addr) != 1)
                return fail(err, errlen, "invalid IPv6 address '%s'", host);
        if (IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr))
                return fail_v4mapped(host, &a->u.in6.sin6_addr, err, errlen);
        if (parse_port(end + 2, &port, err, errlen) < 0)
                return -1;
        a->u.in6.sin6_family = AF_INET6;
        a->u.in6.sin6_port = htons((uint16_t)port);
        a->len = sizeof(a->u.in6);
        return 1;
}

static int parse_v4(const char *text, struct addr *a, char *err, size_t errlen)
{
        const char *colon = strrchr(text, ':');
        char host[INET_ADDRSTRLEN + 1];
        unsigned port = 0;
        size_t len;

        if (!colon)
                return fail(err, errlen, "missing ':PORT' (" FORMS ")");
        len = (size_t)(colon - text);
        if (memchr(text, ':', len))
                return fail(err, errlen, "IPv6 addresses need brackets, as in [::1]:PORT");
        if (len == 0 || len >= sizeof(host))
                return fail(err, errlen,
                            "invalid IPv4 address '%.*s' (" FORMS "; names are not resolved)",
                            (int)len, text);
        memcpy(host, text, len);
        host[len] = '\0';
        memset(a, 0, sizeof(*a));
        if (inet_pton(AF_INET, host, &a->u.in.sin_addr) != 1)
                return fail(err, errlen,
                            "invalid IPv4 address '%s' (" FORMS "; names are not resolved)", host);
        if (parse_port(colon + 1, &port, err, errlen) < 0)
                return -1;
        a->u.in.sin_family = AF_INET;
        a->u.in.sin_port = htons((uint16_t)port);
        a->len = sizeof(a->u.in);
        return 1;
}

int addr_parse(const char *text, struct addr out[2], char *err, size_t errlen)
{
        unsigned port = 0;

        if (text[0] == '*') {
                if (text[1] != ':')
                        return fail(err, errlen, "missing ':PORT' after '*' (" FORMS ")");
                if (parse_port(text + 2, &port, err, errlen) < 0)
                        return -1;
                /* Port 0 means one port chosen by the kernel per socket:
                 * two different ports, where *:PORT promises one. */
                if (port == 0)
                        return fail(err, errlen,
                                    "*:0 would bind IPv4 and IPv6 on different ports; use "
                                    "0.0.0.0:0 or [::]:0");
                set_any4(&out[0], port);
                set_any6(&out[1], port);
                return 2;
        }
        if (text[0] == '[')
                return parse_v6(text, &out[0], err, errlen);
        return parse_v4(text, &out[0], err, errlen);
}

void addr_host(const struct sockaddr *sa, char buf[ADDR_TEXT_MAX], unsigned *port)
{
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        *port = 0;
        buf[0] = '?';
        buf[1] = '\0';
        if (sa->sa_family == AF_INET) {
                inet_ntop(AF_INET, &in->sin_addr, buf, ADDR_TEXT_MAX);
                *port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6) {
                inet_ntop(AF_INET6, &in6->sin6_addr, buf, ADDR_TEXT_MAX);
                *port = ntohs(in6->sin6_port);
        }
}

void addr_format(const struct sockaddr *sa, char buf[ADDR_TEXT_MAX])
{
        char host[ADDR_TEXT_MAX];
        unsigned port = 0;

        addr_host(sa, host, &port);
        if (sa->sa_family == AF_INET6)
                snprintf(buf, ADDR_TEXT_MAX, "[%.46s]:%u", host, port);
        else if (sa->sa_family == AF_INET)
                snprintf(buf, ADDR_TEXT_MAX, "%.46s:%u", host, port);
        else
                snprintf(buf, ADDR_TEXT_MAX, "?");
}

int addr_equal(const struct addr *a, const struct addr *b)
{
        return a->len == b->len && memcmp(&a->u, &b->u, a->len) == 0;
}
