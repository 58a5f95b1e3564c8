/* A spinning thread that hints itself through libscx_phase, for the
 * service and container tests. Prints one JSON line (ids as its own PID
 * namespace numbers them), then spins until stdin closes.
 * Usage: hint_spin PHASE thread [TAG]   hint this thread, spin on it
 *        hint_spin PHASE process [TAG]  set the process-wide phase and spin
 *                                       on a thread with no hint of its own
 *        hint_spin none thread [TAG]    spin un-hinted
 * TAG is only there to find the process in /proc from outside. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <scx_phase.h>

static volatile int spin_tid;

/* Ends the process when stdin closes. */
static void *watch_stdin(void *arg)
{
	char buf[64];

	(void)arg;
	while (fread(buf, 1, sizeof(buf), stdin) > 0)
		;
	_exit(0);
	return NULL;
}

static void *spin(void *arg)
{
	volatile unsigned long x = 0;

	(void)arg;
	spin_tid = gettid();
	for (;;)
		x = x * 6364136223846793005UL + 1;
	return NULL;
}

/* The seccomp mode of this process (2: a filter), from /proc. */
static int seccomp_mode(void)
{
	char line[256];
	int mode = -1;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &mode) == 1)
			break;
	if (f)
		fclose(f);
	return mode;
}

int main(int argc, char **argv)
{
	int process = argc > 2 && !strcmp(argv[2], "process");
	int hinted = argc > 1 && strcmp(argv[1], "none");
	int phase = hinted ? atoi(argv[1]) : -1, ret = 0;
	union bpf_attr attr;
	pthread_t t, w;
	long r;

	memset(&attr, 0, sizeof(attr));
	r = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
	if (hinted)
		ret = process ? scx_phase_set_process(phase) : scx_phase_set(phase);
	if (process || !hinted) {
		pthread_create(&t, NULL, spin, NULL);
		while (!spin_tid)
			usleep(1000);
	} else {
		spin_tid = gettid();
	}
	printf("{\"pid\": %d, \"tid\": %d, \"set\": %d, \"error\": \"%s\", "
	       "\"bpf\": %ld, \"bpf_errno\": %d, \"seccomp\": %d}\n",
	       getpid(), spin_tid, ret, ret ? scx_phase_last_error() : "",
	       r, r < 0 ? errno : 0, seccomp_mode());
	fflush(stdout);
	pthread_create(&w, NULL, watch_stdin, NULL);
	if (!process && hinted)
		spin(NULL);
	pthread_join(w, NULL);
	return 0;
}
