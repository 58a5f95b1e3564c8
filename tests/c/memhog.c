/* A memory hog: maps SIZE MiB and writes every page of it, over and over,
 * until killed. Prints "touched" once the first pass is done.
 * Usage: memhog SIZE_MIB */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	size_t size, page = sysconf(_SC_PAGESIZE);
	unsigned long pass = 0;
	char *p;

	if (argc < 2)
		return 2;
	size = strtoull(argv[1], NULL, 10) << 20;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	for (;;) {
		for (size_t off = 0; off < size; off += page)
			p[off] = (char)(pass + 1);
		if (!pass++) {
			printf("touched\n");
			fflush(stdout);
		}
	}
}
