// SPDX-License-Identifier: GPL-2.0
/*
 * perf bench sched messaging -t (threads), rebuilt with the time of each
 * phase: creating the threads, their "ready", the messaging, and the tail
 * after the last worker finished its work (joins and thread exits).
 * During the messaging a SCHED_FIFO thread samples /proc/stat every
 * 250 ms (idle %, runnable tasks); the main thread's run time and
 * run-queue wait during the joins come from its schedstat.
 *
 *   gcc -O2 -pthread -o messaging_phases tests/c/messaging_phases.c
 *   ./messaging_phases 256      # 256 groups of 20 + 20: 10,240 threads
 *
 * docs/bench/overload.md (run 5) says what it found.
 */
#define _GNU_SOURCE
#include <err.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DATASIZE 100
#define LOOPS 5
#define FDS 20

struct sender {
	int ready_out, wakefd;
	int out_fds[FDS];
};

struct receiver {
	int in_fd, ready_out, wakefd;
};

static double last_work;
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int sampling = 1;
static char timeline[1 << 16];
static int timeline_len;

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* user, nice, system, idle (ticks), then ctxt and procs_running */
static void read_stat(long long v[6])
{
	char line[512];
	FILE *f = fopen("/proc/stat", "r");

	memset(v, 0, 6 * sizeof(*v));
	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "cpu ", 4))
			sscanf(line + 4, "%lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3]);
		else if (!strncmp(line, "ctxt ", 5))
			v[4] = atoll(line + 5);
		else if (!strncmp(line, "procs_running ", 14))
			v[5] = atoll(line + 14);
	}
	if (f)
		fclose(f);
}

static void done_work(void)
{
	double t = now();

	pthread_mutex_lock(&last_lock);
	if (t > last_work)
		last_work = t;
	pthread_mutex_unlock(&last_lock);
}

static void ready(int ready_out, int wakefd)
{
	struct pollfd p = { .fd = wakefd, .events = POLLIN };

	if (write(ready_out, "R", 1) != 1)
		err(1, "ready");
	if (poll(&p, 1, -1) != 1)
		err(1, "poll");
}

static void *sender(void *arg)
{
	struct sender *s = arg;
	char data[DATASIZE];

	ready(s->ready_out, s->wakefd);
	memset(data, 'S', sizeof(data));
	for (int i = 0; i < LOOPS; i++)
		for (int j = 0; j < FDS; j++)
			for (int done = 0; done < DATASIZE;) {
				int n = write(s->out_fds[j], data + done, DATASIZE - done);

				if (n < 0)
					err(1, "send");
				done += n;
			}
	done_work();
	return NULL;
}

static void *receiver(void *arg)
{
	struct receiver *r = arg;
	char data[DATASIZE];

	ready(r->ready_out, r->wakefd);
	for (int i = 0; i < FDS * LOOPS; i++)
		for (int done = 0; done < DATASIZE;) {
			int n = read(r->in_fd, data + done, DATASIZE - done);

			if (n < 0)
				err(1, "receive");
			done += n;
		}
	done_work();
	return NULL;
}

static pthread_t worker(void *ctx, void *(*fn)(void *))
{
	pthread_attr_t attr;
	pthread_t t;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN);
	if (pthread_create(&t, &attr, fn, ctx))
		err(1, "pthread_create");
	pthread_attr_destroy(&attr);
	return t;
}

/* One group: FDS receivers, each with a socket pair, then FDS senders. */
static void group(pthread_t *t, int ready_out, int wakefd)
{
	struct sender *s = calloc(1, sizeof(*s));

	for (int i = 0; i < FDS; i++) {
		struct receiver *r = calloc(1, sizeof(*r));
		int fds[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
			err(1, "socketpair");
		*r = (struct receiver){ fds[0], ready_out, wakefd };
		s->out_fds[i] = fds[1];
		t[i] = worker(r, receiver);
	}
	s->ready_out = ready_out;
	s->wakefd = wakefd;
	for (int i = 0; i < FDS; i++)
		t[FDS + i] = worker(s, sender);
}

static void *sampler(void *arg)
{
	struct sched_param sp = { .sched_priority = 50 };
	long long prev[6], v[6];
	double t0 = now();

	(void)arg;
	pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
	read_stat(prev);
	while (sampling) {
		long long total;

		usleep(250000);
		read_stat(v);
		total = (v[0] + v[1] + v[2] + v[3]) - (prev[0] + prev[1] + prev[2] + prev[3]);
		timeline_len += snprintf(timeline + timeline_len, sizeof(timeline) - timeline_len,
					 "%.2f:%lld%%/%lld ", now() - t0,
					 100 * (v[3] - prev[3]) / (total > 0 ? total : 1), v[5]);
		memcpy(prev, v, sizeof(prev));
	}
	return NULL;
}

/* The calling thread's run time, run-queue wait (ns) and timeslices. */
static void schedstat(long long v[3])
{
	FILE *f = fopen("/proc/thread-self/schedstat", "r");

	if (!f || fscanf(f, "%lld %lld %lld", &v[0], &v[1], &v[2]) != 3)
		v[0] = v[1] = v[2] = 0;
	if (f)
		fclose(f);
}

int main(int argc, char **argv)
{
	int groups = argc > 1 ? atoi(argv[1]) : 10, total = groups * 2 * FDS;
	int readyfd[2], wakefd[2], blocked = 0;
	long long a[6], b[6], s0[3], s1[3], busy;
	pthread_t *t = calloc(total, sizeof(*t)), smp;
	double t0, t1, t2, t3;
	char c = 0;

	if (pipe(readyfd) || pipe(wakefd))
		err(1, "pipe");
	t0 = now();
	for (int i = 0; i < groups; i++)
		group(t + i * 2 * FDS, readyfd[1], wakefd[0]);
	t1 = now();
	for (int i = 0; i < total; i++)
		if (read(readyfd[0], &c, 1) != 1)
			err(1, "ready read");
	read_stat(a);
	t2 = now();
	pthread_create(&smp, NULL, sampler, NULL);
	if (write(wakefd[1], &c, 1) != 1)
		err(1, "go");
	schedstat(s0);
	for (int i = 0; i < total; i++)
		if (pthread_tryjoin_np(t[i], NULL)) {
			blocked++;
			pthread_join(t[i], NULL);
		}
	schedstat(s1);
	t3 = now();
	read_stat(b);
	sampling = 0;
	pthread_join(smp, NULL);
	busy = (b[0] + b[1] + b[2] + b[3]) - (a[0] + a[1] + a[2] + a[3]);
	if (busy <= 0)
		busy = 1;
	printf("threads %d: create %.2f s, ready %.2f s, messaging %.2f s (idle %lld%%, %lld context switches), tail after the last work %.2f s\n",
	       total, t1 - t0, t2 - t1, t3 - t2, 100 * (b[3] - a[3]) / busy, b[4] - a[4],
	       t3 - last_work);
	printf("main thread in the joins: ran %.2f s, waited for a CPU %.2f s, %lld timeslices, %d joins blocked\n",
	       (s1[0] - s0[0]) / 1e9, (s1[1] - s0[1]) / 1e9, s1[2] - s0[2], blocked);
	printf("timeline (s: idle %%/runnable): %s\n", timeline);
	return 0;
}
