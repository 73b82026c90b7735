/* test-proxy.c - the PROXY protocol header parser, both versions: exact
 * results for a table of headers, every prefix of each, and the limits.
 * tests/fuzz/make-seeds turns the table's inputs into fuzzing seeds, so the
 * macros below hold only string literals. */
#include <stdlib.h>

#include "addr.h"
#include "check.h"
#include "proxy.h"

#define B(s) s, sizeof(s) - 1
#define SIG "\r\n\r\n\0\r\nQUIT\n"
#define F8 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
#define F6V4 "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
#define X50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define TCP4_BLOCK                                                                                 \
        "\xc0\xa8\x00\x01"                                                                         \
        "\xc0\xa8\x00\x0b"                                                                         \
        "\xdc\x04\x01\xbb"
#define TCP6_BLOCK                                                                                 \
        "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01"                                               \
        "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01"                                                       \
        "\x0f\xa0\x1f\x41"

struct row {
        const char *in;
        size_t len;
        int want; /* the header's length, 0 (incomplete) or an enum proxy_error */
        int version, command, family;
        const char *src, *dst; /* addr_format() of each; NULL when !has_addr */
};

#define V1 1, PROXY_PROXY
#define V2 2, PROXY_PROXY
#define NONE 0, 0, 0, NULL, NULL /* no header */

static const struct row rows[] = {
        /* v1, valid; trailing bytes are the client's */
        { B("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"), 47, V1, AF_INET,
          "192.168.0.1:56324", "192.168.0.11:443" },
        { B("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"), 47, V1, AF_INET,
          "192.168.0.1:56324", "192.168.0.11:443" },
        { B("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"), 56, V1, AF_INET,
          "255.255.255.255:65535", "255.255.255.255:65535" },
        { B("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\nPROXY TCP4"), 32, V1, AF_INET, "0.0.0.0:0",
          "0.0.0.0:0" },
        { B("PROXY TCP6 2001:db8::1 ::1 4000 8001\r\n"), 38, V1, AF_INET6, "[2001:db8::1]:4000",
          "[::1]:8001" },
        { B("PROXY TCP6 " F8 " " F8 " 65535 65535\r\n"), 104, V1, AF_INET6,
          "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
          "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535" },
        { B("PROXY TCP6 " F6V4 " " F8 " 65535 80\r\n"), 107, V1, AF_INET6,
          "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
          "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:80" },
        { B("PROXY TCP6 ::FFFF:10.0.0.1 ::1 1 2\r\n"), 36, V1, AF_INET6, "[::ffff:10.0.0.1]:1",
          "[::1]:2" },
        { B("PROXY UNKNOWN\r\n"), 15, 1, PROXY_LOCAL, AF_UNSPEC, NULL, NULL },
        { B("PROXY UNKNOWN " F8 " " F8 " 65535 65535\r\n"), 107, 1, PROXY_LOCAL, AF_UNSPEC, NULL,
          NULL },
        { B("PROXY UNKNOWN whatever \x01\0 ignored\r\nHi"), 35, 1, PROXY_LOCAL, AF_UNSPEC, NULL,
          NULL },
        /* v1, incomplete */
        { B("P"), 0, NONE },
        { B("PROXY"), 0, NONE },
        { B("PROXY "), 0, NONE },
        { B("PROXY UNK"), 0, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 65535"), 0, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), 0, NONE },
        { B("PROXY UNKNOWN " X50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), 0,
          NONE }, /* 106 bytes */
        /* v1, too long: the CRLF would end past byte 107 */
        { B("PROXY UNKNOWN " F8 " " F8 " 65535 655350\r\n"), PROXY_EV1_LONG, NONE },
        { B("PROXY TCP6 " F6V4 " " F8 " 65535 800\r\n"), PROXY_EV1_LONG, NONE },
        { B("PROXY UNKNOWN " X50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), PROXY_EV1_LONG,
          NONE }, /* 107 bytes, no CR */
        { B("PROXY UNKNOWN " X50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r"), PROXY_EV1_LONG,
          NONE }, /* CR as byte 107 */
        { B("PROXY UNKNOWN " X50 X50 X50 X50 "\r\n"), PROXY_EV1_LONG, NONE },
        /* v1, malformed */
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), PROXY_EV1_CRLF, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), PROXY_EV1_CRLF, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"), PROXY_EV1_CRLF, NONE },
        { B("PROXY UNKNOWN \n"), PROXY_EV1_CRLF, NONE },
        { B("PROXY UNKNOWN\n"), PROXY_EV1_CRLF, NONE },
        { B("PROXY UNKNOWN a\rb\r\n"), PROXY_EV1_CRLF, NONE },
        { B("PROXY TCP4 1.2.3.4\n"), PROXY_EV1_CRLF, NONE },
        { B("PROXY  TCP4"), PROXY_EV1_SYNTAX, NONE },
        { B("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), PROXY_EV1_SYNTAX, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), PROXY_EV1_SYNTAX, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), PROXY_EV1_SYNTAX, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), PROXY_EV1_SYNTAX, NONE },
        { B("PROXY TCP4\r\n"), PROXY_EV1_SYNTAX, NONE },
        { B("PROXY TCP5"), PROXY_EV1_PROTOCOL, NONE },
        { B("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), PROXY_EV1_PROTOCOL, NONE },
        { B("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), PROXY_EV1_PROTOCOL, NONE },
        { B("PROXY UNKNOWNX\r\n"), PROXY_EV1_PROTOCOL, NONE },
        { B("PROXY TCP4 ::1 ::1 1 2\r\n"), PROXY_EV1_ADDRESS, NONE },
        { B("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), PROXY_EV1_ADDRESS, NONE },
        { B("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), PROXY_EV1_ADDRESS, NONE },
        { B("PROXY TCP4 1.2.3.4 256.6.7.8 1 2\r\n"), PROXY_EV1_ADDRESS, NONE },
        { B("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), PROXY_EV1_ADDRESS, NONE },
        { B("PROXY TCP4 255.255.255.2550"), PROXY_EV1_ADDRESS, NONE }, /* 16 characters */
        { B("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), PROXY_EV1_ADDRESS, NONE },
        { B("PROXY TCP6 [::1] ::1 1 2\r\n"), PROXY_EV1_ADDRESS, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), PROXY_EV1_PORT, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), PROXY_EV1_PORT, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n"), PROXY_EV1_PORT, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n"), PROXY_EV1_PORT, NONE },
        { B("PROXY TCP4 1.2.3.4 5.6.7.8 1 0x50\r\n"), PROXY_EV1_PORT, NONE },
        /* no header at all: refused on the first byte that shows it */
        { B("G"), PROXY_ESIGNATURE, NONE },
        { B("GET / HTTP/1.1\r\n"), PROXY_ESIGNATURE, NONE },
        { B("\x16\x03\x01\x02\0"), PROXY_ESIGNATURE, NONE },
        { B("\0"), PROXY_ESIGNATURE, NONE },
        { B("proxy TCP4"), PROXY_ESIGNATURE, NONE },
        { B("PROXY\r\n"), PROXY_ESIGNATURE, NONE },
        { B("\r\n\r\n\r\n"), PROXY_ESIGNATURE, NONE },
        { B("\r\n\r\n\0\r\nQUIX\n"), PROXY_ESIGNATURE, NONE },
        /* v2, valid */
        { B(SIG "\x21\x11\x00\x0c" TCP4_BLOCK), 28, V2, AF_INET, "192.168.0.1:56324",
          "192.168.0.11:443" },
        { B(SIG "\x21\x11\x00\x0c" TCP4_BLOCK "Hi\r\n"), 28, V2, AF_INET, "192.168.0.1:56324",
          "192.168.0.11:443" },
        { B(SIG "\x21\x21\x00\x24" TCP6_BLOCK), 52, V2, AF_INET6, "[2001:db8::1]:4000",
          "[::1]:8001" },
        /* TLVs (NOOP of 4 bytes, ALPN "h2") are skipped but counted */
        { B(SIG "\x21\x11\x00\x18" TCP4_BLOCK "\x04\x00\x04"
                "abcd"
                "\x01\x00\x02"
                "h2"
                "data"),
          40, V2, AF_INET, "192.168.0.1:56324", "192.168.0.11:443" },
        { B(SIG "\x20\x00\x00\x00"), 16, 2, PROXY_LOCAL, AF_UNSPEC, NULL, NULL },
        { B(SIG "\x20\x11\x00\x0c" TCP4_BLOCK), 28, 2, PROXY_LOCAL, AF_UNSPEC, NULL, NULL },
        { B(SIG "\x20\xff\x00\x03"
                "abc"),
          19, 2, PROXY_LOCAL, AF_UNSPEC, NULL, NULL },
        { B(SIG "\x21\x00\x00\x00"), 16, V2, AF_UNSPEC, NULL, NULL },
        { B(SIG "\x21\x12\x00\x0c" TCP4_BLOCK), 28, V2, AF_INET, NULL, NULL },
        { B(SIG "\x21\x22\x00\x24" TCP6_BLOCK), 52, V2, AF_INET6, NULL, NULL },
        /* v2, incomplete */
        { B("\r"), 0, NONE },
        { B(SIG), 0, NONE },
        { B(SIG "\x21"), 0, NONE },
        { B(SIG "\x21\x11\x00"), 0, NONE },
        { B(SIG "\x21\x11\x00\x0c"
                "\xc0\xa8\x00\x01"
                "\xc0\xa8\x00\x0b"
                "\xdc\x04\x01"),
          0, NONE },
        { B(SIG "\x21\x11\x03\xf0"), 0, NONE }, /* 1024 bytes announced */
        /* v2, refused */
        { B(SIG "\x11"), PROXY_EV2_VERSION, NONE },
        { B(SIG "\x31\x11\x00\x0c" TCP4_BLOCK), PROXY_EV2_VERSION, NONE },
        { B(SIG "\x22"), PROXY_EV2_COMMAND, NONE },
        { B(SIG "\x2f\x00\x00\x00"), PROXY_EV2_COMMAND, NONE },
        { B(SIG "\x21\x13"), PROXY_EV2_FAMILY, NONE },
        { B(SIG "\x21\x10\x00\x00"), PROXY_EV2_FAMILY, NONE },
        { B(SIG "\x21\x41\x00\x0c" TCP4_BLOCK), PROXY_EV2_FAMILY, NONE },
        { B(SIG "\x21\x11\x00\x0b" TCP4_BLOCK), PROXY_EV2_SHORT, NONE },
        { B(SIG "\x21\x21\x00\x0c" TCP4_BLOCK), PROXY_EV2_SHORT, NONE },
        { B(SIG "\x21\x31\x00\x24" TCP6_BLOCK), PROXY_EV2_SHORT, NONE },
        { B(SIG "\x21\x11\x03\xf1"), PROXY_EV2_LONG, NONE }, /* 1025 bytes announced */
        { B(SIG "\x20\x00\xff\xff"), PROXY_EV2_LONG, NONE },
};

static const char *describe(const struct row *r)
{
        static char text[64];
        size_t n = 0;

        for (size_t i = 0; i < r->len && n + 5 < sizeof(text); i++) {
                unsigned char c = (unsigned char)r->in[i];

                n += (size_t)snprintf(text + n, sizeof(text) - n,
                                      c >= 32 && c < 127 ? "%c" : "\\x%02x", c);
        }
        return text;
}

/* proxy_parse() of the first LEN bytes, from a heap block of exactly LEN
 * bytes, so that ASan sees any read past them; OUT must stay untouched
 * unless the result is positive. */
static int parse(const char *in, size_t len, struct proxy_header *out)
{
        char *copy = malloc(len ? len : 1);
        struct proxy_header before;
        int r;

        if (!copy)
                abort();
        memcpy(copy, in, len);
        memset(out, 0xa5, sizeof(*out));
        before = *out;
        r = proxy_parse(copy, len, out);
        free(copy);
        if (r <= 0)
                CHECK(memcmp(out, &before, sizeof(before)) == 0, "result %d wrote OUT", r);
        return r;
}

static void check_fields(const struct row *r, const struct proxy_header *h)
{
        char src[ADDR_TEXT_MAX] = "", dst[ADDR_TEXT_MAX] = "";

        CHECK(h->version == r->version, "%s: version %d", describe(r), h->version);
        CHECK(h->command == r->command, "%s: command %d", describe(r), h->command);
        CHECK(h->family == r->family, "%s: family %d", describe(r), h->family);
        CHECK(h->has_addr == (r->src != NULL), "%s: has_addr %d", describe(r), h->has_addr);
        if (h->has_addr && r->src) {
                addr_format((const struct sockaddr *)&h->src, src);
                addr_format((const struct sockaddr *)&h->dst, dst);
                CHECK_STR(src, r->src, describe(r));
                CHECK_STR(dst, r->dst, describe(r));
        } else {
                CHECK(h->src.ss_family == AF_UNSPEC && h->dst.ss_family == AF_UNSPEC,
                      "%s: addresses without has_addr", describe(r));
        }
}

/* A result, once given, holds for every longer buffer; before it, 0. */
static void check_prefixes(const struct row *r)
{
        struct proxy_header h;
        bool decided = false;

        for (size_t m = 0; m <= r->len; m++) {
                int got = parse(r->in, m, &h);

                if (got == 0 && !decided)
                        continue;
                decided = true;
                CHECK(got == r->want, "%s: %zu bytes gave %d, want %d", describe(r), m, got,
                      r->want);
                if (r->want > 0)
                        CHECK(m >= (size_t)r->want, "%s: accepted with %zu bytes", describe(r), m);
        }
}

static void test_row(const struct row *r)
{
        struct proxy_header h;
        int got = parse(r->in, r->len, &h);

        CHECK(got == r->want, "%s: got %d (%s), want %d (%s)", describe(r), got,
              proxy_strerror(got), r->want, proxy_strerror(r->want));
        if (got > 0 && got == r->want)
                check_fields(r, &h);
        check_prefixes(r);
}

/* The v2 cap exactly: 1024 bytes pass, 1025 do not (NOOP TLV padding). */
static void test_v2_cap(void)
{
        static char buf[PROXY_V2_MAX + 1];
        struct proxy_header h;
        size_t tlv = PROXY_V2_MAX - 28 - 3;

        memcpy(buf, SIG "\x21\x11\x03\xf0" TCP4_BLOCK, 28);
        buf[28] = 0x04;
        buf[29] = (char)(tlv >> 8);
        buf[30] = (char)(tlv & 0xff);
        CHECK(parse(buf, PROXY_V2_MAX, &h) == PROXY_V2_MAX, "1024-byte v2 header refused");
        CHECK(parse(buf, PROXY_V2_MAX - 1, &h) == 0, "1023 of 1024 bytes not incomplete");
        buf[15] = (char)0xf1;
        buf[30]++;
        CHECK(parse(buf, PROXY_V2_MAX + 1, &h) == PROXY_EV2_LONG, "1025-byte v2 header accepted");
}

static void test_strerror(void)
{
        for (int e = -1; e >= PROXY_ERROR_LAST; e--) {
                const char *s = proxy_strerror(e);

                CHECK(s && *s && strcmp(s, "unknown error") != 0, "no reason for %d", e);
                for (int f = -1; f > e; f--)
                        CHECK(strcmp(s, proxy_strerror(f)) != 0, "%d and %d share a reason", e, f);
        }
        CHECK_STR(proxy_strerror(PROXY_ESIGNATURE), "no PROXY protocol header", "ESIGNATURE");
        CHECK_STR(proxy_strerror(PROXY_EV1_LONG), "v1 line longer than 107 bytes", "EV1_LONG");
        CHECK_STR(proxy_strerror(PROXY_EV2_LONG), "v2 header longer than 1024 bytes", "EV2_LONG");
        CHECK_STR(proxy_strerror(0), "incomplete header", "0");
        CHECK_STR(proxy_strerror(PROXY_ERROR_LAST - 1), "unknown error", "past the last");
}

int main(void)
{
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
                test_row(&rows[i]);
        test_v2_cap();
        test_strerror();
        printf("%zu table rows\n", sizeof(rows) / sizeof(rows[0]));
        return check_summary();
}
