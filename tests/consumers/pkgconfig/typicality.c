/*
 * typicality MODEL_DIR CASE_DIR OUT_MAP: a C program built the way a user builds against an installed
 * libdiffmine (the Makefile next to it asks pkg-config for the flags). Computes the typicality map of
 * the case's image with the case's explicit noise and timesteps and writes it to OUT_MAP as raw
 * float32; tests/install.rs compares it with the reference map.
 *
 * CASE_DIR holds shape.txt ("HEIGHT WIDTH SAMPLES"), prompt.txt, null_prompt.txt, image.f32 (HEIGHT ×
 * WIDTH × 3 floats in [0, 1]), timesteps.i64 (SAMPLES) and noise.f32 (SAMPLES latents).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <diffmine.h>

/* The whole file at `dir`/`name` into a new buffer; its size in bytes into `*size`. NULL on failure. */
static void *read_file(const char *dir, const char *name, size_t *size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    fseek(file, 0, SEEK_END);
    const long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *data = malloc((size_t)length + 1);
    if (data != NULL && fread(data, 1, (size_t)length, file) == (size_t)length) {
        data[length] = '\0';
        *size = (size_t)length;
    } else {
        fprintf(stderr, "cannot read %s\n", path);
        free(data);
        data = NULL;
    }
    fclose(file);
    return data;
}

struct inputs {
    unsigned height, width, samples;
    char *prompt, *null_prompt;
    float *image, *noise;
    int64_t *timesteps;
    size_t image_bytes, noise_bytes, timesteps_bytes;
};

static void free_inputs(struct inputs *in) {
    free(in->prompt);
    free(in->null_prompt);
    free(in->image);
    free(in->noise);
    free(in->timesteps);
}

static int read_inputs(const char *dir, struct inputs *in) {
    size_t size = 0;
    char *shape = read_file(dir, "shape.txt", &size);
    const int parsed = shape != NULL && sscanf(shape, "%u %u %u", &in->height, &in->width, &in->samples) == 3;
    free(shape);
    in->prompt = read_file(dir, "prompt.txt", &size);
    in->null_prompt = read_file(dir, "null_prompt.txt", &size);
    in->image = read_file(dir, "image.f32", &in->image_bytes);
    in->noise = read_file(dir, "noise.f32", &in->noise_bytes);
    in->timesteps = read_file(dir, "timesteps.i64", &in->timesteps_bytes);
    return parsed && in->prompt != NULL && in->null_prompt != NULL && in->image != NULL && in->noise != NULL &&
           in->timesteps != NULL;
}

static int typicality(const char *model_dir, const struct inputs *in, const char *out_path) {
    dm_model *model = NULL;
    if (dm_model_open(model_dir, NULL, &model) != DM_OK) {
        fprintf(stderr, "dm_model_open: %s\n", dm_last_error());
        return 1;
    }
    dm_typicality_options options;
    dm_typicality_options_default(&options);
    options.samples = in->samples;
    options.batch = in->samples;
    options.latent = DM_LATENT_MEAN;
    options.timesteps = in->timesteps;
    options.timesteps_len = in->timesteps_bytes / sizeof(int64_t);
    options.noise = in->noise;
    options.noise_len = in->noise_bytes / sizeof(float);
    const dm_image_view image = {in->image, in->image_bytes, in->width, in->height, 3, DM_PIXEL_F32,
                                 (size_t)in->width * 3 * sizeof(float)};
    const size_t map_len = (size_t)in->height * in->width;
    float *map = malloc(map_len * sizeof *map);
    int failed = map == NULL;
    if (!failed && dm_typicality_map(model, &image, in->prompt, in->null_prompt, &options, NULL, NULL, map, map_len,
                                     NULL, 0) != DM_OK) {
        fprintf(stderr, "dm_typicality_map: %s\n", dm_last_error());
        failed = 1;
    }
    FILE *out = failed ? NULL : fopen(out_path, "wb");
    if (!failed && (out == NULL || fwrite(map, sizeof *map, map_len, out) != map_len)) {
        fprintf(stderr, "cannot write %s\n", out_path);
        failed = 1;
    }
    if (out != NULL && fclose(out) != 0) {
        failed = 1;
    }
    free(map);
    dm_model_free(model);
    return failed;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL_DIR CASE_DIR OUT_MAP\n", argv[0]);
        return 2;
    }
    printf("libdiffmine %s (header %d.%d.%d)\n", dm_version(), DM_VERSION_MAJOR, DM_VERSION_MINOR, DM_VERSION_PATCH);
    struct inputs in = {0};
    int failed = !read_inputs(argv[2], &in) || typicality(argv[1], &in, argv[3]);
    free_inputs(&in);
    return failed;
}
