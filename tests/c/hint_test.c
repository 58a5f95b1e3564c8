/* Drives the C ABI against the hint service named by SCX_PHASE_SOCKET.
 * Usage: hint_test DEAD_TID        (root: exercise every call)
 *        hint_test --unprivileged  (a user outside --hint-group)
 *        hint_test --missing       (no service: every call says so)
 *        hint_test --hold PHASE    (hint PHASE, print the tid, wait for EOF) */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <scx_phase.h>

#define CHECK(call, want)                                                     \
	do {                                                                  \
		int r_ = (call);                                              \
		if (r_ != (want)) {                                           \
			fprintf(stderr, "%s = %d (%s: %s), want %d\n", #call, \
				r_, scx_phase_strerror(r_),                   \
				scx_phase_last_error(), (want));              \
			return 1;                                             \
		}                                                             \
	} while (0)

static int hold(int phase)
{
	char buf[64];

	CHECK(scx_phase_set(phase), 0);
	printf("tid=%d\n", (int)gettid());
	fflush(stdout);
	while (fread(buf, 1, sizeof(buf), stdin) > 0)
		;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--missing")) {
		CHECK(scx_phase_set(SCX_PHASE_BACKWARD), -ENOENT);
		CHECK(scx_phase_set_process(SCX_PHASE_FORWARD), -ENOENT);
		printf("%s\n%s\n", scx_phase_strerror(-ENOENT), scx_phase_last_error());
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "--unprivileged")) {
		CHECK(scx_phase_set(SCX_PHASE_IDLE), 0);
		CHECK(scx_phase_set(SCX_PHASE_BACKWARD), -EPERM);
		printf("%s\n", scx_phase_last_error());
		CHECK(scx_phase_set_process(SCX_PHASE_FORWARD), -EPERM);
		CHECK(scx_phase_set_tid(1, SCX_PHASE_IDLE, SCX_PHASE_NODE_ANY), -EPERM);
		printf("%s\n", scx_phase_last_error());
		return 0;
	}
	if (argc > 2 && !strcmp(argv[1], "--hold"))
		return hold(atoi(argv[2]));
	if (argc < 2)
		return 2;
	pid_t dead = (pid_t)atoi(argv[1]);

	CHECK(scx_phase_set(SCX_PHASE_BACKWARD), 0);
	CHECK(scx_phase_clear(), 0);
	CHECK(scx_phase_set(99), -EINVAL);
	CHECK(scx_phase_set(-1), -EINVAL);
	CHECK(scx_phase_set_node(SCX_PHASE_FORWARD, -2), -EINVAL);
	if (!strstr(scx_phase_last_error(), "invalid"))
		return 1;
	CHECK(scx_phase_set_tid(dead, SCX_PHASE_FORWARD, SCX_PHASE_NODE_ANY), -ESRCH);
	CHECK(scx_phase_set_tid(gettid(), SCX_PHASE_CHECKPOINT, 0), 0);
	CHECK(scx_phase_clear_tid(gettid()), 0);
	CHECK(scx_phase_set_process(SCX_PHASE_FORWARD), 0);
	CHECK(scx_phase_set_node(SCX_PHASE_DATA_LOADING, 1), 0);
	if (!scx_phase_strerror(-ESRCH) || !strstr(scx_phase_strerror(-ESRCH), "thread"))
		return 1;
	printf("tid=%d\n", (int)gettid());
	fflush(stdout);
	/* Hold the hint until told to go, so the test can look at it. */
	char buf[8];
	while (fread(buf, 1, sizeof(buf), stdin) > 0)
		;
	return 0;
}
