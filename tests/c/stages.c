/*
 * stages MODEL_DIR: mining stage by stage through the C API equals a miner's run, checked from C (run
 * by tests/c_api.rs, also under valgrind).
 *
 * Every check prints what failed; the exit status is the number of failed checks (0 = all passed).
 * Two small generated images of one label go through dm_mining_image, dm_mining_top (given in the
 * reverse order), dm_mining_feature_dim, dm_mining_box_features and dm_mining_cluster; the kept boxes,
 * their typicality, clusters, ranks and distances must equal those of a dm_miner run on the same
 * pixels and options, exactly. Then dm_report_* writes the report of the staged results, with one
 * skipped image, which the page must count; and a too small output buffer is refused.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffmine.h"

static int failures = 0;

static void expect(int ok, const char *what, int line) {
    if (!ok) {
        fprintf(stderr, "stages.c:%d: FAILED: %s (last error: \"%s\")\n", line, what, dm_last_error());
        failures++;
    }
}

#define EXPECT(cond) expect((cond), #cond, __LINE__)
#define EXPECT_OK(call) expect((call) == DM_OK, #call, __LINE__)

#define SIDE 32
#define IMAGES 2
#define PER_IMAGE 2
#define TOP 3

static const char *const NAMES[IMAGES] = {"a", "b"};
static const char *const LABEL = "Nodule";

static void make_image(uint8_t *pixels, int k) {
    for (int y = 0; y < SIDE; y++) {
        for (int x = 0; x < SIDE; x++) {
            for (int c = 0; c < 3; c++) {
                pixels[(y * SIDE + x) * 3 + c] = (uint8_t)((x * 7 + y * 13 + c * 50 + k * 90 + (x * y) % 17) % 256);
            }
        }
    }
}

static dm_image_view view_of(const uint8_t *pixels) {
    dm_image_view view = {pixels, SIDE * SIDE * 3, SIDE, SIDE, 3, DM_PIXEL_U8, SIDE * 3};
    return view;
}

static void set_options(dm_miner_options *options) {
    dm_miner_options_default(options);
    options->prompt_template = "Chest X-Ray with {label}.";
    options->null_prompt = "Chest X-Ray.";
    options->samples = 2;
    options->batch = 2;
    options->patch_size = 8;
    options->per_image = PER_IMAGE;
    options->top = TOP;
    options->dift_ensemble = 1;
    options->clusters = 2;
    options->restarts = 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: stages MODEL_DIR\n");
        return 2;
    }
    dm_model *model = NULL;
    if (dm_model_open(argv[1], NULL, &model) != DM_OK) {
        fprintf(stderr, "dm_model_open: %s\n", dm_last_error());
        return 1;
    }
    dm_miner_options options;
    set_options(&options);
    static uint8_t pixels[IMAGES][SIDE * SIDE * 3];
    static float maps[IMAGES][DM_MINING_MAP_MAX];
    dm_mined_image_info info[IMAGES];
    dm_box boxes[IMAGES][PER_IMAGE];
    size_t box_count[IMAGES] = {0, 0};
    for (int k = 0; k < IMAGES; k++) {
        make_image(pixels[k], k);
        dm_image_view view = view_of(pixels[k]);
        info[k].struct_size = sizeof info[k];
        EXPECT_OK(dm_mining_image(model, &options, &view, LABEL, boxes[k], PER_IMAGE, &box_count[k], maps[k], DM_MINING_MAP_MAX, &info[k]));
        EXPECT(box_count[k] >= 1 && info[k].width == SIDE && info[k].height == SIDE);
    }

    /* Every candidate, the second image's first. */
    dm_candidate candidates[IMAGES * PER_IMAGE];
    size_t n = 0;
    for (int k = IMAGES - 1; k >= 0; k--) {
        for (size_t i = 0; i < box_count[k]; i++, n++) {
            dm_candidate c = {NAMES[k], boxes[k][i].x, boxes[k][i].y, boxes[k][i].size, boxes[k][i].score};
            candidates[n] = c;
        }
    }
    size_t best[IMAGES * PER_IMAGE], kept_count = 0;
    EXPECT(dm_mining_top(candidates, n, TOP, best, 1, &kept_count) == DM_ERR_BUFFER_TOO_SMALL);
    EXPECT_OK(dm_mining_top(candidates, n, TOP, best, n, &kept_count));
    EXPECT(kept_count == TOP);
    dm_candidate kept[TOP];
    for (size_t i = 0; i < kept_count; i++) {
        kept[i] = candidates[best[i]];
    }

    size_t dim = 0;
    EXPECT_OK(dm_mining_feature_dim(model, &dim));
    float *features = calloc(kept_count * dim, sizeof *features);
    for (size_t i = 0; i < kept_count; i++) {
        int k = strcmp(kept[i].image, NAMES[0]) == 0 ? 0 : 1;
        dm_image_view view = view_of(pixels[k]);
        dm_box one = {kept[i].x, kept[i].y, kept[i].size, kept[i].typicality};
        EXPECT_OK(dm_mining_box_features(model, &options, &view, LABEL, &one, 1, features + i * dim, dim));
    }
    dm_clustered_patch patches[TOP];
    dm_mined_cluster clusters[TOP];
    size_t patch_count = 0, cluster_count = 0;
    EXPECT_OK(dm_mining_cluster(kept, kept_count, features, kept_count * dim, dim, &options, patches, TOP, &patch_count, clusters,
                                TOP, &cluster_count));
    EXPECT(patch_count == TOP && cluster_count >= 1);

    /* The same images and options through a miner. */
    dm_miner *miner = NULL;
    EXPECT_OK(dm_miner_create(model, &options, &miner));
    for (int k = 0; k < IMAGES; k++) {
        dm_image_view view = view_of(pixels[k]);
        EXPECT_OK(dm_miner_add_image(miner, &view, NAMES[k], LABEL));
    }
    EXPECT_OK(dm_miner_run(miner, NULL, NULL));
    dm_mined_patch mined[TOP];
    dm_mined_cluster mined_clusters[TOP];
    size_t mined_count = 0, mined_cluster_count = 0;
    EXPECT_OK(dm_miner_patches(miner, 0, mined, TOP, &mined_count));
    EXPECT_OK(dm_miner_clusters(miner, 0, mined_clusters, TOP, &mined_cluster_count));
    EXPECT(mined_count == patch_count && mined_cluster_count == cluster_count);
    for (size_t i = 0; i < mined_count && i < patch_count; i++) {
        const dm_candidate *c = &kept[patches[i].candidate];
        EXPECT(strcmp(c->image, NAMES[mined[i].image]) == 0);
        EXPECT(c->x == mined[i].x && c->y == mined[i].y && c->typicality == mined[i].typicality);
        EXPECT(patches[i].cluster == mined[i].cluster && patches[i].rank_in_cluster == mined[i].rank_in_cluster);
        EXPECT(patches[i].distance == mined[i].distance);
    }
    for (size_t i = 0; i < cluster_count && i < mined_cluster_count; i++) {
        EXPECT(memcmp(&clusters[i], &mined_clusters[i], sizeof clusters[i]) == 0);
    }
    dm_miner_free(miner);

    /* The report of the staged results, with a skipped image. */
    char folder[] = "/tmp/dm_stages_XXXXXX";
    EXPECT(mkdtemp(folder) != NULL);
    dm_report *report = NULL;
    EXPECT_OK(dm_report_new(&options, &report));
    EXPECT_OK(dm_report_add_label(report, LABEL, kept, kept_count, patches, patch_count, clusters, cluster_count));
    for (int k = 0; k < IMAGES; k++) {
        dm_image_view view = view_of(pixels[k]);
        EXPECT_OK(dm_report_add_image(report, NAMES[k], &view));
        EXPECT_OK(dm_report_add_map(report, LABEL, NAMES[k], maps[k], info[k].map_height, info[k].map_width));
    }
    EXPECT_OK(dm_report_add_skipped(report, LABEL, "broken.png", "not a PNG"));
    EXPECT_OK(dm_report_write(report, folder));
    EXPECT_OK(dm_report_free(report));
    char path[64];
    snprintf(path, sizeof path, "%s/index.html", folder);
    FILE *page = fopen(path, "rb");
    EXPECT(page != NULL);
    if (page != NULL) {
        static char html[1 << 20];
        size_t read = fread(html, 1, sizeof html - 1, page);
        html[read] = '\0';
        fclose(page);
        EXPECT(strstr(html, "1 unreadable image skipped") != NULL && strstr(html, "broken.png: not a PNG") != NULL);
    }
    char command[96];
    snprintf(command, sizeof command, "rm -rf %s", folder);
    EXPECT(system(command) == 0);

    free(features);
    dm_model_free(model);
    return failures;
}
