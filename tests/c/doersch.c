/*
 * doersch SET_DIR OUT_DIR: the discriminative baseline through the C API (run by tests/doersch.rs,
 * which then compares OUT_DIR's report with the Rust API's on the same set and options).
 *
 * Every check prints what failed; the exit status is the number of failed checks (0 = all passed).
 * Bad arguments are refused with their status and nothing is written: NULL data or out_dir, a
 * struct_size under the first version, zero candidates, a missing folder. A run cancelled from its
 * progress callback returns DM_ERR_CANCELLED and writes nothing. A full run reports progress that
 * never goes back and ends at its total, and writes index.html and patches.csv into OUT_DIR.
 */
#define _XOPEN_SOURCE 700 /* stat() under -std=c11 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "diffmine.h"

static int failures = 0;

static void expect(int ok, const char *what, int line) {
    if (!ok) {
        fprintf(stderr, "doersch.c:%d: FAILED: %s (last error: \"%s\")\n", line, what, dm_last_error());
        failures++;
    }
}

#define EXPECT(cond) expect((cond), #cond, __LINE__)

/* The small settings tests/doersch.rs gives the Rust API too. */
static void set_options(dm_doersch_options *options) {
    dm_doersch_options_default(options);
    options->candidates = 200;
    options->detectors = 4;
    options->negatives = 200;
    options->negative_pool = 400;
    options->final_neighbours = 8;
    options->keep = 3;
    options->seed = 7;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

typedef struct {
    uint64_t calls;
    uint64_t last_done;
    uint64_t total;
    int went_back;
    int value_not_nan;
    uint64_t cancel_after; /* 0: never cancels */
} progress_log;

static int32_t on_progress(uint64_t done, uint64_t total, double value, void *user_data) {
    progress_log *log = user_data;
    log->calls++;
    log->went_back |= done < log->last_done || done > total;
    log->value_not_nan |= !isnan(value);
    log->last_done = done;
    log->total = total;
    return log->cancel_after != 0 && log->calls >= log->cancel_after;
}

static void bad_arguments_are_refused(const char *set, const char *out) {
    dm_doersch_options options;
    set_options(&options);
    EXPECT(dm_doersch_run(NULL, out, &options, NULL, NULL) == DM_ERR_NULL_ARGUMENT);
    EXPECT(dm_doersch_run(set, NULL, &options, NULL, NULL) == DM_ERR_NULL_ARGUMENT);
    EXPECT(strstr(dm_last_error(), "out_dir") != NULL);

    dm_doersch_options too_small = options;
    too_small.struct_size = sizeof(size_t);
    EXPECT(dm_doersch_run(set, out, &too_small, NULL, NULL) == DM_ERR_INVALID_ARGUMENT);
    EXPECT(strstr(dm_last_error(), "struct_size") != NULL);

    dm_doersch_options no_candidates = options;
    no_candidates.candidates = 0;
    EXPECT(dm_doersch_run(set, out, &no_candidates, NULL, NULL) == DM_ERR_INVALID_ARGUMENT);
    EXPECT(strstr(dm_last_error(), "candidates") != NULL);

    char missing[4096];
    snprintf(missing, sizeof missing, "%s/no such folder", set);
    EXPECT(dm_doersch_run(missing, out, &options, NULL, NULL) != DM_OK);
    EXPECT(strstr(dm_last_error(), "no such folder") != NULL);
    EXPECT(!exists(out));
}

static void a_cancelled_run_writes_nothing(const char *set, const char *out) {
    dm_doersch_options options;
    set_options(&options);
    progress_log log = {0, 0, 0, 0, 0, 3};
    EXPECT(dm_doersch_run(set, out, &options, on_progress, &log) == DM_ERR_CANCELLED);
    EXPECT(log.calls == 3);
    EXPECT(!exists(out));
}

static void a_run_writes_the_report(const char *set, const char *out) {
    dm_doersch_options options;
    set_options(&options);
    progress_log log = {0, 0, 0, 0, 0, 0};
    EXPECT(dm_doersch_run(set, out, &options, on_progress, &log) == DM_OK);
    EXPECT(log.calls > 0);
    EXPECT(!log.went_back);
    EXPECT(!log.value_not_nan);
    EXPECT(log.last_done == log.total);
    char path[4096];
    snprintf(path, sizeof path, "%s/index.html", out);
    EXPECT(exists(path));
    snprintf(path, sizeof path, "%s/patches.csv", out);
    EXPECT(exists(path));
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SET_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    bad_arguments_are_refused(argv[1], argv[2]);
    a_cancelled_run_writes_nothing(argv[1], argv[2]);
    a_run_writes_the_report(argv[1], argv[2]);
    printf("doersch.c: %d failed checks\n", failures);
    return failures;
}
