/* addr.h - listen addresses: parsing "A.B.C.D:PORT", "[IPv6]:PORT" and
 * "*:PORT", and printing socket addresses back in the same form. */
#pragma once

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

/* "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535" plus NUL */
#define ADDR_TEXT_MAX 56

struct addr {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } u;
        socklen_t len;
};

/* Parses TEXT into one address, or two for "*:PORT" (IPv4 and IPv6 any,
 * PORT not 0). Only addresses a listener can bind are accepted: no
 * IPv4-mapped IPv6 address. Returns the number of addresses (1 or 2), or -1
 * with a reason in ERR. */
int addr_parse(const char *text, struct addr out[2], char *err, size_t errlen);

/* Writes "1.2.3.4:80" or "[::1]:80"; never fails (unknown families print "?"). */
void addr_format(const struct sockaddr *sa, char buf[ADDR_TEXT_MAX]);

/* The host part alone ("1.2.3.4", "::1") and the port, for journal fields. */
void addr_host(const struct sockaddr *sa, char buf[ADDR_TEXT_MAX], unsigned *port);

int addr_equal(const struct addr *a, const struct addr *b);
