/* proxy.h - the PROXY protocol header (HAProxy's send-proxy and
 * send-proxy-v2) that a trusted load balancer puts in front of a
 * connection's first bytes: a pure parser, no I/O, no allocation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A v1 line, CRLF included, is at most 107 bytes (the specification's
 * worst case, "PROXY UNKNOWN" with two full IPv6 addresses and ports). */
#define PROXY_V1_MAX 107
/* Our cap on a whole v2 header (16 fixed bytes + addresses + TLVs). The
 * specification has none; HAProxy's TLVs (ALPN, authority, unique id, SSL)
 * stay well below it, and it bounds what a connection may hold back. */
#define PROXY_V2_MAX 1024
/* The most bytes a caller ever needs to hand proxy_parse(): with this many
 * it never asks for more. */
#define PROXY_MAX_LEN PROXY_V2_MAX

/* Negative results of proxy_parse(); proxy_strerror() words them. */
enum proxy_error {
        PROXY_ESIGNATURE = -1, /* starts neither "PROXY " nor the v2 signature */
        PROXY_EV1_LONG = -2, /* no CRLF within PROXY_V1_MAX bytes */
        PROXY_EV1_CRLF = -3, /* a CR or LF that is not the final CRLF */
        PROXY_EV1_SYNTAX = -4, /* fields missing, extra, or not single-spaced */
        PROXY_EV1_PROTOCOL = -5, /* not TCP4, TCP6 or UNKNOWN */
        PROXY_EV1_ADDRESS = -6, /* not an address of the announced family */
        PROXY_EV1_PORT = -7, /* not 0..65535 in decimal without leading zeros */
        PROXY_EV2_VERSION = -8, /* version nibble is not 2 */
        PROXY_EV2_COMMAND = -9, /* command is neither LOCAL nor PROXY */
        PROXY_EV2_FAMILY = -10, /* family/transport byte not one the spec defines */
        PROXY_EV2_SHORT = -11, /* length too small for the announced addresses */
        PROXY_EV2_LONG = -12, /* header longer than PROXY_V2_MAX */
};
#define PROXY_ERROR_LAST PROXY_EV2_LONG

enum proxy_command {
        PROXY_LOCAL = 0, /* v2 LOCAL (health checks), v1 UNKNOWN */
        PROXY_PROXY = 1, /* relayed on behalf of a client */
};

struct proxy_header {
        uint8_t version; /* 1 or 2 */
        uint8_t command; /* enum proxy_command */
        /* True when src and dst hold the client's TCP endpoints (v1 TCP4,
         * TCP6; v2 PROXY over TCP4, TCP6). False means: keep the socket's own
         * peer (v1 UNKNOWN, v2 LOCAL, v2 PROXY over UNSPEC, UDP or UNIX);
         * src and dst are then zero. */
        bool has_addr;
        /* The family announced, for logs: AF_INET, AF_INET6, AF_UNIX or
         * AF_UNSPEC (always AF_UNSPEC for LOCAL and UNKNOWN). */
        sa_family_t family;
        /* sockaddr_in or sockaddr_in6, ports in network order. */
        struct sockaddr_storage src, dst;
};

/* Parses the PROXY header at the start of BUF (LEN bytes; not a string).
 * Returns the header's length (> 0, at most LEN; bytes after it are the
 * client's data) and fills OUT; or 0 when BUF so far is a valid beginning
 * of a header and more bytes are needed (never when LEN >= PROXY_MAX_LEN);
 * or an enum proxy_error. OUT is written only on success.
 *
 * Bytes are judged in order, as soon as they arrive: an error is returned
 * at the first byte no valid header can have there (the first byte of a
 * client that sends no header at all), and a longer buffer with the same
 * beginning gets the same result. */
int proxy_parse(const void *buf, size_t len, struct proxy_header *out);

/* A short reason for a proxy_parse() result, for log lines: the error's,
 * "incomplete header" for 0. Never NULL. */
const char *proxy_strerror(int result);
