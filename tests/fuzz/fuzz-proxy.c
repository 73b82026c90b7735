/* fuzz-proxy.c - libFuzzer target for the PROXY protocol header parser.
 *
 * The input is the first bytes of a connection. Beyond "does not crash" and
 * "reads nothing past LEN" (ASan: libFuzzer's buffer, and every prefix
 * below, end exactly where an allocation ends), each input is checked
 * against what proxy.h promises, and any violation aborts (a finding):
 *  - the result is an enum proxy_error with a reason, 0 only while fewer
 *    than PROXY_MAX_LEN bytes are there, or a length of at most LEN;
 *  - OUT is written only on success;
 *  - verdicts are given once and kept: over the prefixes of the input the
 *    result is 0 up to some length and then the same value to the end, and
 *    one byte is enough to refuse anything but 'P' and '\r';
 *  - an accepted header parses again, alone in a buffer of exactly its
 *    length, to the same header; its fields are consistent (version and
 *    size limits, addresses only with has_addr); and what it says is what
 *    the bytes say: a v1 TCP4 line is exactly the one printed back from the
 *    result (one spelling per address and port), a TCP6 line ends with its
 *    ports printed back, a v2 header holds the addresses and ports at their
 *    offsets.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, size_t len, int r)
{
        fprintf(stderr, "fuzz-proxy: invariant violated: %s (%zu bytes, result %d: %s)\n", what,
                len, r, proxy_strerror(r));
        abort();
}

/* proxy_parse() of DATA's first LEN bytes, placed at the very end of
 * SCRATCH (SIZE bytes, its own allocation), so ASan catches any read past
 * them; checks that OUT is untouched unless the result is positive. */
static int parse_at_end(uint8_t *scratch, size_t size, const uint8_t *data, size_t len,
                        struct proxy_header *out)
{
        struct proxy_header before;
        int r;

        memcpy(scratch + size - len, data, len);
        memset(out, 0x5a, sizeof(*out));
        before = *out;
        r = proxy_parse(scratch + size - len, len, out);
        if (r <= 0 && memcmp(out, &before, sizeof(before)) != 0)
                fail("OUT written without success", len, r);
        return r;
}

static int same_header(const struct proxy_header *a, const struct proxy_header *b)
{
        return a->version == b->version && a->command == b->command && a->has_addr == b->has_addr &&
               a->family == b->family && memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
               memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

static const void *ip(const struct sockaddr_storage *ss)
{
        return ss->ss_family == AF_INET
                       ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                       : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
}

static unsigned port(const struct sockaddr_storage *ss)
{
        return ntohs(((const struct sockaddr_in *)ss)->sin_port); /* same offset in sin6 */
}

static void check_fields(const struct proxy_header *h, size_t r)
{
        static const struct sockaddr_storage zero;

        if (h->version == 1 ? r > PROXY_V1_MAX : h->version != 2 || r < 16 || r > PROXY_V2_MAX)
                fail("bad version or length", r, (int)r);
        if (h->command != PROXY_LOCAL && h->command != PROXY_PROXY)
                fail("bad command", r, (int)r);
        if (h->has_addr) {
                if (h->command != PROXY_PROXY || (h->family != AF_INET && h->family != AF_INET6) ||
                    h->src.ss_family != h->family || h->dst.ss_family != h->family)
                        fail("addresses of the wrong command or family", r, (int)r);
        } else if (memcmp(&h->src, &zero, sizeof(zero)) != 0 ||
                   memcmp(&h->dst, &zero, sizeof(zero)) != 0) {
                fail("addresses without has_addr", r, (int)r);
        } else if (h->command == PROXY_LOCAL && h->family != AF_UNSPEC) {
                fail("a family for LOCAL", r, (int)r);
        }
}

/* What the header says is what its bytes say. */
static void check_meaning(const uint8_t *data, const struct proxy_header *h, size_t r)
{
        char line[PROXY_V1_MAX + 64], src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
        size_t n, alen = h->family == AF_INET ? 4 : 16;
        uint8_t ports[4];

        if (h->version == 1 && !h->has_addr) {
                if (r < 15 || memcmp(data, "PROXY UNKNOWN", 13) != 0 ||
                    memcmp(data + r - 2, "\r\n", 2) != 0)
                        fail("a v1 line without addresses is not UNKNOWN...CRLF", r, (int)r);
        } else if (h->version == 1) {
                inet_ntop(h->family, ip(&h->src), src, sizeof(src));
                inet_ntop(h->family, ip(&h->dst), dst, sizeof(dst));
                n = (size_t)snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
                                     h->family == AF_INET ? "TCP4" : "TCP6", src, dst,
                                     port(&h->src), port(&h->dst));
                if (h->family == AF_INET && (n != r || memcmp(line, data, r) != 0))
                        fail("a v1 TCP4 line is not the one printed back", r, (int)r);
                n = (size_t)snprintf(line, sizeof(line), " %u %u\r\n", port(&h->src),
                                     port(&h->dst));
                if (n > r || memcmp(line, data + r - n, n) != 0)
                        fail("a v1 line does not end with its ports printed back", r, (int)r);
        } else if (h->has_addr) {
                ports[0] = (uint8_t)(port(&h->src) >> 8);
                ports[1] = (uint8_t)port(&h->src);
                ports[2] = (uint8_t)(port(&h->dst) >> 8);
                ports[3] = (uint8_t)port(&h->dst);
                if (r < 16 + 2 * alen + 4 || memcmp(data + 16, ip(&h->src), alen) != 0 ||
                    memcmp(data + 16 + alen, ip(&h->dst), alen) != 0 ||
                    memcmp(data + 16 + 2 * alen, ports, 4) != 0)
                        fail("v2 addresses differ from their bytes", r, (int)r);
        }
}

static void check_accepted(const uint8_t *data, const struct proxy_header *h, int r)
{
        uint8_t *alone = malloc((size_t)r);
        struct proxy_header again;

        if (!alone)
                abort();
        check_fields(h, (size_t)r);
        check_meaning(data, h, (size_t)r);
        if (parse_at_end(alone, (size_t)r, data, (size_t)r, &again) != r || !same_header(h, &again))
                fail("the header alone parses differently", (size_t)r, r);
        free(alone);
}

/* 0 up to some length, then the final verdict up to SIZE. */
static void check_prefixes(const uint8_t *data, size_t size, int final)
{
        uint8_t *scratch = malloc(size ? size : 1);
        struct proxy_header h;
        int decided = 0;

        if (!scratch)
                abort();
        for (size_t m = 0; m < size; m++) {
                int r = parse_at_end(scratch, size, data, m, &h);

                if (r == 0 && decided)
                        fail("0 after a verdict on a shorter prefix", m, r);
                if (r != 0 && r != final)
                        fail("a prefix got another verdict than the whole input", m, r);
                decided = r != 0;
        }
        free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct proxy_header h, one;
        const char *why;
        int r;

        memset(&h, 0x5a, sizeof(h));
        r = proxy_parse(data, size, &h);
        why = proxy_strerror(r);
        if (r < PROXY_ERROR_LAST || (r > 0 && (size_t)r > size))
                fail("result out of range", size, r);
        if (r == 0 && size >= PROXY_MAX_LEN)
                fail("0 with PROXY_MAX_LEN bytes or more", size, r);
        if (!why || !*why || (r < 0 && strcmp(why, "unknown error") == 0))
                fail("no reason", size, r);
        if (size > 0 && data[0] != 'P' && data[0] != '\r' &&
            proxy_parse(data, 1, &one) != PROXY_ESIGNATURE)
                fail("a first byte that starts no header is not refused at once", 1, r);
        if (r > 0)
                check_accepted(data, &h, r);
        check_prefixes(data, size, r);
        return 0;
}
