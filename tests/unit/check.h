/* check.h - the few assertions the unit tests need, and a summary line in
 * the form CI reads ("N passed, N failed"). */
#pragma once

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                                           \
        do {                                                                                       \
                if (cond) {                                                                        \
                        check_passed++;                                                            \
                } else {                                                                           \
                        check_failed++;                                                            \
                        fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);                    \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                }                                                                                  \
        } while (0)

#define CHECK_STR(got, want, what)                                                                 \
        CHECK(strcmp((got), (want)) == 0, "%s:\n  got:  %s\n  want: %s", (what), (got), (want))

static inline int check_summary(void)
{
        printf("%d passed, %d failed\n", check_passed, check_failed);
        return check_failed ? 1 : 0;
}
