/* config.h - the parsed configuration: one plain struct, complete and
 * validated before anything is bound, so a reload can parse into a fresh
 * struct and swap it in only when it is whole. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "addr.h"
#include "cidr.h"

#define CONFIG_MAX_LISTEN 64
#define CONFIG_ERROR_MAX 512
#define CONFIG_USER_MAX 32
#define CONFIG_MAX_PROXY_FROM 64
/* A configuration file is a few hundred bytes; the limit bounds the work a
 * reload does in the loop whatever the path names. */
#define CONFIG_FILE_MAX 1048576 /* 1 MiB */

struct config {
        struct addr listen[CONFIG_MAX_LISTEN];
        unsigned listen_line[CONFIG_MAX_LISTEN]; /* 0 for the built-in default */
        unsigned n_listen;
        uint32_t max_events;
        uint32_t backlog;
        uint32_t max_connections;
        uint32_t idle_timeout; /* seconds, 0 = never */
        bool reuseport; /* SO_REUSEPORT on the listeners we bind */
        int log_level; /* syslog priority */
        char user[CONFIG_USER_MAX + 1]; /* drop to this user after binding; "" = stay */
        bool proxy_protocol; /* every connection begins with a PROXY v1/v2 header */
        uint32_t proxy_timeout; /* seconds a header may take to arrive */
        struct cidr proxy_from[CONFIG_MAX_PROXY_FROM]; /* peers that may send one; none = any */
        unsigned proxy_from_line[CONFIG_MAX_PROXY_FROM];
        unsigned n_proxy_from;
};

/* The documented defaults: listen 127.0.0.1:8001, max_events 1024, ... */
void config_defaults(struct config *c);

/* Parses the INI text from F (named NAME in messages) into C, reading no
 * further than the first error and no more than CONFIG_FILE_MAX bytes. On
 * error returns -1 and writes "NAME:LINE: message" (or "NAME: message") to
 * ERR; C is then unspecified, so callers parse into a scratch struct. */
int config_parse_stream(struct config *c, FILE *f, const char *name, char err[CONFIG_ERROR_MAX]);

/* Opens PATH without blocking and parses it as above. Anything but a
 * regular file (a FIFO, a device, a directory) is refused before a byte is
 * read, so neither -t nor a reload in the loop can block or read forever.
 * LOOKUP_USER: check that [server] user exists (the user database may
 * stall: a reload in the loop passes false and keeps only the name). */
int config_load(struct config *c, const char *path, bool lookup_user, char err[CONFIG_ERROR_MAX]);
