/*
 * typicality MODEL_DIR: typicality maps and typical patches through the C API, checked from C (run by
 * tests/c_api.rs, also under valgrind).
 *
 * Every check prints what failed; the exit status is the number of failed checks (0 = all passed).
 * Covered: dm_typicality_options_default, dm_typicality_map_size with and without a resize, and
 * dm_typicality_map on a small generated image: a finite map, the same map twice, invalid options,
 * explicit draws given by halves, a progress callback that cancels after the first batch (the model
 * still works afterwards), output buffers too small (left untouched); dm_patches_select on a hand-made
 * map with a known answer.
 *
 * The maps are kept small (a 24×16 image, 2 samples); with DIFFMINE_TEST_QUICK=1 (the valgrind run)
 * the checks that only repeat a whole computation are skipped.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffmine.h"

static int failures = 0;

static void expect(int ok, const char *what, int line) {
    if (!ok) {
        fprintf(stderr, "typicality.c:%d: FAILED: %s (last error: \"%s\")\n", line, what, dm_last_error());
        failures++;
    }
}

static void expect_status(enum dm_status expected, enum dm_status got, const char *call, int line) {
    if (got != expected) {
        fprintf(stderr, "typicality.c:%d: FAILED: %s returned %d, expected %d (last error: \"%s\")\n", line, call,
                (int)got, (int)expected, dm_last_error());
        failures++;
    }
}

#define EXPECT(cond) expect((cond), #cond, __LINE__)
#define EXPECT_STATUS(expected, call) expect_status((expected), (call), #call, __LINE__)

/* A failed call must leave a message that contains `needle`. */
#define EXPECT_MESSAGE(needle) expect(strstr(dm_last_error(), (needle)) != NULL, "message contains " #needle, __LINE__)

/* --- helpers -------------------------------------------------------------------------------------- */

#define SENTINEL 42.0f

static void fill(float *values, size_t len, float value) {
    for (size_t i = 0; i < len; i++) {
        values[i] = value;
    }
}

static int all_equal_to(const float *values, size_t len, float value) {
    for (size_t i = 0; i < len; i++) {
        if (values[i] != value) {
            return 0;
        }
    }
    return 1;
}

static int all_finite(const float *values, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (!isfinite(values[i])) {
            return 0;
        }
    }
    return 1;
}

/* --- progress callbacks --------------------------------------------------------------------------- */

struct progress_log {
    int calls;
    uint64_t last_done;
    uint64_t last_total;
    int value_was_nan;
    int cancel_after; /* return 1 (cancel) from this call on; 0: never */
};

static int32_t record_progress(uint64_t done, uint64_t total, double value, void *user_data) {
    struct progress_log *log = user_data;
    log->calls++;
    log->last_done = done;
    log->last_total = total;
    log->value_was_nan = isnan(value);
    return log->cancel_after > 0 && log->calls >= log->cancel_after ? 1 : 0;
}

/* --- checks --------------------------------------------------------------------------------------- */

static void check_options_default(void) {
    dm_typicality_options options;
    memset(&options, 0xAB, sizeof options);
    EXPECT_STATUS(DM_OK, dm_typicality_options_default(&options));
    EXPECT(options.struct_size == sizeof options);
    EXPECT(options.samples == 100 && options.batch == 10);
    EXPECT(options.t_min == 0.1 && options.t_max == 0.7);
    EXPECT(options.seed == 42);
    EXPECT(options.latent == DM_LATENT_SAMPLE && options.resize_short_side == 0);
    EXPECT(options.timesteps == NULL && options.timesteps_len == 0);
    EXPECT(options.noise == NULL && options.noise_len == 0);
    EXPECT(options.antithetic == 0 && options.stratified == 0);
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_typicality_options_default(NULL));
}

enum { H = 24, W = 16, C = 3 };
static uint8_t pixels[H * W * C];

static dm_image_view test_image(void) {
    for (size_t y = 0; y < H; y++) {
        for (size_t x = 0; x < W; x++) {
            for (size_t c = 0; c < C; c++) {
                pixels[(y * W + x) * C + c] = (uint8_t)((x * 13 + y * 7 + c * 50 + (x * y) % 11) & 0xFF);
            }
        }
    }
    const dm_image_view view = {pixels, sizeof pixels, W, H, C, DM_PIXEL_U8, W * C};
    return view;
}

static void check_map_size(const dm_image_view *image) {
    uint32_t h = 0, w = 0;
    EXPECT_STATUS(DM_OK, dm_typicality_map_size(image, NULL, &h, &w));
    EXPECT(h == H && w == W);

    dm_typicality_options options;
    dm_typicality_options_default(&options);
    h = w = 0;
    EXPECT_STATUS(DM_OK, dm_typicality_map_size(image, &options, &h, &w));
    EXPECT(h == H && w == W);

    options.resize_short_side = 8; /* 24×16 → 12×8 */
    EXPECT_STATUS(DM_OK, dm_typicality_map_size(image, &options, &h, &w));
    EXPECT(h == 12 && w == 8);
    options.resize_short_side = 10; /* 24·10/16 = 15 */
    EXPECT_STATUS(DM_OK, dm_typicality_map_size(image, &options, &h, &w));
    EXPECT(h == 15 && w == 10);
    options.resize_short_side = 7; /* 24·7/16 = 10.5, rounded half away from zero */
    EXPECT_STATUS(DM_OK, dm_typicality_map_size(image, &options, &h, &w));
    EXPECT(h == 11 && w == 7);

    uint32_t untouched = 777;
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_typicality_map_size(image, NULL, &untouched, NULL));
    EXPECT(untouched == 777);
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_typicality_map_size(image, NULL, NULL, &untouched));
    EXPECT(untouched == 777);
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_typicality_map_size(NULL, NULL, &h, &w));
    dm_image_view empty = *image;
    empty.width = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_typicality_map_size(&empty, NULL, &h, &w));
    options.struct_size = sizeof(size_t);
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_typicality_map_size(image, &options, &h, &w));
    EXPECT_MESSAGE("struct_size");
}

#define PROMPT "Chest X-Ray with Effusion."
#define NULL_PROMPT "Chest X-Ray."

/* Set by tests/c_api.rs for the valgrind run, where a map takes about 30 s: the checks that compute a
 * whole map only to repeat what another check covers are skipped. */
static int quick = 0;

static void check_maps(const dm_model *model, const dm_model_info *info, const dm_image_view *image) {
    const size_t n = (size_t)H * W;
    dm_typicality_options options;
    dm_typicality_options_default(&options);
    options.samples = 2;
    options.batch = 1; /* two UNet calls, so a cancel after the first one leaves work undone */
    uint32_t lh = 0, lw = 0;
    EXPECT_STATUS(DM_OK, dm_model_latent_size(model, H, W, &lh, &lw));
    const size_t losses_len = (size_t)options.samples * 2 * lh * lw;

    float *first = malloc((n + 1) * sizeof *first);
    float *second = malloc((n + 1) * sizeof *second);
    float *losses = malloc((losses_len + 1) * sizeof *losses);
    float *noise = calloc((size_t)options.samples * info->latent_channels * lh * lw, sizeof *noise);
    EXPECT(first != NULL && second != NULL && losses != NULL && noise != NULL);
    if (first == NULL || second == NULL || losses == NULL || noise == NULL) {
        free(first);
        free(second);
        free(losses);
        free(noise);
        return;
    }

    /* A finite map of the image's size and the per-sample losses, with progress after each batch;
     * nothing is written past either result. */
    struct progress_log log = {0};
    fill(first, n + 1, SENTINEL);
    fill(losses, losses_len + 1, SENTINEL);
    EXPECT_STATUS(DM_OK, dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &options, record_progress, &log, first,
                                           n + 1, losses, losses_len + 1));
    EXPECT(all_finite(first, n));
    EXPECT(first[n] == SENTINEL);
    EXPECT(!all_equal_to(first, n, first[0])); /* not constant: the bilinear upsampling of a real map */
    EXPECT(log.calls == 2 && log.last_done == 2 && log.last_total == 2 && log.value_was_nan);
    EXPECT(all_finite(losses, losses_len));
    EXPECT(losses[losses_len] == SENTINEL);
    int non_negative = 1;
    for (size_t i = 0; i < losses_len; i++) {
        non_negative &= losses[i] >= 0.0f;
    }
    EXPECT(non_negative); /* squared errors */

    if (!quick) {
        /* The same map again, bit for bit, without a callback or the losses. */
        fill(second, n, -SENTINEL);
        EXPECT_STATUS(DM_OK,
                      dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &options, NULL, NULL, second, n, NULL, 0));
        EXPECT(memcmp(first, second, n * sizeof *first) == 0);

        /* A caller built against the struct's first version (which ended before `antithetic`) gets
         * the defaults of the later fields: the same map. */
        dm_typicality_options first_version = options;
        first_version.struct_size = offsetof(dm_typicality_options, antithetic);
        first_version.antithetic = 1; /* beyond its struct_size: never read */
        fill(second, n, -SENTINEL);
        EXPECT_STATUS(DM_OK, dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &first_version, NULL, NULL, second,
                                               n, NULL, 0));
        EXPECT(memcmp(first, second, n * sizeof *first) == 0);

        /* Antithetic pairs change the second sample's draw, so the map. */
        dm_typicality_options paired = options;
        paired.antithetic = 1;
        EXPECT_STATUS(DM_OK,
                      dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &paired, NULL, NULL, second, n, NULL, 0));
        EXPECT(all_finite(second, n) && memcmp(first, second, n * sizeof *first) != 0);
    }

    /* Invalid options: the output stays untouched. */
    fill(second, n, SENTINEL);
    dm_typicality_options bad = options;
    bad.samples = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT_MESSAGE("at least 1");
    bad = options;
    bad.batch = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    bad = options;
    bad.t_min = 0.7;
    bad.t_max = 0.1;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT_MESSAGE("t_min < t_max");
    bad = options;
    bad.latent = 7;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT_MESSAGE("latent");
    bad = options;
    bad.struct_size = 8;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, "", NULL_PROMPT, &options, NULL, NULL, second, n, NULL, 0));
    EXPECT_MESSAGE("empty");
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_typicality_map(model, image, "bad \xc3\x28 utf-8", NULL_PROMPT, &options,
                                                             NULL, NULL, second, n, NULL, 0));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT,
                  dm_typicality_map(model, image, NULL, NULL_PROMPT, &options, NULL, NULL, second, n, NULL, 0));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL, &options, NULL, NULL, second, n, NULL, 0));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT,
                  dm_typicality_map(model, NULL, PROMPT, NULL_PROMPT, &options, NULL, NULL, second, n, NULL, 0));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT,
                  dm_typicality_map(NULL, image, PROMPT, NULL_PROMPT, &options, NULL, NULL, second, n, NULL, 0));

    /* Explicit draws: both or neither, the noise must hold N latents, the timesteps must be in range. */
    const size_t noise_len = (size_t)options.samples * info->latent_channels * lh * lw;
    int64_t timesteps[2] = {100, 500};
    bad = options;
    bad.timesteps = timesteps;
    bad.timesteps_len = 2;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT_MESSAGE("together");
    bad = options;
    bad.noise = noise;
    bad.noise_len = noise_len;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT_MESSAGE("together");
    bad.timesteps = timesteps;
    bad.timesteps_len = 2;
    bad.noise_len = noise_len - 1;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT_MESSAGE("noise");
    bad.noise_len = noise_len;
    timesteps[1] = (int64_t)info->train_steps;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &bad, NULL, NULL, second, n, NULL, 0));
    EXPECT(all_equal_to(second, n, SENTINEL));

    /* Output buffers too small: untouched. The map's size is checked before any work (no progress);
     * the losses' only after the whole computation, so that one is skipped in the quick run. */
    struct progress_log never = {0};
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL, dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &options, record_progress,
                                                             &never, second, n - 1, NULL, 0));
    EXPECT_MESSAGE("out_map");
    EXPECT(never.calls == 0);
    EXPECT(all_equal_to(second, n, SENTINEL));
    if (!quick) {
        fill(losses, losses_len, SENTINEL);
        EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL, dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &options, NULL, NULL,
                                                                 second, n, losses, losses_len - 1));
        EXPECT_MESSAGE("out_sample_losses");
        EXPECT(all_equal_to(second, n, SENTINEL));
        EXPECT(all_equal_to(losses, losses_len, SENTINEL));
    }

    /* Cancelled by the callback after the first batch: DM_ERR_CANCELLED, nothing written, no second call. */
    struct progress_log cancel = {0};
    cancel.cancel_after = 1;
    EXPECT_STATUS(DM_ERR_CANCELLED, dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &options, record_progress,
                                                      &cancel, second, n, NULL, 0));
    EXPECT_MESSAGE("cancel");
    EXPECT(cancel.calls == 1 && cancel.last_done == 1 && cancel.last_total == 2);
    EXPECT(all_equal_to(second, n, SENTINEL));

    /* The model still works afterwards, and gives the first map again, bit for bit. */
    EXPECT_STATUS(DM_OK, dm_typicality_map(model, image, PROMPT, NULL_PROMPT, &options, NULL, NULL, second, n, NULL, 0));
    EXPECT(memcmp(first, second, n * sizeof *first) == 0);

    free(first);
    free(second);
    free(losses);
    free(noise);
}

static void check_resized_map(const dm_model *model, const dm_image_view *image) {
    dm_typicality_options options;
    dm_typicality_options_default(&options);
    options.samples = 1;
    options.batch = 1;
    options.resize_short_side = 8;
    float map[12 * 8 + 1];
    fill(map, 12 * 8 + 1, SENTINEL);
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL,
                  dm_typicality_map(model, image, PROMPT, "", &options, NULL, NULL, map, 12 * 8 - 1, NULL, 0));
    EXPECT_STATUS(DM_OK, dm_typicality_map(model, image, PROMPT, "", &options, NULL, NULL, map, 12 * 8 + 1, NULL, 0));
    EXPECT(all_finite(map, 12 * 8));
    EXPECT(map[12 * 8] == SENTINEL);
}

static void check_patches(void) {
    /* A 6×8 map: a 2×2 block of 4 at rows 3-4, columns 5-6, and one of 1 at the top-left corner. */
    enum { MH = 6, MW = 8 };
    float map[MH * MW] = {0};
    map[3 * MW + 5] = map[3 * MW + 6] = map[4 * MW + 5] = map[4 * MW + 6] = 4.0f;
    map[0] = map[1] = map[MW] = map[MW + 1] = 1.0f;

    dm_box boxes[4];
    memset(boxes, 0xAB, sizeof boxes);
    size_t count = 0;
    EXPECT_STATUS(DM_OK, dm_patches_select(map, MH * MW, MH, MW, 2, 3, boxes, 4, &count));
    EXPECT(count == 3);
    EXPECT(boxes[0].x == 5 && boxes[0].y == 3 && boxes[0].size == 2 && boxes[0].score == 4.0f);
    EXPECT(boxes[1].x == 0 && boxes[1].y == 0 && boxes[1].size == 2 && boxes[1].score == 1.0f);
    /* Then a tie of zeros: the lowest row, then column, that touches neither box: (x 3, y 0). */
    EXPECT(boxes[2].x == 3 && boxes[2].y == 0 && boxes[2].size == 2 && boxes[2].score == 0.0f);
    EXPECT(boxes[3].x == 0xABABABABu); /* nothing past the count */

    /* Fewer boxes asked for than exist. */
    EXPECT_STATUS(DM_OK, dm_patches_select(map, MH * MW, MH, MW, 2, 1, boxes, 1, &count));
    EXPECT(count == 1 && boxes[0].x == 5 && boxes[0].y == 3);
    /* A window the size of the map: one box, the map's mean. */
    float small[4] = {1.0f, 2.0f, 3.0f, 6.0f};
    EXPECT_STATUS(DM_OK, dm_patches_select(small, 4, 2, 2, 2, 5, boxes, 4, &count));
    EXPECT(count == 1 && boxes[0].x == 0 && boxes[0].y == 0 && boxes[0].score == 3.0f);

    /* Errors leave the outputs untouched, but for the count a too small buffer needs. */
    memset(boxes, 0xAB, sizeof boxes);
    count = 12345;
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL, dm_patches_select(map, MH * MW, MH, MW, 2, 3, boxes, 2, &count));
    EXPECT_MESSAGE("out_boxes");
    EXPECT(count == 3 && boxes[0].x == 0xABABABABu);
    count = 12345;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_patches_select(map, MH * MW, MH, MW, 7, 3, boxes, 4, &count));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_patches_select(map, MH * MW, MH, MW, 0, 3, boxes, 4, &count));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_patches_select(map, MH * MW - 1, MH, MW, 2, 3, boxes, 4, &count));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_patches_select(NULL, MH * MW, MH, MW, 2, 3, boxes, 4, &count));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_patches_select(map, MH * MW, MH, MW, 2, 3, NULL, 4, &count));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_patches_select(map, MH * MW, MH, MW, 2, 3, boxes, 4, NULL));
    EXPECT(count == 12345 && boxes[0].x == 0xABABABABu);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    quick = getenv("DIFFMINE_TEST_QUICK") != NULL && strcmp(getenv("DIFFMINE_TEST_QUICK"), "1") == 0;
    check_options_default();
    check_patches();
    const dm_image_view image = test_image();
    check_map_size(&image);

    dm_model *model = NULL;
    EXPECT_STATUS(DM_OK, dm_model_open(argv[1], NULL, &model));
    if (model == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], dm_last_error());
        return 1;
    }
    dm_model_info info = {.struct_size = sizeof(dm_model_info)};
    EXPECT_STATUS(DM_OK, dm_model_get_info(model, &info));
    check_maps(model, &info, &image);
    if (!quick) {
        check_resized_map(model, &image);
    }
    EXPECT_STATUS(DM_OK, dm_model_free(model));

    if (failures == 0) {
        printf("typicality: all checks passed\n");
    } else {
        fprintf(stderr, "typicality: %d check(s) failed\n", failures);
    }
    return failures > 255 ? 255 : failures;
}
