/* Cost of one scx_phase_set() from C: SAMPLES timings of BATCH calls
 * each; prints "p50_ns p99_ns" per call. The path is the library's: the
 * hint service ($SCX_PHASE_SOCKET) or a tid map ($SCX_PHASE_MAP). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <scx_phase.h>

#define BATCH 100

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 2000;
	double *d = malloc(sizeof(*d) * n);

	if (!d || scx_phase_set(SCX_PHASE_FORWARD))
		return 1;
	for (int i = 0; i < n; i++) {
		long long t0 = now_ns();

		for (int j = 0; j < BATCH; j++)
			if (scx_phase_set(j & 1 ? SCX_PHASE_FORWARD : SCX_PHASE_BACKWARD))
				return 1;
		d[i] = (double)(now_ns() - t0) / BATCH;
	}
	qsort(d, n, sizeof(*d), cmp);
	printf("%.1f %.1f\n", d[n / 2], d[n * 99 / 100]);
	return 0;
}
