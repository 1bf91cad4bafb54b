/*
 * bad_input MODEL_DIR: the C API's contract for wrong input, checked from C (run by tests/c_api.rs).
 *
 * Every check prints what failed; the exit status is the number of failed checks (0 = all passed).
 * Covered: NULL arguments, a missing folder, freed and foreign handles, buffers too small (left
 * untouched), bad image views, a too-small options struct, bad option values, dm_last_error_copy
 * truncation, the per-thread last error, the log callback's "model loaded" event, and 4 threads
 * computing text embeddings on one model (equal to the serial results).
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffmine.h"

static int failures = 0;

static void expect(int ok, const char *what, int line) {
    if (!ok) {
        fprintf(stderr, "bad_input.c:%d: FAILED: %s (last error: \"%s\")\n", line, what, dm_last_error());
        failures++;
    }
}

static void expect_status(enum dm_status expected, enum dm_status got, const char *call, int line) {
    if (got != expected) {
        fprintf(stderr, "bad_input.c:%d: FAILED: %s returned %d, expected %d (last error: \"%s\")\n", line, call,
                (int)got, (int)expected, dm_last_error());
        failures++;
    }
}

#define EXPECT(cond) expect((cond), #cond, __LINE__)
#define EXPECT_STATUS(expected, call) expect_status((expected), (call), #call, __LINE__)

/* A failed call must leave a non-empty message that contains `needle`. */
#define EXPECT_MESSAGE(needle) expect(strstr(dm_last_error(), (needle)) != NULL, "message contains " #needle, __LINE__)

/* --- log callback --------------------------------------------------------------------------------- */

static atomic_int loaded_events = 0;
static atomic_int events_above_level = 0;

static void on_log(int32_t level, const char *target, const char *message, void *user_data) {
    if (level > DM_LOG_INFO) {
        atomic_fetch_add(&events_above_level, 1);
    }
    if (level == DM_LOG_INFO && target != NULL && message != NULL && strstr(message, "model loaded") != NULL &&
        user_data == (void *)&loaded_events) {
        atomic_fetch_add(&loaded_events, 1);
    }
}

/* --- threads -------------------------------------------------------------------------------------- */

#define THREADS 4
#define ROUNDS 3

static const char *const TEXTS[THREADS] = {
    "Chest X-Ray with Effusion.",
    "A car from the 1950s.",
    "",
    "Cardiomegaly, pneumothorax and consolidation in the left lower lobe",
};

struct job {
    const dm_model *model;
    const char *text;
    const float *expected;
    size_t len;
    int mismatches;
    enum dm_status status;
};

static void *embed_repeatedly(void *arg) {
    struct job *job = arg;
    float *out = malloc(job->len * sizeof *out);
    if (out == NULL) {
        job->status = DM_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    for (int round = 0; round < ROUNDS; round++) {
        job->status = dm_model_text_embeddings(job->model, job->text, out, job->len);
        if (job->status != DM_OK) {
            break;
        }
        if (memcmp(out, job->expected, job->len * sizeof *out) != 0) {
            job->mismatches++;
        }
    }
    free(out);
    return NULL;
}

/* A failing call on another thread must not change this thread's last error. */
static void *fail_once(void *arg) {
    enum dm_status *status = arg;
    *status = dm_model_open("/nonexistent/other-thread", NULL, &(dm_model *){NULL});
    return NULL;
}

/* --- checks --------------------------------------------------------------------------------------- */

static void check_open_errors(const char *model_dir) {
    dm_model *sentinel = (dm_model *)(uintptr_t)0x1234;
    dm_model *model = sentinel;

    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_open(NULL, NULL, &model));
    EXPECT_MESSAGE("path");
    EXPECT(model == sentinel); /* outputs are written only on success */
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_open(model_dir, NULL, NULL));

    const char *missing = "/nonexistent/diffmine-missing-model";
    EXPECT_STATUS(DM_ERR_IO, dm_model_open(missing, NULL, &model));
    EXPECT_MESSAGE(missing);
    EXPECT(model == sentinel);

    dm_model_options options;
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_options_default(NULL));
    EXPECT_STATUS(DM_OK, dm_model_options_default(&options));
    EXPECT(options.struct_size == sizeof options);
    EXPECT(options.device == NULL && options.dtype == DM_DTYPE_FLOAT32 && options.variant == NULL);

    options.struct_size = sizeof(size_t);
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_open(model_dir, &options, &model));
    EXPECT_MESSAGE("struct_size");
    options.struct_size = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_open(model_dir, &options, &model));
    EXPECT(model == sentinel);

    dm_model_options_default(&options);
    options.device = "tpu";
    EXPECT_STATUS(DM_ERR_DEVICE, dm_model_open(model_dir, &options, &model));
    EXPECT_MESSAGE("tpu");
    dm_model_options_default(&options);
    options.dtype = 99;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_open(model_dir, &options, &model));
    EXPECT_MESSAGE("dtype");
    dm_model_options_default(&options);
    options.dtype = DM_DTYPE_FLOAT16; /* CUDA only */
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_open(model_dir, &options, &model));
    dm_model_options_default(&options);
    options.unet_path = "/nonexistent/unet";
    enum dm_status status = dm_model_open(model_dir, &options, &model);
    EXPECT(status == DM_ERR_IO || status == DM_ERR_INVALID_MODEL);
    EXPECT_MESSAGE("/nonexistent/unet");
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_open("\xff\xfe", NULL, &model));
    EXPECT_MESSAGE("UTF-8");
    EXPECT(model == sentinel);

    EXPECT_STATUS(DM_OK, dm_model_free(NULL));
}

/* A caller built against dm_model_options' first version (which ended before `config_path`) opens
 * the model, the later fields keeping their defaults. */
static void check_first_version_model_options(const char *model_dir) {
    dm_model_options options;
    dm_model_options_default(&options);
    options.struct_size = offsetof(dm_model_options, config_path);
    options.sd_version = 99; /* beyond its struct_size: never read */
    dm_model *model = NULL;
    EXPECT_STATUS(DM_OK, dm_model_open(model_dir, &options, &model));
    EXPECT(model != NULL);
    EXPECT_STATUS(DM_OK, dm_model_free(model));
}

/* dm_miner_options: the default label prompt is the library's; a caller built against the first
 * version (which ended before `t_min`) creates a miner, the later fields keeping their defaults; the
 * second version's fields are checked. */
static void check_miner_options(const dm_model *model) {
    dm_miner_options options;
    dm_miner_options_default(&options);
    EXPECT(options.prompt_template != NULL && strcmp(options.prompt_template, "Image of {label}.") == 0);
    EXPECT(options.null_prompt == NULL);
    EXPECT(options.t_min == 0.1 && options.t_max == 0.7 && options.latent == DM_LATENT_SAMPLE);
    EXPECT(options.antithetic == 0 && options.stratified == 0);
    dm_miner *miner = NULL;

    dm_miner_options first = options;
    first.struct_size = offsetof(dm_miner_options, t_min);
    first.latent = 99; /* beyond its struct_size: never read */
    EXPECT_STATUS(DM_OK, dm_miner_create(model, &first, &miner));
    EXPECT(miner != NULL);
    EXPECT_STATUS(DM_OK, dm_miner_free(miner));

    dm_miner_options bad = options;
    bad.latent = 99;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_miner_create(model, &bad, &miner));
    EXPECT_MESSAGE("latent");
    bad = options;
    bad.t_min = 0.8;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_miner_create(model, &bad, &miner));
    EXPECT_MESSAGE("t range");
    bad = options;
    bad.struct_size = offsetof(dm_miner_options, t_min) - 1;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_miner_create(model, &bad, &miner));
    EXPECT_MESSAGE("first version");
}

static void check_last_error_copy(void) {
    dm_model *model = NULL;
    EXPECT_STATUS(DM_ERR_IO, dm_model_open("/nonexistent/a-path-long-enough-to-truncate", NULL, &model));
    size_t full = strlen(dm_last_error());
    EXPECT(full > 16);
    EXPECT(dm_last_error_copy(NULL, 0) == full);
    EXPECT(dm_last_error_copy(NULL, 100) == full);

    char buffer[16];
    memset(buffer, 'X', sizeof buffer);
    EXPECT(dm_last_error_copy(buffer, 8) == full);
    EXPECT(buffer[7] == '\0' && strncmp(buffer, dm_last_error(), 7) == 0);
    EXPECT(buffer[8] == 'X'); /* nothing past buffer_len */

    memset(buffer, 'X', sizeof buffer);
    EXPECT(dm_last_error_copy(buffer, 1) == full);
    EXPECT(buffer[0] == '\0' && buffer[1] == 'X');
    memset(buffer, 'X', sizeof buffer);
    EXPECT(dm_last_error_copy(buffer, 0) == full);
    EXPECT(buffer[0] == 'X');

    char *whole = malloc(full + 1);
    EXPECT(whole != NULL);
    if (whole != NULL) {
        EXPECT(dm_last_error_copy(whole, full + 1) == full);
        EXPECT(strcmp(whole, dm_last_error()) == 0);
        free(whole);
    }

    /* The last error is per thread. */
    char before[256];
    dm_last_error_copy(before, sizeof before);
    enum dm_status other = DM_OK;
    pthread_t thread;
    EXPECT(pthread_create(&thread, NULL, fail_once, &other) == 0);
    pthread_join(thread, NULL);
    EXPECT(other == DM_ERR_IO);
    EXPECT(strcmp(before, dm_last_error()) == 0);
}

static void check_buffers(const dm_model *model, const dm_model_info *info) {
    /* Tokens: one slot short, the buffer stays untouched and the count says how many are needed. */
    int64_t ids[128];
    for (size_t i = 0; i < 128; i++) {
        ids[i] = -7;
    }
    size_t count = 12345;
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL, dm_model_tokenize(model, "a photo of a cat", ids, info->max_tokens - 1, &count));
    EXPECT_MESSAGE("out_ids");
    EXPECT(count == info->max_tokens);
    int untouched = 1;
    for (size_t i = 0; i < 128; i++) {
        untouched &= ids[i] == -7;
    }
    EXPECT(untouched);
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_tokenize(model, "x", ids, 128, NULL));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_tokenize(model, "x", NULL, 128, &count));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_tokenize(model, NULL, ids, 128, &count));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_tokenize(model, "bad \xc3\x28 utf-8", ids, 128, &count));
    EXPECT_STATUS(DM_OK, dm_model_tokenize(model, "a photo of a cat", ids, 128, &count));
    EXPECT(count == info->max_tokens);
    EXPECT(ids[count] == -7);

    /* Text embeddings one float short. */
    size_t n = (size_t)info->max_tokens * info->text_embedding_dim;
    float *embeddings = malloc((n + 1) * sizeof *embeddings);
    for (size_t i = 0; i <= n; i++) {
        embeddings[i] = 42.0f;
    }
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL, dm_model_text_embeddings(model, "x", embeddings, n - 1));
    untouched = 1;
    for (size_t i = 0; i <= n; i++) {
        untouched &= embeddings[i] == 42.0f;
    }
    EXPECT(untouched);
    EXPECT_STATUS(DM_OK, dm_model_text_embeddings(model, "x", embeddings, n + 1));
    EXPECT(embeddings[n] == 42.0f);
    free(embeddings);

    /* Decode: 2×3 latents to (2f)×(3f)×3 bytes; one byte short. */
    float latents[4 * 2 * 3] = {0};
    size_t rgb_len = (size_t)2 * info->vae_scale_factor * 3 * info->vae_scale_factor * 3;
    uint8_t *rgb = malloc(rgb_len);
    memset(rgb, 0xAB, rgb_len);
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL, dm_model_decode(model, latents, 24, 2, 3, rgb, rgb_len - 1));
    untouched = 1;
    for (size_t i = 0; i < rgb_len; i++) {
        untouched &= rgb[i] == 0xAB;
    }
    EXPECT(untouched);
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_decode(model, latents, 23, 2, 3, rgb, rgb_len));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_decode(model, latents, 0, 0, 3, rgb, rgb_len));
    EXPECT_STATUS(DM_OK, dm_model_decode(model, latents, 24, 2, 3, rgb, rgb_len));
    free(rgb);

    /* Predict noise: wrong timesteps leave the output untouched. */
    size_t ctx_len = (size_t)info->max_tokens * info->text_embedding_dim;
    float *context = calloc(ctx_len, sizeof *context);
    float x[4 * 4 * 4] = {0}, out[4 * 4 * 4];
    for (size_t i = 0; i < 64; i++) {
        out[i] = 42.0f;
    }
    int64_t t_bad[2] = {1, 2}, t_out_of_range = (int64_t)info->train_steps, t = 10;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_model_predict_noise(model, x, 64, 1, 4, 4, t_bad, 2, context, ctx_len, info->max_tokens, out, 64));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_predict_noise(model, x, 64, 1, 4, 4, &t_out_of_range, 1, context,
                                                                  ctx_len, info->max_tokens, out, 64));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_model_predict_noise(model, x, 64, 1, 4, 4, &t, 1, context, ctx_len - 1, info->max_tokens, out, 64));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT,
                  dm_model_predict_noise(model, x, 64, 1, 4, 4, &t, 1, context, ctx_len, 0, out, 64));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT,
                  dm_model_predict_noise(model, x, 64, 1, 4, 4, NULL, 1, context, ctx_len, info->max_tokens, out, 64));
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL,
                  dm_model_predict_noise(model, x, 64, 1, 4, 4, &t, 1, context, ctx_len, info->max_tokens, out, 63));
    untouched = 1;
    for (size_t i = 0; i < 64; i++) {
        untouched &= out[i] == 42.0f;
    }
    EXPECT(untouched);
    EXPECT_STATUS(DM_OK, dm_model_predict_noise(model, x, 64, 1, 4, 4, &t, 1, context, ctx_len, info->max_tokens, out, 64));
    free(context);

    /* Latent size. */
    uint32_t h = 0, w = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_latent_size(model, 0, 8, &h, &w));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_latent_size(model, 8, 8, &h, NULL));
    EXPECT_STATUS(DM_OK, dm_model_latent_size(model, 16, 24, &h, &w));
    EXPECT(h == 16 / info->vae_scale_factor && w == 24 / info->vae_scale_factor);
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_get_info(model, NULL));
}

static void check_images(const dm_model *model, const dm_model_info *info) {
    enum { H = 16, W = 12, C = 3 };
    static uint8_t pixels[H * W * C];
    for (size_t i = 0; i < sizeof pixels; i++) {
        pixels[i] = (uint8_t)(i * 7);
    }
    size_t out_len = (size_t)info->latent_channels * (H / info->vae_scale_factor) * (W / info->vae_scale_factor);
    float *out = malloc(out_len * sizeof *out);
    for (size_t i = 0; i < out_len; i++) {
        out[i] = 42.0f;
    }
    const dm_image_view good = {pixels, sizeof pixels, W, H, C, DM_PIXEL_U8, W * C};
    dm_image_view view;

    view = good;
    view.width = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    EXPECT_MESSAGE("zero");
    view = good;
    view.height = 0;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    view = good;
    view.data_len = sizeof pixels - 1;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    EXPECT_MESSAGE("buffer");
    view = good;
    view.stride = W * C - 1;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    EXPECT_MESSAGE("stride");
    view = good;
    view.stride = W * C + 1; /* valid stride, but the buffer is now too short for it */
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    view = good;
    view.channels = 2;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    EXPECT_MESSAGE("channels");
    view = good;
    view.pixel_type = 7;
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    EXPECT_MESSAGE("pixel_type");
    view = good;
    view.pixel_type = DM_PIXEL_U16; /* twice the bytes per row: the buffer is too short */
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    view = good;
    view.data = NULL;
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_encode(model, &view, out, out_len));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_encode(model, NULL, out, out_len));
    EXPECT_STATUS(DM_ERR_BUFFER_TOO_SMALL, dm_model_encode(model, &good, out, out_len - 1));
    int untouched = 1;
    for (size_t i = 0; i < out_len; i++) {
        untouched &= out[i] == 42.0f;
    }
    EXPECT(untouched);
    EXPECT_STATUS(DM_OK, dm_model_encode(model, &good, out, out_len));

    /* A grey image the size of the RGB one's buffer, with a stride: same geometry checks pass. */
    const dm_image_view grey = {pixels, sizeof pixels, W, H, 1, DM_PIXEL_U8, W * C};
    EXPECT_STATUS(DM_OK, dm_model_encode(model, &grey, out, out_len));
    free(out);
}

static void check_handles(const char *model_dir) {
    dm_model *model = NULL;
    EXPECT_STATUS(DM_OK, dm_model_open(model_dir, NULL, &model));
    if (model == NULL) {
        return;
    }
    dm_model_info info = {.struct_size = sizeof(dm_model_info)};
    EXPECT_STATUS(DM_OK, dm_model_get_info(model, &info));
    EXPECT_STATUS(DM_OK, dm_model_free(model));

    /* Use after free: reported, never dereferenced. */
    int64_t ids[128];
    size_t count = 0;
    float embeddings[8];
    EXPECT_STATUS(DM_ERR_INVALID_HANDLE, dm_model_get_info(model, &info));
    EXPECT_MESSAGE("model");
    EXPECT_STATUS(DM_ERR_INVALID_HANDLE, dm_model_tokenize(model, "x", ids, 128, &count));
    EXPECT_STATUS(DM_ERR_INVALID_HANDLE, dm_model_text_embeddings(model, "x", embeddings, 8));
    EXPECT_STATUS(DM_ERR_INVALID_HANDLE, dm_model_free(model)); /* double free */

    /* A pointer the library never returned. */
    int not_a_model = 0;
    EXPECT_STATUS(DM_ERR_INVALID_HANDLE, dm_model_get_info((const dm_model *)(void *)&not_a_model, &info));
    EXPECT_STATUS(DM_ERR_INVALID_HANDLE, dm_model_free((dm_model *)(void *)&not_a_model));
    EXPECT_STATUS(DM_ERR_NULL_ARGUMENT, dm_model_get_info(NULL, &info));
    EXPECT(not_a_model == 0);
}

static void check_threads(const dm_model *model, const dm_model_info *info) {
    size_t len = (size_t)info->max_tokens * info->text_embedding_dim;
    float *serial[THREADS];
    struct job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        serial[i] = malloc(len * sizeof(float));
        EXPECT_STATUS(DM_OK, dm_model_text_embeddings(model, TEXTS[i], serial[i], len));
        jobs[i] = (struct job){model, TEXTS[i], serial[i], len, 0, DM_OK};
    }
    for (int i = 0; i < THREADS; i++) {
        EXPECT(pthread_create(&threads[i], NULL, embed_repeatedly, &jobs[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        EXPECT(jobs[i].status == DM_OK);
        EXPECT(jobs[i].mismatches == 0);
        free(serial[i]);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    const char *model_dir = argv[1];

    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_log_set_callback(on_log, 0, NULL));
    EXPECT_STATUS(DM_ERR_INVALID_ARGUMENT, dm_log_set_callback(on_log, DM_LOG_TRACE + 1, NULL));
    EXPECT_STATUS(DM_OK, dm_log_set_callback(on_log, DM_LOG_INFO, &loaded_events));

    check_open_errors(model_dir);
    check_last_error_copy();

    dm_model *model = NULL;
    EXPECT_STATUS(DM_OK, dm_model_open(model_dir, NULL, &model));
    EXPECT(atomic_load(&loaded_events) == 1);
    EXPECT(atomic_load(&events_above_level) == 0);
    EXPECT_STATUS(DM_OK, dm_log_set_callback(NULL, DM_LOG_INFO, NULL));
    if (model == NULL) {
        fprintf(stderr, "cannot open %s: %s\n", model_dir, dm_last_error());
        return 1;
    }

    dm_model_info info = {.struct_size = sizeof(dm_model_info)};
    EXPECT_STATUS(DM_OK, dm_model_get_info(model, &info));
    check_buffers(model, &info);
    check_images(model, &info);
    check_threads(model, &info);
    check_miner_options(model);
    EXPECT_STATUS(DM_OK, dm_model_free(model));

    check_handles(model_dir);
    check_first_version_model_options(model_dir);
    EXPECT(atomic_load(&loaded_events) == 1); /* the callback was removed */

    if (failures == 0) {
        printf("bad_input: all checks passed\n");
    } else {
        fprintf(stderr, "bad_input: %d check(s) failed\n", failures);
    }
    return failures > 255 ? 255 : failures;
}
