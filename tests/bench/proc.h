/* proc.h: what the load generator reads about the server from /proc. */
#ifndef PROC_H
#define PROC_H

#include <stdint.h>
#include <sys/types.h>

/* utime+stime of the whole process, in microseconds. 0 or -errno. */
int proc_cpu_us(pid_t pid, uint64_t *us);
/* From schedstat, in ns: time on a CPU summed over the process's threads
 * (the precise figure that utime+stime are rounded from, to clock ticks),
 * and the main thread's time spent runnable but waiting for a CPU (other
 * threads wait mostly for the main one: Redis's helpers, say). pid 0 is
 * this process. 0 or -errno. */
int proc_sched_ns(pid_t pid, uint64_t *run_ns, uint64_t *wait_ns);
/* utime+stime of this process, in microseconds (getrusage). 0 or -errno. */
int proc_self_cpu_us(uint64_t *us);
/* VmRSS of the process, in bytes. 0 or -errno. */
int proc_rss_bytes(pid_t pid, uint64_t *bytes);

#endif
