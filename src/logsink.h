/* logsink.h - where log lines go (stderr or the journal), without ever
 * blocking. log.c decides what to write; this says whether it got out. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct log_fields;

/* Looks at what stderr is and whether it is the journal's stream; called
 * once at start (a re-exec'd image calls it again). NAME, the instance ("" = none,
 * at most LOG_INSTANCE_MAX characters) tags every line. */
void logsink_init(const char *name);

/* Writes one entry without blocking. True if it got out, or its start did
 * (the rest goes out before anything else); false if nothing was written. */
bool logsink_write(int priority, const struct log_fields *fields, const char *msg);

/* True while a partly written line waits for its end to go out. */
bool logsink_pending(void);

/* CLOCK_MONOTONIC in milliseconds (also the rate limits' clock). */
uint64_t logsink_now_ms(void);

/* Right before execve(): waits at most MS milliseconds for a partly
 * written line to be finished; if it is not, the rest is lost, and the
 * environment tells the new image to begin its output with a newline, so
 * its first line is not glued to the cut one. */
void logsink_before_exec(int ms);
/* execve() failed: this image still has the rest to write; forget the
 * note for the new image. */
void logsink_exec_failed(void);

/* At exit only: waits at most MS milliseconds for the output to take a
 * line (and for a partly written line to be finished). */
void logsink_wait_writable(int ms);
