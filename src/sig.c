/* sig.c - SIGTERM/SIGINT stop, SIGHUP reloads, SIGUSR2 re-execs; all through one signalfd, so
 * a signal is just another event in the loop and no handler runs at an
 * arbitrary point of the code. */
#include "sig.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "reexec.h"
#include "server.h"

static void handled_set(sigset_t *set)
{
        sigemptyset(set);
        sigaddset(set, SIGTERM);
        sigaddset(set, SIGINT);
        sigaddset(set, SIGHUP);
        sigaddset(set, SIGUSR2);
}

int sig_init(struct server *s)
{
        sigset_t set;
        int r;

        /* A peer that resets mid-reply must cost an EPIPE, not the process. */
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
                r = -errno;
                log_err("ignoring SIGPIPE failed: %s", strerror(-r));
                return r;
        }
        handled_set(&set);
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) {
                r = -errno;
                log_err("sigprocmask failed: %s", strerror(-r));
                return r;
        }
        s->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (s->signal_fd < 0) {
                r = -errno;
                log_err("signalfd failed: %s", strerror(-r));
                return r;
        }
        r = loop_add(s, s->signal_fd, EPOLLIN, tag_make(TAG_SIGNAL, 0, 0));
        if (r < 0)
                log_err("epoll_ctl(ADD) of the signalfd failed: %s", strerror(-r));
        return r;
}

void sig_deinit(struct server *s)
{
        if (s->signal_fd >= 0 && close(s->signal_fd) < 0)
                log_warning("close of the signalfd failed: %s", strerror(errno));
        s->signal_fd = -1;
}

static void on_signal(struct server *s, int signo)
{
        switch (signo) {
        case SIGTERM:
        case SIGINT:
                log_event(LOG_NOTICE, "stop", sigabbrev_np(signo), "received SIG%s, stopping",
                          sigabbrev_np(signo));
                s->stopping = true;
                break;
        case SIGHUP:
        case SIGUSR2:
                /* A stop has begun: a re-exec now would cancel it. */
                if (s->stopping)
                        log_notice("ignoring SIG%s: stopping", sigabbrev_np(signo));
                else if (signo == SIGHUP)
                        server_reload(s);
                else
                        reexec(s);
                break;
        default:
                break;
        }
}

void sig_on_readable(struct server *s)
{
        struct signalfd_siginfo si;
        ssize_t n;

        while ((n = read(s->signal_fd, &si, sizeof(si))) == (ssize_t)sizeof(si))
                on_signal(s, (int)si.ssi_signo);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
                log_err("read of the signalfd failed: %s", strerror(errno));
}
