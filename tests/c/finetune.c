/*
 * finetune MODEL_DIR IMAGE: finetuning through the C API, checked from C (run by tests/c_api.rs, also
 * under valgrind).
 *
 * Every check prints what failed; the exit status is the number of failed checks (0 = all passed).
 * Covered: dm_finetune_options_default; dm_finetune_run on a two-image CSV set (2 steps of batch 2 at
 * 32 px) with the progress callback; a caller built against the first version of the options struct
 * (fields after it keep their defaults, whatever lies beyond the size it declares); gradient
 * checkpointing (the first step's loss is the plain run's, exactly); bf16 autocast (close to the f32
 * loss, not equal); an invalid autocast dtype and float16 autocast (refused: no loss scaling);
 * cancellation from the callback (no output folder); LoRA training (lora_rank, lora_targets: the adapter
 * file written, no model folder), a second-version caller (ending before lora_rank: the whole UNet is
 * trained, whatever lies beyond), an unknown LoRA target and a negative alpha (refused).
 * With DIFFMINE_TEST_QUICK=1 (the valgrind run, where a step takes about a minute) the checkpointed
 * and bf16 runs, which only repeat the training path, are skipped.
 */
#define _POSIX_C_SOURCE 200809L

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
        fprintf(stderr, "finetune.c:%d: FAILED: %s (last error: \"%s\")\n", line, what, dm_last_error());
        failures++;
    }
}

static void expect_status(enum dm_status expected, enum dm_status got, const char *call, int line) {
    if (got != expected) {
        fprintf(stderr, "finetune.c:%d: FAILED: %s returned %d, expected %d (last error: \"%s\")\n", line, call,
                (int)got, (int)expected, dm_last_error());
        failures++;
    }
}

#define EXPECT(cond) expect((cond), #cond, __LINE__)
#define EXPECT_STATUS(expected, call) expect_status((expected), (call), #call, __LINE__)
#define EXPECT_MESSAGE(needle) expect(strstr(dm_last_error(), (needle)) != NULL, "message contains " #needle, __LINE__)

#define STEPS 2

/* What the progress callback saw: the losses by step, and the step after which it cancels (0: never). */
struct progress_log {
    double losses[STEPS];
    uint64_t calls;
    uint64_t cancel_after;
};

static int32_t record_progress(uint64_t done, uint64_t total, double loss, void *user_data) {
    struct progress_log *log = user_data;
    if (total == STEPS && done >= 1 && done <= STEPS) {
        log->losses[done - 1] = loss;
    }
    log->calls++;
    return log->cancel_after != 0 && done >= log->cancel_after;
}

static char work[] = "/tmp/dm_finetune_c_XXXXXX";

/* A `path,label` CSV of the image twice, under two labels, in the work folder. */
static void write_set(const char *csv, const char *image) {
    FILE *f = fopen(csv, "w");
    if (f == NULL) {
        perror(csv);
        exit(1);
    }
    fprintf(f, "path,label\n%s,Nodule\n%s,Effusion\n", image, image);
    fclose(f);
}

static enum dm_status run(const char *model, const char *csv, const struct dm_finetune_options *options, const char *out,
                          struct progress_log *log) {
    return dm_finetune_run(model, NULL, csv, options, NULL, out, record_progress, log);
}

static struct dm_finetune_options small_options(void) {
    struct dm_finetune_options options;
    dm_finetune_options_default(&options);
    options.steps = STEPS;
    options.batch_size = 2;
    options.resolution = 32;
    options.seed = 3;
    return options;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* `folder/name` into `path`. */
static const char *inside(char *path, size_t size, const char *folder, const char *name) {
    snprintf(path, size, "%s/%s", folder, name);
    return path;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: finetune MODEL_DIR IMAGE\n");
        return 2;
    }
    const char *model = argv[1];
    if (mkdtemp(work) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char csv[256], out[256];
    snprintf(csv, sizeof csv, "%s/set.csv", work);
    write_set(csv, argv[2]);

    struct dm_finetune_options defaults;
    EXPECT_STATUS(DM_OK, dm_finetune_options_default(&defaults));
    EXPECT(defaults.struct_size == sizeof defaults);
    EXPECT(defaults.autocast_dtype == DM_DTYPE_FLOAT32 && defaults.gradient_checkpointing == 0);

    /* A first-version caller: the bytes after its struct are not its own and must not be read. */
    struct dm_finetune_options first_version = small_options();
    first_version.struct_size = offsetof(struct dm_finetune_options, autocast_dtype);
    first_version.autocast_dtype = 99;
    struct progress_log plain = {0};
    snprintf(out, sizeof out, "%s/plain", work);
    EXPECT_STATUS(DM_OK, run(model, csv, &first_version, out, &plain));
    EXPECT(plain.calls == STEPS && isfinite(plain.losses[0]) && plain.losses[0] > 0 && isfinite(plain.losses[1]));
    EXPECT(is_dir(out));

    struct dm_finetune_options checkpointed_options = small_options();
    checkpointed_options.gradient_checkpointing = 1;
    const char *quick = getenv("DIFFMINE_TEST_QUICK");
    if (quick == NULL || strcmp(quick, "1") != 0) {
        struct progress_log checkpointed = {0};
        snprintf(out, sizeof out, "%s/checkpointed", work);
        EXPECT_STATUS(DM_OK, run(model, csv, &checkpointed_options, out, &checkpointed));
        EXPECT(checkpointed.losses[0] == plain.losses[0]);
        EXPECT(fabs(checkpointed.losses[1] - plain.losses[1]) <= 1e-5 * plain.losses[1]);

        struct dm_finetune_options bf16_options = checkpointed_options;
        bf16_options.autocast_dtype = DM_DTYPE_BFLOAT16;
        struct progress_log bf16 = {0};
        snprintf(out, sizeof out, "%s/bf16", work);
        EXPECT_STATUS(DM_OK, run(model, csv, &bf16_options, out, &bf16));
        EXPECT(bf16.losses[0] != plain.losses[0] && fabs(bf16.losses[0] - plain.losses[0]) <= 1e-2 * plain.losses[0]);

        char file[300];
        struct dm_finetune_options lora_options = small_options();
        lora_options.lora_rank = 2;
        lora_options.lora_targets = "to_q,to_v";
        struct progress_log lora = {0};
        snprintf(out, sizeof out, "%s/lora", work);
        EXPECT_STATUS(DM_OK, run(model, csv, &lora_options, out, &lora));
        EXPECT(lora.calls == STEPS && isfinite(lora.losses[1]));
        EXPECT(is_file(inside(file, sizeof file, out, "pytorch_lora_weights.safetensors")) && !is_dir(inside(file, sizeof file, out, "unet")));

        struct dm_finetune_options second_version = small_options();
        second_version.struct_size = offsetof(struct dm_finetune_options, lora_rank);
        second_version.lora_rank = 4;
        struct progress_log whole = {0};
        snprintf(out, sizeof out, "%s/second_version", work);
        EXPECT_STATUS(DM_OK, run(model, csv, &second_version, out, &whole));
        EXPECT(whole.losses[0] == plain.losses[0] && is_dir(inside(file, sizeof file, out, "unet")));
    }

    struct dm_finetune_options bad = small_options();
    bad.autocast_dtype = 7;
    snprintf(out, sizeof out, "%s/bad", work);
    struct progress_log unused = {0};
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, run(model, csv, &bad, out, &unused));
    EXPECT_MESSAGE("autocast_dtype");
    bad.autocast_dtype = DM_DTYPE_FLOAT16;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, run(model, csv, &bad, out, &unused));
    EXPECT_MESSAGE("loss scaling");
    bad = small_options();
    bad.lora_rank = 4;
    bad.lora_targets = "to_q,ff.net.2";
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, run(model, csv, &bad, out, &unused));
    EXPECT_MESSAGE("unknown LoRA target ff.net.2");
    bad.lora_targets = NULL;
    bad.lora_alpha = -2.0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, run(model, csv, &bad, out, &unused));
    EXPECT_MESSAGE("alpha must be positive");
    EXPECT(unused.calls == 0 && !is_dir(out));

    struct progress_log cancelled = {.cancel_after = 1};
    snprintf(out, sizeof out, "%s/cancelled", work);
    EXPECT_STATUS(DM_ERR_CANCELLED, run(model, csv, &checkpointed_options, out, &cancelled));
    EXPECT(cancelled.calls == 1 && !is_dir(out));

    char remove_work[300];
    snprintf(remove_work, sizeof remove_work, "rm -rf '%s'", work);
    if (system(remove_work) != 0) {
        fprintf(stderr, "could not remove %s\n", work);
    }
    if (failures == 0) {
        printf("finetune.c: all checks passed\n");
    }
    return failures;
}
