/* privileges.h - giving up root once the listeners are bound. */
#pragma once

/* Switches to USER (its uid, gid and supplementary groups) and checks that
 * root cannot be regained. USER "" keeps the current identity (with a
 * warning for root outside systemd). Returns 0 or -errno, logged. */
int privileges_drop(const char *user);
