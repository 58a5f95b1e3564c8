/* A job that checkpoints a model state of SIZE MiB into a file, either
 * through a locked checkpoint buffer from the workload API or through
 * memory allocated at save time, as torch.save does. One JSON line per
 * stdin command:
 *   status  VmLck, and how much of the buffer and the state is resident
 *   save    one checkpoint: serialize (copy) the state, write and fsync
 * Usage: checkpoint locked|plain SIZE_MIB DIR */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <scx_phase.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* All of [p, p + len) to fd: a write may be short (9p under memory
 * pressure returns part of a large one). 0, or -1 with errno. */
static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		len -= n;
	}
	return 0;
}

/* Percent of [p, p + len) resident, by mincore(). */
static double resident_pct(void *p, size_t len)
{
	size_t page = sysconf(_SC_PAGESIZE), n = (len + page - 1) / page, in = 0;
	unsigned char *vec = malloc(n);

	if (!vec || mincore(p, len, vec)) {
		free(vec);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		in += vec[i] & 1;
	free(vec);
	return in * 100.0 / n;
}

static long vmlck_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	struct scx_phase_workload_req req = { 0 };
	struct scx_phase_workload *w = NULL;
	void *buf = NULL;
	char path[4096], line[64];
	size_t size;
	uint64_t *state, x = 88172645463325252ULL;
	int locked, err;

	if (argc < 4)
		return 2;
	locked = !strcmp(argv[1], "locked");
	size = strtoull(argv[2], NULL, 10) << 20;
	snprintf(path, sizeof(path), "%s/checkpoint-%d", argv[3], getpid());
	if (locked) {
		req.locked_memory = size;
		err = scx_phase_workload_open(&req, &w);
		if (!err)
			err = scx_phase_workload_checkpoint_buffer(w, size, &buf);
		if (err) {
			printf("{\"error\": %d, \"message\": \"%s\"}\n", err, scx_phase_last_error());
			return 1;
		}
	}
	/* Weights are incompressible: xorshift, so zram cannot cheat. Mapped,
	 * not malloc()ed: mincore() wants a page-aligned start. */
	state = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (state == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < size / 8; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		state[i] = x;
	}
	printf("{\"error\": 0, \"pid\": %d}\n", getpid());
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "status", 6)) {
			printf("{\"vmlck_kb\": %ld, \"buffer_resident\": %.1f, \"state_resident\": %.1f}\n",
			       vmlck_kb(), buf ? resident_pct(buf, size) : -1.0,
			       resident_pct(state, size));
		} else if (!strncmp(line, "save", 4)) {
			double t0 = now_ms(), t1, t2;
			void *dst = locked ? buf : malloc(size);
			int fd;

			if (!dst)
				return 1;
			memcpy(dst, state, size);
			t1 = now_ms();
			fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			if (fd < 0 || write_all(fd, dst, size) || fsync(fd)) {
				printf("{\"error\": %d, \"message\": \"write %s: %s\"}\n", -errno, path,
				       strerror(errno));
				return 1;
			}
			close(fd);
			unlink(path);
			if (!locked)
				free(dst);
			t2 = now_ms();
			printf("{\"serialize_ms\": %.1f, \"write_ms\": %.1f, \"total_ms\": %.1f}\n",
			       t1 - t0, t2 - t1, t2 - t0);
		}
		fflush(stdout);
	}
	scx_phase_workload_close(w);
	return 0;
}
