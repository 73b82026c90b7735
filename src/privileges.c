/* privileges.c - dropping root after binding.
 *
 * Binding may need root (ports below 1024); serving never does. So main
 * binds first and then switches to [server] user. Under systemd the unit's
 * DynamicUser= does this job better, and user stays empty. After a re-exec
 * we may already be that user, which is fine.
 */
#include "privileges.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static int switch_to(const struct passwd *pw)
{
        int r;

        if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
            setuid(pw->pw_uid) < 0) {
                r = -errno;
                log_err("cannot switch to user %s (uid %u, gid %u): %s", pw->pw_name,
                        (unsigned)pw->pw_uid, (unsigned)pw->pw_gid, strerror(-r));
                return r;
        }
        if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
                log_err("root could be regained after switching to user %s; refusing to run",
                        pw->pw_name);
                return -EPERM;
        }
        log_notice("dropped privileges to user %s (uid %u, gid %u)", pw->pw_name,
                   (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
        return 0;
}

int privileges_drop(const char *user)
{
        struct passwd *pw;

        if (user[0] == '\0') {
                /* INVOCATION_ID is set by systemd for every service it runs. */
                if (geteuid() == 0 && !getenv("INVOCATION_ID"))
                        log_warning("running as root; set [server] user = NAME to drop "
                                    "privileges after binding");
                return 0;
        }
        errno = 0;
        pw = getpwnam(user);
        if (!pw) {
                log_err("cannot switch to user %s: %s", user,
                        errno ? strerror(errno) : "no such user");
                return errno ? -errno : -ENOENT;
        }
        if (getuid() == pw->pw_uid && geteuid() == pw->pw_uid && getegid() == pw->pw_gid)
                return 0;
        if (geteuid() != 0) {
                log_err("cannot switch to user %s: not running as root", user);
                return -EPERM;
        }
        return switch_to(pw);
}
