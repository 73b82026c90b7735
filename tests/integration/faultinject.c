/* faultinject.c - an LD_PRELOAD shim for tests that need a system call to
 * fail where no test can make it fail for real.
 *
 * EPOLLD_FAIL_STATUS_ARMS=N: the first N one-shot timerfd_settime() calls
 * of exactly 1 s (how notify.c arms its STATUS= timer; idle_timeout is
 * off in those tests) fail with EINVAL.
 * EPOLLD_FAIL_RCVLOWAT_RESET=1: setsockopt(SO_RCVLOWAT) to 1 (the end of a
 * PROXY header phase that raised it) fails with ENOMEM.
 * EPOLLD_GETPWNAM_LOG=PATH: every getpwnam() appends the name and a
 * newline to PATH, so a test can see when the user is looked up.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

static int fail_status_arm(const struct itimerspec *its)
{
        static long left = -1;
        const char *e;

        if (its->it_value.tv_sec != 1 || its->it_value.tv_nsec != 0 ||
            its->it_interval.tv_sec != 0 || its->it_interval.tv_nsec != 0)
                return 0;
        if (left < 0) {
                e = getenv("EPOLLD_FAIL_STATUS_ARMS");
                left = e ? strtol(e, NULL, 10) : 0;
        }
        if (left <= 0)
                return 0;
        left--;
        return 1;
}

int timerfd_settime(int fd, int flags, const struct itimerspec *its, struct itimerspec *old)
{
        int (*real)(int, int, const struct itimerspec *, struct itimerspec *);

        /* dlsym() returns an object pointer; this is POSIX's way to convert. */
        *(void **)&real = dlsym(RTLD_NEXT, "timerfd_settime");
        if (its && fail_status_arm(its)) {
                errno = EINVAL;
                return -1;
        }
        return real(fd, flags, its, old);
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
        int (*real)(int, int, int, const void *, socklen_t);
        const char *e = getenv("EPOLLD_FAIL_RCVLOWAT_RESET");
        int v;

        *(void **)&real = dlsym(RTLD_NEXT, "setsockopt");
        if (e && e[0] == '1' && level == SOL_SOCKET && name == SO_RCVLOWAT && value &&
            len == sizeof(int)) {
                memcpy(&v, value, sizeof(v));
                if (v == 1) {
                        errno = ENOMEM;
                        return -1;
                }
        }
        return real(fd, level, name, value, len);
}

struct passwd *getpwnam(const char *name)
{
        struct passwd *(*real)(const char *);
        const char *path = getenv("EPOLLD_GETPWNAM_LOG");
        struct iovec iov[2] = { { (void *)name, strlen(name) }, { "\n", 1 } };
        int fd;

        *(void **)&real = dlsym(RTLD_NEXT, "getpwnam");
        if (path) {
                fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        ssize_t w = writev(fd, iov, 2);

                        (void)w; /* a test that misses a line fails on its own */
                        close(fd);
                }
        }
        return real(name);
}
