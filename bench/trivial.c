/* SPDX-License-Identifier: MIT */
/* The baseline process of wsbench: prints one line and exits, which is the least any
 * command-line program costs (fork, exec, dynamic linking of libc, one write). With the
 * argument "wait" it then waits for end of input, so that its resident size can be read
 * as the floor of any C process. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char c;

	puts("trivial");
	if (argc > 1 && !strcmp(argv[1], "wait")) {
		(void)fflush(stdout);
		while (read(STDIN_FILENO, &c, 1) > 0)
			;
	}
	return 0;
}
