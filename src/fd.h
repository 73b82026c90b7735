/* fd.h - small descriptor helpers shared by the modules that adopt fds. */
#pragma once

/* Makes an inherited fd non-blocking and close-on-exec, as every fd of
 * ours is; returns 0 or -errno. */
int fd_nonblock_cloexec(int fd);

/* Opens /dev/null on whichever of fds 0, 1 and 2 is closed, so that no
 * socket of ours can become "stderr" and receive log lines. Returns 0 or
 * -errno. */
int fd_guard_stdio(void);
