/* A workload that claims CPUs through libscx_phase and keeps THREADS
 * threads busy (or asleep) until stdin closes. Prints one JSON line.
 * Usage: workload_spin CPUS NODE EXCLUSIVE THREADS [sleep] [TAG]
 *        NODE: a node id, -1 any, -2 the GPU's
 *        $SPIN_PHASE: a phase each spinning thread sets */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <scx_phase.h>

static volatile int busy = 1;

static void *spin(void *arg)
{
	volatile unsigned long x = 0;
	const char *phase = getenv("SPIN_PHASE");

	(void)arg;
	/* A phase for every spinning thread, if asked (the soak's job). */
	if (phase)
		scx_phase_set(atoi(phase));
	for (;;) {
		if (busy)
			x = x * 6364136223846793005UL + 1;
		else
			usleep(100000);
	}
	return NULL;
}

/* The rest of a JSON line: "cpus": [...]} */
static void print_cpus(struct scx_phase_workload *w)
{
	int cpus[64], n = scx_phase_workload_cpus(w, cpus, 64);

	printf("\"cpus\": [");
	for (int i = 0; i < n && i < 64; i++)
		printf("%s%d", i ? ", " : "", cpus[i]);
	printf("]}\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct scx_phase_workload_req req = { 0 };
	struct scx_phase_workload *w = NULL;
	int threads, err;
	char line[64];
	pthread_t t;

	if (argc < 5)
		return 2;
	req.cpus = atoi(argv[1]);
	req.node = atoi(argv[2]);
	req.exclusive = atoi(argv[3]);
	threads = atoi(argv[4]);
	busy = !(argc > 5 && !strcmp(argv[5], "sleep"));
	err = scx_phase_workload_open(&req, &w);
	if (err) {
		printf("{\"error\": %d, \"message\": \"%s\"}\n", err, scx_phase_last_error());
		return 1;
	}
	printf("{\"error\": 0, \"pid\": %d, \"node\": %d, ", getpid(),
	       scx_phase_workload_node(w));
	print_cpus(w);
	for (int i = 0; i < threads; i++) {
		pthread_create(&t, NULL, spin, NULL);
		pthread_setname_np(t, "spin");
	}
	/* "busy" / "sleep" lines switch the threads, "cpus" prints the
	 * claim as the library sees it now; EOF ends it all. */
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "cpus", 4)) {
			printf("{");
			print_cpus(w);
			continue;
		}
		busy = !strncmp(line, "busy", 4);
		printf("{\"busy\": %d}\n", busy);
		fflush(stdout);
	}
	scx_phase_workload_close(w);
	return 0;
}
