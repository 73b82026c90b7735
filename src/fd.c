/* fd.c - descriptor helpers: flags for adopted fds, and keeping fds 0-2
 * taken so that a daemon started with stdio closed does not log into a
 * client's socket. */
#include "fd.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int fd_nonblock_cloexec(int fd)
{
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return -errno;
        return 0;
}

int fd_guard_stdio(void)
{
        for (int fd = 0; fd <= 2; fd++) {
                int null;

                if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
                        continue;
                /* open() returns the lowest free number: this one. */
                null = open("/dev/null", O_RDWR);
                if (null < 0)
                        return -errno;
                if (null != fd) {
                        close(null);
                        return -EBADF;
                }
        }
        return 0;
}
