/*
 * open_model MODEL_DIR: opens a diffusers Stable Diffusion folder with libdiffmine's C API, prints the
 * library version and the model's sizes, tokenizes a prompt and computes its text embeddings.
 *
 * Build (from the repository root, after `cargo build --release`):
 *   cc -std=c11 -Wall -Wextra -pedantic -I include examples/open_model.c \
 *      -L target/release -ldiffmine -Wl,-rpath,$PWD/target/release -o open_model
 * or against an installed prefix (scripts/install.sh; see the README's Install section):
 *   cc -std=c11 -Wall -Wextra -pedantic examples/open_model.c $(pkg-config --cflags --libs diffmine) \
 *      -Wl,-rpath,$(pkg-config --variable=libdir diffmine) -o open_model
 */
#include <stdio.h>
#include <stdlib.h>

#include "diffmine.h"

static const char *const PROMPT = "Chest X-Ray with Effusion.";

/* Reports a failed call with the library's message; returns 1 for main's exit status. */
static int report(const char *what, enum dm_status status) {
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status, dm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    printf("libdiffmine %s\n", dm_version());

    int exit_code = 1;
    dm_model *model = NULL;
    int64_t *ids = NULL;
    float *embeddings = NULL;

    dm_model_options options;
    enum dm_status status = dm_model_options_default(&options);
    if (status != DM_OK) {
        return report("dm_model_options_default", status);
    }
    status = dm_model_open(argv[1], &options, &model);
    if (status != DM_OK) {
        return report("dm_model_open", status);
    }

    dm_model_info info = {.struct_size = sizeof info};
    status = dm_model_get_info(model, &info);
    if (status != DM_OK) {
        exit_code = report("dm_model_get_info", status);
        goto done;
    }
    printf("model %s\n", argv[1]);
    printf("  latent channels     %u\n", info.latent_channels);
    printf("  VAE scale factor    %u\n", info.vae_scale_factor);
    printf("  max tokens          %u\n", info.max_tokens);
    printf("  text embedding dim  %u\n", info.text_embedding_dim);
    printf("  train steps         %u\n", info.train_steps);
    printf("  prediction type     %s\n", info.prediction_type == DM_PREDICTION_V ? "v_prediction" : "epsilon");
    printf("  scaling factor      %g\n", info.scaling_factor);

    ids = malloc(info.max_tokens * sizeof *ids);
    if (ids == NULL) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    size_t count = 0;
    status = dm_model_tokenize(model, PROMPT, ids, info.max_tokens, &count);
    if (status != DM_OK) {
        exit_code = report("dm_model_tokenize", status);
        goto done;
    }
    printf("tokens of \"%s\" (%zu, first 10):", PROMPT, count);
    for (size_t i = 0; i < count && i < 10; i++) {
        printf(" %lld", (long long)ids[i]);
    }
    printf("\n");

    size_t n = (size_t)info.max_tokens * info.text_embedding_dim;
    embeddings = malloc(n * sizeof *embeddings);
    if (embeddings == NULL) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    status = dm_model_text_embeddings(model, PROMPT, embeddings, n);
    if (status != DM_OK) {
        exit_code = report("dm_model_text_embeddings", status);
        goto done;
    }
    double mean = 0;
    for (size_t i = 0; i < n; i++) {
        mean += embeddings[i] / (double)n;
    }
    printf("text embeddings %u x %u, first: %.6f %.6f %.6f, mean %.6f\n", info.max_tokens,
           info.text_embedding_dim, embeddings[0], embeddings[1], embeddings[2], mean);
    exit_code = 0;

done:
    free(embeddings);
    free(ids);
    status = dm_model_free(model);
    if (status != DM_OK) {
        exit_code = report("dm_model_free", status);
    }
    return exit_code;
}
