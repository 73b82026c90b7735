/* proc.h: what the load generator reads about the server from /proc. */
#ifndef PROC_H
#define PROC_H

#include <stdint.h>
#include <sys/types.h>

/* utime+stime of the whole process, in microseconds. 0 or -errno. */
int proc_cpu_us(pid_t pid, uint64_t *us);
/* Time spent runnable but waiting for a CPU (schedstat run_delay), in ns,
 * of the process's main thread; pid 0 is this process. 0 or -errno. */
int proc_wait_ns(pid_t pid, uint64_t *ns);
/* VmRSS of the process, in bytes. 0 or -errno. */
int proc_rss_bytes(pid_t pid, uint64_t *bytes);

#endif
