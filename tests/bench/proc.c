/* proc.c: CPU time, CPU wait and resident memory of a process, from
 * /proc/PID/{stat,schedstat,status} (and getrusage for this process).
 *
 * The comm field of /proc/PID/stat may hold spaces and parentheses, so the
 * fields are parsed from after the last ')'. */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int read_file(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/%s", (long)pid, name);
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	size_t n = fread(buf, 1, size - 1, f);
	int err = ferror(f) ? -EIO : 0;
	fclose(f);
	buf[n] = '\0';
	return err;
}

/* Add one thread's on-CPU time, and its run_delay if it is the main
 * thread; a thread that exited in the meantime adds nothing. */
static int add_thread_sched(const char *dir, const char *tid, bool main_thread,
			    uint64_t *run_ns, uint64_t *wait_ns)
{
	char path[384], buf[256];
	snprintf(path, sizeof(path), "%s/%s/schedstat", dir, tid);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	unsigned long long run, wait;
	if (sscanf(buf, "%llu %llu", &run, &wait) != 2)
		return -EINVAL;
	*run_ns += run;
	if (main_thread)
		*wait_ns = wait;
	return 0;
}

int proc_cpu_us(pid_t pid, uint64_t *us)
{
	char buf[1024];
	int r = read_file(pid, "stat", buf, sizeof(buf));
	if (r < 0)
		return r;
	const char *p = strrchr(buf, ')');
	unsigned long long utime, stime;
	/* After ')': state(3) ppid pgrp session tty_nr tpgid flags minflt
	 * cminflt majflt cmajflt utime(14) stime(15). */
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &utime, &stime) != 2)
		return -EINVAL;
	long hz = sysconf(_SC_CLK_TCK);
	if (hz <= 0)
		return -EINVAL;
	*us = (utime + stime) * UINT64_C(1000000) / (uint64_t)hz;
	return 0;
}

int proc_sched_ns(pid_t pid, uint64_t *run_ns, uint64_t *wait_ns)
{
	char dir[64];
	if (pid == 0)
		snprintf(dir, sizeof(dir), "/proc/self/task");
	else
		snprintf(dir, sizeof(dir), "/proc/%ld/task", (long)pid);
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	*run_ns = *wait_ns = 0;
	long main_tid = pid ? (long)pid : (long)getpid();
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		bool is_main = strtol(de->d_name, NULL, 10) == main_tid;
		r = add_thread_sched(dir, de->d_name, is_main, run_ns, wait_ns);
	}
	closedir(d);
	return r;
}

int proc_self_cpu_us(uint64_t *us)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return -errno;
	uint64_t s = (uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec;
	*us = s * 1000000 + (uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec;
	return 0;
}

int proc_rss_bytes(pid_t pid, uint64_t *bytes)
{
	char buf[8192];
	int r = read_file(pid, "status", buf, sizeof(buf));
	if (r < 0)
		return r;
	const char *p = strstr(buf, "\nVmRSS:");
	unsigned long long kb;
	if (!p || sscanf(p + 7, "%llu kB", &kb) != 1)
		return -EINVAL;
	*bytes = kb * 1024;
	return 0;
}
