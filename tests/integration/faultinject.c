/* faultinject.c - an LD_PRELOAD shim for tests that need a system call to
 * fail where no test can make it fail for real.
 *
 * EPOLLD_FAIL_STATUS_ARMS=N: the first N one-shot timerfd_settime() calls
 * of exactly 1 s (how notify.c arms its STATUS= timer; idle_timeout is
 * off in those tests) fail with EINVAL.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/timerfd.h>

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
