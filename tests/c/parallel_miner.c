/*
 * parallel_miner MODEL_DIR IMAGE: co-typicality mining through the C API, checked from C (run by
 * tests/c_api.rs on the Plug-and-Play fixture with examples/data/chest_like.png, also under valgrind).
 *
 * Every check prints what failed; the exit status is the number of failed checks (0 = all passed).
 * Covered: dm_parallel_miner_options_default and dm_parallel_report_options_default; a miner's whole
 * life: create (its private versions folder appears in TMPDIR), add_file, write_report before the
 * run (refused), run with a progress callback, the element count and elements (consistent with the
 * clusters), write_report (elements.csv with a row per element, one strip per cluster of the
 * expected pixel size, index.html, nothing else) and free (the versions folder is gone). Leaks are
 * valgrind's to find.
 *
 * One 16×16 source (the image resized), two labels, two translation steps and two typicality samples
 * keep the run short enough for valgrind.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diffmine.h"

static int failures = 0;

static void expect(int ok, const char *what, int line) {
    if (!ok) {
        fprintf(stderr, "parallel_miner.c:%d: FAILED: %s (last error: \"%s\")\n", line, what, dm_last_error());
        failures++;
    }
}

static void expect_status(enum dm_status expected, enum dm_status got, const char *call, int line) {
    if (got != expected) {
        fprintf(stderr, "parallel_miner.c:%d: FAILED: %s returned %d, expected %d (last error: \"%s\")\n", line,
                call, (int)got, (int)expected, dm_last_error());
        failures++;
    }
}

#define EXPECT(cond) expect((cond), #cond, __LINE__)
#define EXPECT_STATUS(expected, call) expect_status((expected), (call), #call, __LINE__)

/* A failed call must leave a message that contains `needle`. */
#define EXPECT_MESSAGE(needle) expect(strstr(dm_last_error(), (needle)) != NULL, "message contains " #needle, __LINE__)

/* --- files ---------------------------------------------------------------------------------------- */

enum { PATH_LEN = 4096 };

/* `dir`/`name` into `out` (PATH_LEN bytes); 0 if it does not fit. */
static int join(char *out, const char *dir, const char *name) {
    int n = snprintf(out, PATH_LEN, "%s/%s", dir, name);
    return n > 0 && n < PATH_LEN;
}

/* The entries of folder `dir` other than . and .., or -1 if it cannot be read. With `prefix` non-NULL,
 * `*matching` counts those whose name starts with it. */
static int count_entries(const char *dir, const char *prefix, int *matching) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
            n++;
            if (prefix != NULL && strncmp(entry->d_name, prefix, strlen(prefix)) == 0) {
                (*matching)++;
            }
        }
    }
    closedir(d);
    return n;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF) {
        lines += c == '\n';
    }
    fclose(f);
    return lines;
}

/* A PNG's width and height from its IHDR chunk (bytes 16..24, big-endian); 0 if it cannot be read. */
static int png_size(const char *path, uint32_t *width, uint32_t *height) {
    unsigned char header[24];
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return 0;
    }
    size_t got = fread(header, 1, sizeof header, f);
    fclose(f);
    if (got != sizeof header || memcmp(header + 1, "PNG", 3) != 0 || memcmp(header + 12, "IHDR", 4) != 0) {
        return 0;
    }
    *width = (uint32_t)header[16] << 24 | (uint32_t)header[17] << 16 | (uint32_t)header[18] << 8 | header[19];
    *height = (uint32_t)header[20] << 24 | (uint32_t)header[21] << 16 | (uint32_t)header[22] << 8 | header[23];
    return 1;
}

/* --- progress ------------------------------------------------------------------------------------- */

struct progress_log {
    int calls;
    int in_order;
    uint64_t last_done;
    uint64_t last_total;
    int values_nan;
};

static int32_t record_progress(uint64_t done, uint64_t total, double value, void *user_data) {
    struct progress_log *log = user_data;
    log->calls++;
    log->in_order &= done == (uint64_t)log->calls;
    log->last_done = done;
    log->last_total = total;
    log->values_nan &= isnan(value);
    return 0;
}

/* --- checks --------------------------------------------------------------------------------------- */

static void check_options_default(void) {
    dm_parallel_miner_options options;
    memset(&options, 0xAB, sizeof options);
    EXPECT_STATUS(DM_OK, dm_parallel_miner_options_default(&options));
    EXPECT(options.struct_size == sizeof options);
    EXPECT(options.prompt_template == NULL && options.null_prompt == NULL && options.translate == NULL);
    EXPECT(options.samples == 100 && options.batch == 10 && options.seed == 42);
    EXPECT(options.patch_size == 64 && options.per_set == 5 && options.top == 10000);
    EXPECT(options.projection == DM_PROJECTION_UMAP && options.projection_neighbors == 15);
    EXPECT(options.versions_dir == NULL);
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_parallel_miner_options_default(NULL));

    dm_parallel_report_options report;
    memset(&report, 0xAB, sizeof report);
    EXPECT_STATUS(DM_OK, dm_parallel_report_options_default(&report));
    EXPECT(report.struct_size == sizeof report && report.strips == 32 && report.per_strip == 8);
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_parallel_report_options_default(NULL));
}

enum { SIDE = 16, BOX = 4, LABELS = 2, STEPS = 2 };
static const char *const LABEL_NAMES[LABELS] = {"cars", "cats"};

static dm_parallel_miner *create_miner(const dm_model *model, const dm_translate_options *translate) {
    dm_parallel_miner_options options;
    dm_parallel_miner_options_default(&options);
    options.prompt_template = "Image of {label}.";
    options.null_prompt = "An image.";
    options.translate = translate;
    options.samples = 2;
    options.batch = 2;
    options.resize_short_side = SIDE;
    options.patch_size = BOX;
    options.per_set = 2;
    options.top = 5;
    options.dift_ensemble = 1;
    options.clusters = 2;
    options.restarts = 2;
    options.projection_dims = 2;
    options.projection = DM_PROJECTION_PCA;
    dm_parallel_miner *miner = NULL;
    EXPECT_STATUS(DM_OK, dm_parallel_miner_create(model, LABEL_NAMES, LABELS, &options, &miner));
    return miner;
}

/* Reads the results back: 2 elements of the one source (label 1), clusters covering them in order. */
static size_t check_results(const dm_parallel_miner *miner, dm_mined_cluster *clusters, size_t clusters_len,
                            size_t *cluster_count) {
    size_t n = 0, count = 0;
    EXPECT_STATUS(DM_OK, dm_parallel_miner_element_count(miner, &n));
    EXPECT(n == 2);
    dm_cotypical_element elements[2];
    EXPECT_STATUS(DM_OK, dm_parallel_miner_elements(miner, elements, 2, &count));
    EXPECT(count == n);
    for (size_t i = 0; i < count && i < 2; i++) {
        const dm_cotypical_element *e = &elements[i];
        EXPECT(e->image == 0 && e->source_label == 1 && e->size == BOX);
        EXPECT(e->x + e->size <= SIDE && e->y + e->size <= SIDE);
        EXPECT(isfinite(e->cotypicality) && e->distance >= 0.0f);
    }
    EXPECT_STATUS(DM_OK, dm_parallel_miner_clusters(miner, clusters, clusters_len, cluster_count));
    uint32_t next = 0;
    for (size_t c = 0; c < *cluster_count; c++) {
        EXPECT(clusters[c].first == next && clusters[c].members >= 1);
        for (uint32_t m = clusters[c].first; m < clusters[c].first + clusters[c].members && m < count; m++) {
            EXPECT(elements[m].cluster == c);
        }
        next += clusters[c].members;
    }
    EXPECT(next == count);
    return count;
}

/* The report in `dir`: elements.csv (a header and a row per element), a strip per cluster of 2
 * versions × its members, cells of the box + 2 pixels, and index.html; nothing else. Removes it. */
static void check_report(const char *dir, size_t elements, const dm_mined_cluster *clusters, size_t cluster_count) {
    char path[PATH_LEN], name[32];
    EXPECT(join(path, dir, "elements.csv"));
    EXPECT(count_lines(path) == (int)elements + 1);
    EXPECT(unlink(path) == 0);
    for (size_t c = 0; c < cluster_count; c++) {
        uint32_t width = 0, height = 0;
        snprintf(name, sizeof name, "strip_%02zu.png", c);
        EXPECT(join(path, dir, name));
        EXPECT(png_size(path, &width, &height));
        EXPECT(width == LABELS * (BOX + 2) && height == clusters[c].members * (BOX + 2));
        EXPECT(unlink(path) == 0);
    }
    EXPECT(join(path, dir, "index.html"));
    EXPECT(access(path, R_OK) == 0);
    EXPECT(unlink(path) == 0);
    EXPECT(count_entries(dir, NULL, NULL) == 0);
    EXPECT(rmdir(dir) == 0);
}

/* A miner's life in a TMPDIR of its own, so its private versions folder can be watched. */
static void check_miner(const dm_model *model, const char *image, const char *root) {
    char tmp[PATH_LEN], report[PATH_LEN];
    EXPECT(join(tmp, root, "tmp") && join(report, root, "report"));
    EXPECT(mkdir(tmp, 0700) == 0);
    setenv("TMPDIR", tmp, 1);

    dm_translate_options translate;
    dm_translate_options_default(&translate);
    translate.steps = STEPS;
    translate.inversion_steps = STEPS;
    dm_parallel_miner *miner = create_miner(model, &translate);
    if (miner == NULL) {
        return;
    }
    int versions_dirs = 0;
    EXPECT(count_entries(tmp, "diffmine-versions-", &versions_dirs) == 1 && versions_dirs == 1);

    EXPECT_STATUS(DM_OK, dm_parallel_miner_add_file(miner, image, "cats"));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_parallel_miner_add_file(miner, image, "dogs"));
    EXPECT_MESSAGE("not one of the miner's labels");
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_parallel_miner_write_report(miner, report, NULL));
    EXPECT_MESSAGE("dm_parallel_miner_run first");

    /* One source: 2 inversion + 2 sampling steps, then typicality and DIFT of its 2 versions. */
    struct progress_log log = {0, 1, 0, 0, 1};
    EXPECT_STATUS(DM_OK, dm_parallel_miner_run(miner, record_progress, &log));
    const uint64_t units = 2 * STEPS + 2 * LABELS;
    EXPECT(log.calls == (int)units && log.in_order && log.last_done == units && log.last_total == units);
    EXPECT(log.values_nan);

    dm_mined_cluster clusters[4];
    size_t cluster_count = 0;
    size_t elements = check_results(miner, clusters, 4, &cluster_count);

    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_parallel_miner_write_report(miner, NULL, NULL));
    EXPECT_MESSAGE("out_dir");
    dm_parallel_report_options options;
    dm_parallel_report_options_default(&options);
    options.per_strip = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_parallel_miner_write_report(miner, report, &options));
    EXPECT_MESSAGE("per_strip");
    options.per_strip = 8;
    EXPECT_STATUS(DM_OK, dm_parallel_miner_write_report(miner, report, &options));
    check_report(report, elements, clusters, cluster_count);

    EXPECT_STATUS(DM_OK, dm_parallel_miner_free(miner));
    EXPECT(count_entries(tmp, NULL, NULL) == 0); /* the versions folder went with the miner */
    EXPECT_STATUS(DM_ERR_INVALID_HANDLE, dm_parallel_miner_write_report(miner, report, NULL));
    EXPECT_STATUS(DM_OK, dm_parallel_miner_free(NULL));
    EXPECT(rmdir(tmp) == 0);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE\n", argv[0]);
        return 2;
    }
    check_options_default();

    const char *base = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    char root[PATH_LEN];
    if (!join(root, base, "dm_parallel_miner_c_XXXXXX") || mkdtemp(root) == NULL) {
        fprintf(stderr, "cannot make a folder in %s\n", base);
        return 1;
    }
    dm_model *model = NULL;
    EXPECT_STATUS(DM_OK, dm_model_open(argv[1], NULL, &model));
    if (model == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], dm_last_error());
        return 1;
    }
    check_miner(model, argv[2], root);
    EXPECT_STATUS(DM_OK, dm_model_free(model));
    EXPECT(rmdir(root) == 0);

    if (failures == 0) {
        printf("parallel_miner: all checks passed\n");
    } else {
        fprintf(stderr, "parallel_miner: %d check(s) failed\n", failures);
    }
    return failures > 255 ? 255 : failures;
}
