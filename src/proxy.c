/* proxy.c - the PROXY protocol header parser (HAProxy's
 * doc/proxy-protocol.txt, versions 1 and 2).
 *
 * One idea shapes it: bytes are judged in arrival order, and a buffer is
 * refused at the first byte that no valid header can have there, while a
 * valid beginning returns 0 ("more"). So a client that sends no header is
 * refused on its first byte, a partial header costs nothing to re-parse
 * when more arrives (it is at most PROXY_MAX_LEN bytes), and the verdict
 * never changes once given: a longer buffer with the same beginning gets
 * the same one. The v1 line is therefore walked field by field, each field
 * checked as far as it has arrived (its characters and length) and fully
 * (inet_pton, the port's range) once its terminating space or CR is seen.
 *
 * Strictness, following the specification: single spaces, CRLF and nothing
 * else ends the line, no leading zeros in ports (nor in IPv4 numbers, which
 * inet_pton refuses), an address of the family the line announces, at most
 * 107 bytes. After "UNKNOWN" anything up to the CRLF is ignored, as the
 * specification asks. v2: LOCAL ignores the family byte (the specification
 * says so); PROXY over TCP4/TCP6 gives the addresses; PROXY over UNSPEC,
 * UDP or UNIX is accepted without them (the receiver "falls back to UNSPEC"),
 * and any other family byte is refused. TLVs are skipped unread but belong
 * to the header's length.
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

_Static_assert(PROXY_MAX_LEN >= PROXY_V1_MAX && PROXY_MAX_LEN >= PROXY_V2_MAX,
               "PROXY_MAX_LEN must cover both versions");

#define V1_SIG "PROXY "
#define V1_SIG_LEN (sizeof(V1_SIG) - 1)
#define V2_SIG "\r\n\r\n\0\r\nQUIT\n"
#define V2_SIG_LEN (sizeof(V2_SIG) - 1)
#define V2_FIXED ((size_t)16) /* signature, version/command, family, length */

static bool starts(const uint8_t *p, size_t len, const char *sig, size_t siglen)
{
        return memcmp(p, sig, len < siglen ? len : siglen) == 0;
}

static void set_addr(struct sockaddr_storage *ss, sa_family_t family, const void *addr,
                     in_port_t port)
{
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

        if (family == AF_INET) {
                in->sin_family = AF_INET;
                memcpy(&in->sin_addr, addr, sizeof(in->sin_addr));
                in->sin_port = port;
        } else {
                in6->sin6_family = AF_INET6;
                memcpy(&in6->sin6_addr, addr, sizeof(in6->sin6_addr));
                in6->sin6_port = port;
        }
}

/* --- Version 1: "PROXY TCP4 SRC DST SPORT DPORT\r\n" --------------------- */

/* One field of the line: the bytes up to the next space, CR or LF (END),
 * or up to the limit (END 0: the field may go on). */
struct field {
        const uint8_t *s;
        size_t n;
        uint8_t end;
};

static void v1_field(const uint8_t *p, size_t lim, size_t *pos, struct field *f)
{
        size_t i = *pos;

        while (i < lim && p[i] != ' ' && p[i] != '\r' && p[i] != '\n')
                i++;
        f->s = p + *pos;
        f->n = i - *pos;
        f->end = i < lim ? p[i] : 0;
        *pos = i < lim ? i + 1 : i;
}

/* Out of bytes within the line: more may come, unless the line is full. */
static int v1_more(size_t lim)
{
        return lim == PROXY_V1_MAX ? PROXY_EV1_LONG : 0;
}

/* What to say when a field ends otherwise than with WANT. */
static int v1_bad_end(const struct field *f, size_t lim)
{
        if (f->end == 0)
                return v1_more(lim);
        return f->end == '\n' ? PROXY_EV1_CRLF : PROXY_EV1_SYNTAX;
}

static int v1_protocol(const struct field *f, sa_family_t *family)
{
        static const struct {
                const char *name;
                sa_family_t family;
        } protocols[] = { { "TCP4", AF_INET }, { "TCP6", AF_INET6 }, { "UNKNOWN", AF_UNSPEC } };

        for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++) {
                size_t n = strlen(protocols[i].name);

                if ((f->end ? f->n == n : f->n <= n) &&
                    memcmp(f->s, protocols[i].name, f->n) == 0) {
                        *family = protocols[i].family;
                        return 0;
                }
        }
        return PROXY_EV1_PROTOCOL;
}

static int v1_address(const struct field *f, sa_family_t family, struct sockaddr_storage *ss)
{
        static const char v4[] = "0123456789.", v6[] = "0123456789abcdefABCDEF:.";
        const char *chars = family == AF_INET ? v4 : v6;
        size_t nchars = family == AF_INET ? sizeof(v4) - 1 : sizeof(v6) - 1;
        size_t max = family == AF_INET ? INET_ADDRSTRLEN - 1 : INET6_ADDRSTRLEN - 1;
        char text[INET6_ADDRSTRLEN];
        uint8_t addr[sizeof(struct in6_addr)];

        if (f->n > max)
                return PROXY_EV1_ADDRESS;
        for (size_t i = 0; i < f->n; i++)
                if (!memchr(chars, f->s[i], nchars))
                        return PROXY_EV1_ADDRESS;
        if (f->end == 0)
                return 0;
        memcpy(text, f->s, f->n);
        text[f->n] = '\0';
        if (inet_pton(family, text, addr) != 1)
                return PROXY_EV1_ADDRESS;
        set_addr(ss, family, addr, 0);
        return 0;
}

/* Decimal 0..65535 without leading zeros, as far as it has arrived. */
static int v1_port(const struct field *f, struct sockaddr_storage *ss)
{
        unsigned long v = 0;

        if (f->n > 1 && f->s[0] == '0')
                return PROXY_EV1_PORT;
        for (size_t i = 0; i < f->n; i++) {
                if (f->s[i] < '0' || f->s[i] > '9')
                        return PROXY_EV1_PORT;
                v = v * 10 + (unsigned long)(f->s[i] - '0');
                if (v > 65535)
                        return PROXY_EV1_PORT;
        }
        /* sin_port and sin6_port share their offset. */
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)v);
        return 0;
}

/* POS is just after the CR: the LF must follow. */
static int v1_crlf(const uint8_t *p, size_t lim, size_t pos)
{
        if (pos >= lim)
                return v1_more(lim);
        return p[pos] == '\n' ? (int)pos + 1 : PROXY_EV1_CRLF;
}

/* After "UNKNOWN ": anything but a lone CR or LF, up to the CRLF. */
static int v1_unknown(const uint8_t *p, size_t lim, size_t pos)
{
        while (pos < lim && p[pos] != '\r' && p[pos] != '\n')
                pos++;
        if (pos == lim)
                return v1_more(lim);
        return p[pos] == '\r' ? v1_crlf(p, lim, pos + 1) : PROXY_EV1_CRLF;
}

/* Source address, destination address, source port, destination port. */
static int v1_endpoints(const uint8_t *p, size_t lim, size_t pos, struct proxy_header *h)
{
        struct sockaddr_storage *where[] = { &h->src, &h->dst, &h->src, &h->dst };
        struct field f;

        for (int k = 0; k < 4; k++) {
                uint8_t want = k == 3 ? '\r' : ' ';
                int r;

                v1_field(p, lim, &pos, &f);
                if (f.n == 0 && f.end != 0)
                        return f.end == '\n' ? PROXY_EV1_CRLF : PROXY_EV1_SYNTAX;
                r = k < 2 ? v1_address(&f, h->family, where[k]) : v1_port(&f, where[k]);
                if (r < 0)
                        return r;
                if (f.end != want)
                        return v1_bad_end(&f, lim);
        }
        return v1_crlf(p, lim, pos);
}

static int v1_parse(const uint8_t *p, size_t len, struct proxy_header *h)
{
        size_t lim = len < PROXY_V1_MAX ? len : PROXY_V1_MAX, pos = V1_SIG_LEN;
        struct field f;
        int r;

        if (!starts(p, len, V1_SIG, V1_SIG_LEN))
                return PROXY_ESIGNATURE;
        if (len < V1_SIG_LEN)
                return 0;
        h->version = 1;
        v1_field(p, lim, &pos, &f);
        if (f.n == 0 && f.end != 0)
                return f.end == '\n' ? PROXY_EV1_CRLF : PROXY_EV1_SYNTAX;
        r = v1_protocol(&f, &h->family);
        if (r < 0)
                return r;
        if (f.end == 0)
                return v1_more(lim);
        if (h->family == AF_UNSPEC) {
                h->command = PROXY_LOCAL;
                if (f.end == '\r')
                        return v1_crlf(p, lim, pos);
                return f.end == ' ' ? v1_unknown(p, lim, pos) : PROXY_EV1_CRLF;
        }
        if (f.end != ' ')
                return v1_bad_end(&f, lim);
        h->command = PROXY_PROXY;
        h->has_addr = true;
        return v1_endpoints(p, lim, pos, h);
}

/* --- Version 2: signature, ver_cmd, fam, length, addresses, TLVs --------- */

/* What a v2 PROXY command carries for its family/transport byte. */
struct v2_family {
        uint8_t fam;
        sa_family_t family;
        uint8_t block; /* bytes of addresses and ports the length must cover */
        bool tcp; /* TCP over IPv4/IPv6: the addresses are the client's */
};

static const struct v2_family *v2_family(uint8_t fam)
{
        static const struct v2_family families[] = {
                { 0x00, AF_UNSPEC, 0, false }, /* UNSPEC */
                { 0x11, AF_INET, 12, true }, /* TCP over IPv4 */
                { 0x12, AF_INET, 12, false }, /* UDP over IPv4 */
                { 0x21, AF_INET6, 36, true }, /* TCP over IPv6 */
                { 0x22, AF_INET6, 36, false }, /* UDP over IPv6 */
                { 0x31, AF_UNIX, 216, false }, /* UNIX stream */
                { 0x32, AF_UNIX, 216, false }, /* UNIX datagram */
        };

        for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
                if (families[i].fam == fam)
                        return &families[i];
        return NULL;
}

/* Addresses then ports, each in network order, as the block's layout. */
static void v2_endpoints(const uint8_t *block, sa_family_t family, struct proxy_header *h)
{
        size_t n = family == AF_INET ? 4 : 16;
        in_port_t sport, dport;

        memcpy(&sport, block + 2 * n, sizeof(sport));
        memcpy(&dport, block + 2 * n + 2, sizeof(dport));
        set_addr(&h->src, family, block, sport);
        set_addr(&h->dst, family, block + n, dport);
        h->has_addr = true;
}

static int v2_parse(const uint8_t *p, size_t len, struct proxy_header *h)
{
        static const struct v2_family local = { 0, AF_UNSPEC, 0, false };
        const struct v2_family *fam = &local;
        size_t total;

        if (!starts(p, len, V2_SIG, V2_SIG_LEN))
                return PROXY_ESIGNATURE;
        if (len <= V2_SIG_LEN)
                return 0;
        if (p[12] >> 4 != 2)
                return PROXY_EV2_VERSION;
        if ((p[12] & 0x0f) > PROXY_PROXY)
                return PROXY_EV2_COMMAND;
        h->version = 2;
        h->command = p[12] & 0x0f;
        if (len <= 13)
                return 0;
        if (h->command == PROXY_PROXY && !(fam = v2_family(p[13])))
                return PROXY_EV2_FAMILY;
        if (len < V2_FIXED)
                return 0;
        total = V2_FIXED + ((size_t)p[14] << 8 | p[15]);
        if (total > PROXY_V2_MAX)
                return PROXY_EV2_LONG;
        if (total < V2_FIXED + fam->block)
                return PROXY_EV2_SHORT;
        if (len < total)
                return 0;
        h->family = fam->family;
        if (fam->tcp)
                v2_endpoints(p + V2_FIXED, fam->family, h);
        return (int)total;
}

int proxy_parse(const void *buf, size_t len, struct proxy_header *out)
{
        const uint8_t *p = buf;
        struct proxy_header h;
        int r;

        if (len == 0)
                return 0;
        memset(&h, 0, sizeof(h));
        if (p[0] == V1_SIG[0])
                r = v1_parse(p, len, &h);
        else if (p[0] == V2_SIG[0])
                r = v2_parse(p, len, &h);
        else
                r = PROXY_ESIGNATURE;
        if (r > 0)
                *out = h;
        return r;
}

const char *proxy_strerror(int result)
{
        static const char *const reasons[] = {
                [-PROXY_ESIGNATURE] = "no PROXY protocol header",
                [-PROXY_EV1_LONG] = "v1 line longer than 107 bytes",
                [-PROXY_EV1_CRLF] = "v1 line not ended by CRLF",
                [-PROXY_EV1_SYNTAX] = "v1 fields missing, extra or not single-spaced",
                [-PROXY_EV1_PROTOCOL] = "v1 protocol not TCP4, TCP6 or UNKNOWN",
                [-PROXY_EV1_ADDRESS] = "v1 address invalid for its family",
                [-PROXY_EV1_PORT] = "v1 port not 0..65535 without leading zeros",
                [-PROXY_EV2_VERSION] = "v2 version not 2",
                [-PROXY_EV2_COMMAND] = "v2 command neither LOCAL nor PROXY",
                [-PROXY_EV2_FAMILY] = "v2 address family or transport unknown",
                [-PROXY_EV2_SHORT] = "v2 length too short for its addresses",
                [-PROXY_EV2_LONG] = "v2 header longer than 1024 bytes",
        };

        _Static_assert(PROXY_V1_MAX == 107 && PROXY_V2_MAX == 1024,
                       "update the limits in the messages above");
        if (result > 0)
                return "no error";
        if (result == 0)
                return "incomplete header";
        if (result < PROXY_ERROR_LAST)
                return "unknown error";
        return reasons[-result];
}
