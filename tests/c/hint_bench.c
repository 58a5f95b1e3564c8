/* Cost of one scx_phase_set() from C, per call: prints "p50_ns p99_ns".
 * The map is the one named by SCX_PHASE_MAP. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <scx_phase.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100000;
	long long *d = malloc(sizeof(*d) * n);

	if (!d || scx_phase_set(SCX_PHASE_FORWARD))
		return 1;
	for (int i = 0; i < n; i++) {
		long long t0 = now_ns();

		if (scx_phase_set(i & 1 ? SCX_PHASE_FORWARD : SCX_PHASE_BACKWARD))
			return 1;
		d[i] = now_ns() - t0;
	}
	qsort(d, n, sizeof(*d), cmp);
	printf("%lld %lld\n", d[n / 2], d[n * 99 / 100]);
	return 0;
}
