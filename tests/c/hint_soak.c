/* The hint service under churn: rounds of THREADS threads that each
 * register, flip their phase at FLIP_HZ for ROUND_MS, and exit, for
 * SECONDS. Prints one JSON line with what it did.
 * Usage: hint_soak THREADS SECONDS [ROUND_MS] [FLIP_HZ] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <scx_phase.h>

static long round_ns, flip_ns;
static atomic_long writes, registered, errors;

static long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *churn(void *arg)
{
	long start = now_ns(), next = start, n = 0;
	int phase = SCX_PHASE_BACKWARD;

	(void)arg;
	if (scx_phase_set(SCX_PHASE_FORWARD)) {
		atomic_fetch_add(&errors, 1);
		return NULL;
	}
	atomic_fetch_add(&registered, 1);
	while (now_ns() - start < round_ns) {
		if (now_ns() < next)
			continue;
		next += flip_ns;
		phase = phase == SCX_PHASE_BACKWARD ? SCX_PHASE_FORWARD : SCX_PHASE_BACKWARD;
		if (scx_phase_set(phase))
			atomic_fetch_add(&errors, 1);
		n++;
	}
	atomic_fetch_add(&writes, n);
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 1000;
	double seconds = argc > 2 ? atof(argv[2]) : 60;
	long ms = argc > 3 ? atol(argv[3]) : 1000, hz = argc > 4 ? atol(argv[4]) : 10000;
	pthread_t *t = calloc(threads, sizeof(*t));
	long end = now_ns() + (long)(seconds * 1e9), rounds = 0, created = 0;

	if (!t)
		return 1;
	round_ns = ms * 1000000L;
	flip_ns = 1000000000L / hz;
	while (now_ns() < end) {
		int n = 0;

		for (int i = 0; i < threads; i++)
			if (!pthread_create(&t[n], NULL, churn, NULL))
				n++;
		for (int i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		created += n;
		rounds++;
	}
	printf("{\"rounds\": %ld, \"threads\": %ld, \"registered\": %ld, \"writes\": %ld, "
	       "\"errors\": %ld}\n", rounds, created, atomic_load(&registered),
	       atomic_load(&writes), atomic_load(&errors));
	return 0;
}
