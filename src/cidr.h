/* cidr.h - allow-list entries such as proxy_from = 10.0.0.0/8: parsing
 * "A.B.C.D/N", "IPV6/N" or a bare address (/32 or /128), and matching a
 * peer's address against one. */
#pragma once

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128" plus NUL */
#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4)

struct cidr {
        sa_family_t family; /* AF_INET or AF_INET6 */
        uint8_t prefix; /* 0..32 or 0..128 */
        uint8_t addr[16]; /* the network, host bits zero; IPv4 in the first 4 bytes */
};

/* Parses TEXT into OUT. Returns 0, or -1 with a reason in ERR (without the
 * key's name, for "FILE:LINE: proxy_from: REASON"). An IPv4-mapped IPv6
 * network of /96 or longer (::ffff:10.0.0.0/104) is stored as the IPv4 one
 * (10.0.0.0/8): clients are compared the same way. */
int cidr_parse(const char *text, struct cidr *out, char *err, size_t errlen);

/* Whether SA's address lies in C. An IPv4 client seen on an IPv6 socket
 * (::ffff:A.B.C.D) is the IPv4 client A.B.C.D: it matches IPv4 networks
 * and no IPv6 one, ::/0 included. Other families never match. */
bool cidr_match(const struct cidr *c, const struct sockaddr *sa);

/* "10.0.0.0/8", "2001:db8::/32": what cidr_parse() reads back to C. */
void cidr_format(const struct cidr *c, char buf[CIDR_TEXT_MAX]);
