/* floor.c: the practical floor for epolld's cost, used by tests/bench/run.
 *
 *   floor --port PORT [--addr 127.0.0.1]
 *
 * A bare level-triggered epoll server that does, per event, only the system
 * calls the protocol needs: accept4() of non-blocking sockets, one read()
 * into a stack buffer, one write() of "Hi!", close() on end of file or
 * error. No logging, limits, timeouts or signal handling: it runs until it
 * is killed. Whatever epolld spends beyond this is the price of its
 * features, which is what the benchmark ratios show. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 1024
#define BACKLOG 4096
#define ACCEPTS_PER_EVENT 64

static const char reply[3] = { 'H', 'i', '!' };

static int die(const char *what)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
	return -1;
}

/* The hold benchmark keeps ~19,000 connections: take the hard fd limit. */
static int raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return die("getrlimit(NOFILE)");
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return die("setrlimit(NOFILE)");
	return 0;
}

static int listen_on(const char *addr, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "floor: invalid address '%s'\n", addr);
		return -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return die("socket");
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, BACKLOG) < 0) {
		die("setsockopt/bind/listen");
		close(fd);
		return -1;
	}
	return fd;
}

static int watch(int epfd, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void accept_some(int epfd, int lfd)
{
	for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != ECONNABORTED)
				die("accept4");
			return;
		}
		if (watch(epfd, fd) < 0) {
			die("epoll_ctl");
			close(fd);
		}
	}
}

/* One read, one reply; close() also removes the fd from the epoll set. */
static void serve(int fd)
{
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0 || write(fd, reply, sizeof(reply)) != (ssize_t)sizeof(reply))
		close(fd);
}

static int run(int lfd)
{
	int epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0 || watch(epfd, lfd) < 0)
		return die("epoll");
	struct epoll_event ev[MAX_EVENTS];
	for (;;) {
		int n = epoll_wait(epfd, ev, MAX_EVENTS, -1);
		if (n < 0 && errno != EINTR)
			return die("epoll_wait");
		for (int i = 0; i < n; i++) {
			if (ev[i].data.fd == lfd)
				accept_some(epfd, lfd);
			else
				serve(ev[i].data.fd);
		}
	}
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1";
	int port = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--port") == 0)
			port = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--addr") == 0)
			addr = argv[i + 1];
		else
			port = -1;
	}
	if (port <= 0 || port > 65535 || argc % 2 == 0) {
		fprintf(stderr, "usage: floor --port PORT [--addr IPV4]\n");
		return 2;
	}
	if (raise_nofile() < 0)
		return 1;
	int lfd = listen_on(addr, port);
	if (lfd < 0)
		return 1;
	return run(lfd) < 0 ? 1 : 0;
}
