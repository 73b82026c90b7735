/* driver.c - runs saved inputs through a fuzz target's entry point without
 * libFuzzer, so the corpus and every regression run as plain tests with any
 * compiler. Arguments are files or directories (every regular file in them,
 * in name order). A violated invariant aborts inside the target, after the
 * "running" line that names the input. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
        FILE *f = fopen(path, "rb");
        uint8_t *data = NULL;
        size_t size = 0, cap = 0, n;

        if (!f) {
                perror(path);
                return -1;
        }
        do {
                if (size == cap) {
                        uint8_t *bigger = realloc(data, cap = cap ? 2 * cap : 4096);

                        if (!bigger)
                                abort();
                        data = bigger;
                }
                n = fread(data + size, 1, cap - size, f);
                size += n;
        } while (n > 0);
        if (ferror(f)) {
                perror(path);
                fclose(f);
                free(data);
                return -1;
        }
        fclose(f);
        printf("running %s (%zu bytes)\n", path, size);
        fflush(stdout);
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        return 0;
}

static int run_dir(const char *dir, unsigned *ran)
{
        struct dirent **names;
        int n = scandir(dir, &names, NULL, alphasort), r = 0;

        if (n < 0) {
                perror(dir);
                return -1;
        }
        for (int i = 0; i < n; i++) {
                char path[4096];
                struct stat st;

                snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
                if (names[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                        if (run_file(path) < 0)
                                r = -1;
                        else
                                (*ran)++;
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv)
{
        unsigned ran = 0;
        int r = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;

                if (stat(argv[i], &st) < 0) {
                        perror(argv[i]);
                        r = -1;
                } else if (S_ISDIR(st.st_mode)) {
                        r |= run_dir(argv[i], &ran);
                } else if (run_file(argv[i]) < 0) {
                        r = -1;
                } else {
                        ran++;
                }
        }
        printf("%u input(s) ran without a finding\n", ran);
        return r < 0 || ran == 0 ? 1 : 0;
}
