/* proc.c: server CPU time and resident memory from /proc/PID/{stat,status}.
 *
 * The comm field of /proc/PID/stat may hold spaces and parentheses, so the
 * fields are parsed from after the last ')'. */
#include "proc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int read_file(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64];
	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/%s", name);
	else
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

int proc_wait_ns(pid_t pid, uint64_t *ns)
{
	char buf[256];
	int r = read_file(pid, "schedstat", buf, sizeof(buf));
	if (r < 0)
		return r;
	/* on-CPU time, run_delay, timeslices */
	unsigned long long wait;
	if (sscanf(buf, "%*u %llu", &wait) != 1)
		return -EINVAL;
	*ns = wait;
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
