/* main.c - the command line and the life of the process, in order: parse
 * options, load and validate the configuration, set everything up, tell
 * systemd we are ready, run the loop, shut down. Exit codes follow
 * sysexits(3): 64 usage, 78 configuration, 71 cannot start. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "config.h"
#include "fd.h"
#include "log.h"
#include "reexec.h"
#include "server.h"

#define DEFAULT_CONFIG EPOLLD_SYSCONFDIR "/epolld/epolld.ini"

struct options {
        const char *config; /* -c FILE, or NULL */
        bool check; /* -t */
};

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: epolld [-c FILE | --config FILE] [-t | --check-config]\n"
                "              [-V | --version] [-h | --help]\n"
                "\n"
                "A TCP daemon that answers every read with \"Hi!\".\n"
                "\n"
                "  -c, --config FILE   read FILE (default: %s if it exists,\n"
                "                      else built-in defaults)\n"
                "  -t, --check-config  validate the configuration, bind nothing, and exit\n"
                "  -V, --version       print the version and exit\n"
                "  -h, --help          print this help and exit\n",
                DEFAULT_CONFIG);
}

/* Returns -1 to go on, or the exit code to leave with. */
static int parse_args(int argc, char **argv, struct options *o)
{
        static const struct option longopts[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 't' },
                { "version", no_argument, NULL, 'V' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        int opt;

        while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
                switch (opt) {
                case 'c':
                        o->config = optarg;
                        break;
                case 't':
                        o->check = true;
                        break;
                case 'V':
                        printf("epolld %s\n", EPOLLD_VERSION);
                        return EX_OK;
                case 'h':
                        usage(stdout);
                        return EX_OK;
                default:
                        usage(stderr);
                        return EX_USAGE;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "epolld: unexpected argument '%s'\n", argv[optind]);
                usage(stderr);
                return EX_USAGE;
        }
        return -1;
}

/* Loads -c FILE, else the default file if there is one, else the defaults.
 * *PATH is what a reload or a re-exec will read again (NULL: nothing): the
 * choice is made once, at the first start, and a re-exec'ed image keeps the
 * one its previous image made (a default file that appeared since is read
 * at the next start, not by a reload or an upgrade). */
static int load_config(const struct options *o, struct config *c, const char **path,
                       char err[CONFIG_ERROR_MAX])
{
        const char *before = NULL;
        bool reexeced = reexec_config(&before);

        if (o->config)
                *path = o->config;
        else if (reexeced)
                *path = before;
        else
                *path = access(DEFAULT_CONFIG, F_OK) == 0 ? DEFAULT_CONFIG : NULL;
        if (*path)
                return config_load(c, *path, true, err);
        config_defaults(c);
        if (reexeced)
                log_notice("re-executed on the built-in defaults, as before");
        else
                log_notice("no configuration file at %s; using built-in defaults", DEFAULT_CONFIG);
        return 0;
}

static int check_only(const char *path, int r, const char *err)
{
        if (r < 0) {
                fprintf(stderr, "%s\n", err);
                return EX_CONFIG;
        }
        printf("%s: configuration is valid\n", path ? path : "built-in defaults");
        return EX_OK;
}

int main(int argc, char **argv)
{
        static struct server server;
        char err[CONFIG_ERROR_MAX];
        struct options o = { 0 };
        struct config cfg;
        const char *path;
        int r = parse_args(argc, argv, &o);

        if (r >= 0)
                return r;
        if (fd_guard_stdio() < 0)
                return EX_OSERR; /* with no stderr there is no one to tell */
        log_init();
        r = load_config(&o, &cfg, &path, err);
        if (o.check)
                return check_only(path, r, err);
        if (r < 0) {
                log_err("%s", err);
                return EX_CONFIG;
        }
        log_set_max_priority(cfg.log_level);
        if (server_init(&server, &cfg, path, argv) < 0) {
                server_deinit(&server);
                return EX_OSERR;
        }
        r = server_run(&server);
        server_deinit(&server);
        return r < 0 ? EX_OSERR : EX_OK;
}
