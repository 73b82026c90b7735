/* fuzz-addr.c - libFuzzer target for the listen address parser.
 *
 * The input, NUL-terminated, goes to addr_parse(). A refusal must leave a
 * NUL-terminated reason; an acceptance must give one address (two only for
 * "*:PORT"), each of which addr_format() prints in at most ADDR_TEXT_MAX
 * bytes and which parses back to an equal address printed the same way:
 * the round trip that config reloads and log lines rely on. And only what a
 * listener can bind is accepted: no IPv4-mapped IPv6 address (every IPv6
 * socket is IPV6_V6ONLY), no "*:0" (two sockets, two kernel-chosen ports).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *text, const char *printed)
{
        fprintf(stderr, "fuzz-addr: invariant violated: %s (input '%s', printed '%s')\n", what,
                text, printed ? printed : "");
        abort();
}

static void check_round_trip(const char *text, const struct addr *a)
{
        char printed[ADDR_TEXT_MAX], again_printed[ADDR_TEXT_MAX], err[256];
        struct addr again[2];

        if (!(a->u.sa.sa_family == AF_INET && a->len == sizeof(a->u.in)) &&
            !(a->u.sa.sa_family == AF_INET6 && a->len == sizeof(a->u.in6)))
                fail("bad family or length", text, NULL);
        memset(printed, 'x', sizeof(printed));
        addr_format(&a->u.sa, printed);
        if (!memchr(printed, '\0', sizeof(printed)))
                fail("addr_format output not NUL-terminated", text, NULL);
        if (addr_parse(printed, again, err, sizeof(err)) != 1)
                fail("printed address does not parse", text, printed);
        if (!addr_equal(a, &again[0]))
                fail("printed address parses to a different address", text, printed);
        addr_format(&again[0].u.sa, again_printed);
        if (strcmp(printed, again_printed) != 0)
                fail("printing is not stable", text, printed);
        if (a->u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr))
                fail("IPv4-mapped address accepted", text, printed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        /* Exactly SIZE + 1 bytes, so reading past the NUL is an ASan report. */
        char *text = malloc(size + 1);
        char err[256];
        struct addr a[2];
        int n;

        if (!text)
                abort();
        memcpy(text, data, size);
        text[size] = '\0';
        memset(err, 'x', sizeof(err));
        n = addr_parse(text, a, err, sizeof(err));
        if (n == -1) {
                if (!memchr(err, '\0', sizeof(err)) || err[0] == '\0')
                        fail("refused without a NUL-terminated reason", text, NULL);
        } else if (n == 1 || (n == 2 && text[0] == '*')) {
                for (int i = 0; i < n; i++)
                        check_round_trip(text, &a[i]);
                if (n == 2 && addr_equal(&a[0], &a[1]))
                        fail("'*:PORT' gave two equal addresses", text, NULL);
                if (n == 2 && a[0].u.in.sin_port == 0)
                        fail("'*:0' accepted", text, NULL);
        } else {
                fail("returned neither 1, 2 (for '*') nor -1", text, NULL);
        }
        free(text);
        return 0;
}
