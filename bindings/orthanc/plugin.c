/*
 * libdiffmine's Orthanc plugin: typicality maps of the images a PACS stores, computed by a finetuned
 * diffusion model inside the PACS and stored back into the source's study as new series.
 *
 * Copyright (C) 2026 the libdiffmine authors. This plugin is free software: you can redistribute it
 * and/or modify it under the terms of the GNU General Public License as published by the Free
 * Software Foundation, either version 3 of the License, or (at your option) any later version (see
 * LICENSE in this folder). It is a work based on Orthanc's plugin SDK, itself GPL-3.0-or-later.
 *
 * Threads: REST callbacks (no lock: they only read the settings and submit jobs), Orthanc's job
 * workers (one job's steps at a time), one worker thread per running job (the computation, so that
 * a step returns quickly and a cancel is seen between UNet batches) and one auto-processing thread
 * (NewInstance changes are only queued on Orthanc's callback thread).
 */
#include <OrthancCPlugin.h>
#include <diffmine.h>
#include <json-c/json.h>

#include <errno.h>
#include <fnmatch.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PLUGIN_NAME "diffmine"
#define PLUGIN_VERSION "0.1.0"
#define JOB_TYPE "DiffmineTypicality"
/* Series descriptions of the plugin's own outputs start with this, so they are never scored again. */
#define OUTPUT_DESCRIPTION_PREFIX "libdiffmine"
#define AUTO_QUEUE_CAPACITY 4096
#define WRITTEN_UIDS_CAPACITY 65536

static OrthancPluginContext *context;

/* ---------------------------------------------------------------- logging and small helpers */

static void log_message(void (*sink)(OrthancPluginContext *, const char *), const char *format, ...) {
    char message[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    sink(context, message);
}

#define LOG_ERROR(...) log_message(OrthancPluginLogError, "diffmine: " __VA_ARGS__)
#define LOG_WARNING(...) log_message(OrthancPluginLogWarning, "diffmine: " __VA_ARGS__)
#define LOG_INFO(...) log_message(OrthancPluginLogInfo, "diffmine: " __VA_ARGS__)

static char *format_string(const char *format, ...) {
    va_list args;
    va_start(args, format);
    int length = vsnprintf(NULL, 0, format, args);
    va_end(args);
    char *text = malloc((size_t)length + 1);
    if (text == NULL) return NULL;
    va_start(args, format);
    vsnprintf(text, (size_t)length + 1, format, args);
    va_end(args);
    return text;
}

static char *copy_string(const char *text) { return text == NULL ? NULL : strdup(text); }

/* A growable array of owned strings. */
struct strings {
    char **items;
    size_t count;
};

static int strings_push(struct strings *list, const char *text) {
    char **grown = realloc(list->items, (list->count + 1) * sizeof *grown);
    if (grown == NULL) return -1;
    list->items = grown;
    if ((list->items[list->count] = copy_string(text)) == NULL) return -1;
    list->count++;
    return 0;
}

static void strings_free(struct strings *list) {
    for (size_t i = 0; i < list->count; i++) free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

/* ---------------------------------------------------------------- result objects */

enum result_kind { RESULT_OVERLAY, RESULT_RAW, RESULT_SEGMENTATION, RESULT_PARAMETRIC, RESULT_KINDS };
static const char *const RESULT_NAMES[RESULT_KINDS] = {"Overlay", "Raw", "Segmentation", "ParametricMap"};
#define RESULT_LIST "Overlay, Raw, Segmentation, ParametricMap"
static const uint32_t RESULT_MAP_KIND[RESULT_KINDS] = {DM_MAP_OVERLAY, DM_MAP_RAW, DM_MAP_SEGMENTATION, DM_MAP_PARAMETRIC};
/* The end of each result series' description. */
static const char *const RESULT_DESCRIPTIONS[RESULT_KINDS] = {"overlay", "raw values", "segmentation", "parametric map"};
/* The longest label a segment or a series description takes (DICOM LO: 64 characters). */
#define LABEL_MAX 64

/* Reads a list of result names into a bit set; NULL on success, else the message. */
static char *parse_results(json_object *array, uint32_t *out_results) {
    if (!json_object_is_type(array, json_type_array) || json_object_array_length(array) == 0)
        return format_string("\"Results\" must be a non-empty list of " RESULT_LIST);
    uint32_t results = 0;
    for (size_t i = 0; i < json_object_array_length(array); i++) {
        const char *name = json_object_get_string(json_object_array_get_idx(array, i));
        int kind = -1;
        for (int k = 0; k < RESULT_KINDS; k++)
            if (name != NULL && strcmp(name, RESULT_NAMES[k]) == 0) kind = k;
        if (kind < 0) return format_string("unknown result object \"%s\" (known: " RESULT_LIST ")", name ? name : "");
        results |= 1u << kind;
    }
    *out_results = results;
    return NULL;
}

/* ---------------------------------------------------------------- settings ("Diffmine" section) */

struct settings {
    json_object *root; /* Orthanc's whole configuration; the strings below point into it */
    const char *model;
    const char *base;
    const char *device;
    const char *dtype;
    uint32_t dtype_code;
    uint32_t samples;
    uint32_t batch;
    uint64_t seed;
    const char *prompt_template;
    const char *null_prompt;
    json_object *labels;
    uint32_t working_size;
    uint32_t results;
    const char *temporary_folder;
    /* Auto-processing: enabled when the section has "AutoProcess". */
    int auto_enabled;
    json_object *auto_modalities;
    json_object *auto_descriptions;
    json_object *auto_labels;
};

static struct settings settings;

static const char *string_key(json_object *section, const char *key, const char *fallback) {
    json_object *value;
    return json_object_object_get_ex(section, key, &value) && json_object_is_type(value, json_type_string) ? json_object_get_string(value) : fallback;
}

static int64_t integer_key(json_object *section, const char *key, int64_t fallback) {
    json_object *value;
    return json_object_object_get_ex(section, key, &value) && json_object_is_type(value, json_type_int) ? json_object_get_int64(value) : fallback;
}

static json_object *array_key(json_object *section, const char *key) {
    json_object *value;
    return json_object_object_get_ex(section, key, &value) && json_object_is_type(value, json_type_array) ? value : NULL;
}

static char *parse_dtype(const char *name, uint32_t *out) {
    if (strcmp(name, "float32") == 0) *out = DM_DTYPE_FLOAT32;
    else if (strcmp(name, "float16") == 0) *out = DM_DTYPE_FLOAT16;
    else if (strcmp(name, "bfloat16") == 0) *out = DM_DTYPE_BFLOAT16;
    else return format_string("\"Dtype\" must be float32, float16 or bfloat16, not \"%s\"", name);
    return NULL;
}

/* Reads the "Diffmine" section of Orthanc's configuration; NULL on success, else the message. */
static char *read_settings(void) {
    char *text = OrthancPluginGetConfiguration(context);
    if (text == NULL) return format_string("cannot read Orthanc's configuration");
    settings.root = json_tokener_parse(text);
    OrthancPluginFreeString(context, text);
    json_object *section;
    if (settings.root == NULL || !json_object_object_get_ex(settings.root, "Diffmine", &section) || !json_object_is_type(section, json_type_object))
        return format_string("the configuration has no \"Diffmine\" section");
    settings.model = string_key(section, "Model", NULL);
    if (settings.model == NULL) return format_string("\"Diffmine\" needs \"Model\", the model folder");
    settings.base = string_key(section, "Base", NULL);
    settings.device = string_key(section, "Device", "cpu");
    settings.dtype = string_key(section, "Dtype", "float32");
    char *error = parse_dtype(settings.dtype, &settings.dtype_code);
    if (error != NULL) return error;
    int64_t samples = integer_key(section, "Samples", 100);
    int64_t batch = integer_key(section, "Batch", 10);
    int64_t working_size = integer_key(section, "WorkingSize", 512);
    if (samples < 1 || samples > DM_TYPICALITY_MAX_SAMPLES || batch < 1 || batch > UINT32_MAX || working_size < 0 || working_size > 65535)
        return format_string("\"Samples\" must be in 1..%d, \"Batch\" positive and \"WorkingSize\" in 0..65535", DM_TYPICALITY_MAX_SAMPLES);
    settings.samples = (uint32_t)samples;
    settings.batch = (uint32_t)batch;
    settings.working_size = (uint32_t)working_size;
    settings.seed = (uint64_t)integer_key(section, "Seed", 42);
    settings.prompt_template = string_key(section, "PromptTemplate", "Chest X-Ray with {label}.");
    settings.null_prompt = string_key(section, "NullPrompt", "Chest X-Ray.");
    settings.labels = array_key(section, "Labels");
    settings.temporary_folder = string_key(section, "TemporaryFolder", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    json_object *results = array_key(section, "Results");
    settings.results = 1u << RESULT_OVERLAY | 1u << RESULT_SEGMENTATION | 1u << RESULT_PARAMETRIC;
    if (results != NULL && (error = parse_results(results, &settings.results)) != NULL) return error;
    json_object *rule;
    if (json_object_object_get_ex(section, "AutoProcess", &rule) && json_object_is_type(rule, json_type_object)) {
        settings.auto_enabled = 1;
        settings.auto_modalities = array_key(rule, "Modalities");
        settings.auto_descriptions = array_key(rule, "SeriesDescriptions");
        settings.auto_labels = array_key(rule, "Labels");
        if (settings.auto_labels == NULL || json_object_array_length(settings.auto_labels) == 0)
            return format_string("\"AutoProcess\" needs \"Labels\", the labels to score arriving images with");
    }
    return NULL;
}

/* ---------------------------------------------------------------- the model */

static dm_model *model;
/* Why the model is not loaded (NULL when it is). */
static char *model_error;

/* The component folders the model folder lacks are read from the base folder. */
static const char *component_from_base(const char *component, char *buffer, size_t size) {
    if (settings.base == NULL) return NULL;
    snprintf(buffer, size, "%s/%s", settings.model, component);
    if (access(buffer, F_OK) == 0) return NULL;
    snprintf(buffer, size, "%s/%s", settings.base, component);
    return buffer;
}

static void load_model(void) {
    dm_model_options options;
    dm_model_options_default(&options);
    options.device = settings.device;
    options.dtype = settings.dtype_code;
    char unet[4096], vae[4096], text_encoder[4096], tokenizer[4096], scheduler[4096];
    options.unet_path = component_from_base("unet", unet, sizeof unet);
    options.vae_path = component_from_base("vae", vae, sizeof vae);
    options.text_encoder_path = component_from_base("text_encoder", text_encoder, sizeof text_encoder);
    options.tokenizer_path = component_from_base("tokenizer", tokenizer, sizeof tokenizer);
    options.scheduler_path = component_from_base("scheduler", scheduler, sizeof scheduler);
    if (dm_model_open(settings.model, &options, &model) != DM_OK) {
        model_error = format_string("the model %s could not be loaded: %s", settings.model, dm_last_error());
        model = NULL;
    }
}

/* Forwards the library's warnings and errors to Orthanc's log. */
static void forward_library_log(int32_t level, const char *target, const char *message, void *user_data) {
    if (level <= DM_LOG_ERROR) LOG_ERROR("%s: %s", target, message);
    else LOG_WARNING("%s: %s", target, message);
}

/* ---------------------------------------------------------------- Orthanc's REST API from inside */

/* GET `uri` as JSON; NULL when Orthanc answers an error (an unknown resource). */
static json_object *rest_get_json(const char *uri) {
    OrthancPluginMemoryBuffer answer;
    if (OrthancPluginRestApiGet(context, &answer, uri) != OrthancPluginErrorCode_Success) return NULL;
    json_tokener *tokener = json_tokener_new();
    json_object *value = json_tokener_parse_ex(tokener, answer.data, (int)answer.size);
    json_tokener_free(tokener);
    OrthancPluginFreeMemoryBuffer(context, &answer);
    return value;
}

static const char *json_string_at(json_object *object, const char *key) {
    json_object *value;
    return json_object_object_get_ex(object, key, &value) && json_object_is_type(value, json_type_string) ? json_object_get_string(value) : "";
}

/* ---------------------------------------------------------------- outputs the plugin wrote */

static pthread_mutex_t written_lock = PTHREAD_MUTEX_INITIALIZER;
static char *written_uids[WRITTEN_UIDS_CAPACITY];
static size_t written_next;

static void remember_written(const char *uid) {
    pthread_mutex_lock(&written_lock);
    free(written_uids[written_next]);
    written_uids[written_next] = copy_string(uid);
    written_next = (written_next + 1) % WRITTEN_UIDS_CAPACITY;
    pthread_mutex_unlock(&written_lock);
}

/* An instance the plugin wrote (this run, by UID; any run, by its series description). */
static int is_own_output(json_object *tags) {
    if (strncmp(json_string_at(tags, "SeriesDescription"), OUTPUT_DESCRIPTION_PREFIX, strlen(OUTPUT_DESCRIPTION_PREFIX)) == 0) return 1;
    const char *uid = json_string_at(tags, "SOPInstanceUID");
    int found = 0;
    pthread_mutex_lock(&written_lock);
    for (size_t i = 0; i < WRITTEN_UIDS_CAPACITY && !found; i++) found = written_uids[i] != NULL && strcmp(written_uids[i], uid) == 0;
    pthread_mutex_unlock(&written_lock);
    return found;
}

static json_object *instance_tags(const char *instance) {
    char uri[256];
    snprintf(uri, sizeof uri, "/instances/%s/simplified-tags", instance);
    return rest_get_json(uri);
}

/* ---------------------------------------------------------------- jobs */

/* What to compute: the instances and, per label, its prompt. */
struct request {
    struct strings instances;
    struct strings labels;
    struct strings prompts;
    uint32_t samples;
    uint64_t seed;
    uint32_t results;
};

struct job {
    struct request request;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_t worker;
    int worker_started, worker_done, worker_joined, cancel;
    float progress;
    char *error;
    /* Result files in `folder`, stored into Orthanc in one step at the end. */
    struct strings outputs;
    char folder[4096];
    char *content;
    char id[64];
    int running;
    struct job *next;
};

/* Live jobs, for GET /diffmine/status. */
static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct job *jobs;

static void request_free(struct request *request) {
    strings_free(&request->instances);
    strings_free(&request->labels);
    strings_free(&request->prompts);
}

/* The prompt for `label`: the template with {label} replaced. */
static char *prompt_for(const char *label) {
    const char *at = strstr(settings.prompt_template, "{label}");
    if (at == NULL) return copy_string(settings.prompt_template);
    return format_string("%.*s%s%s", (int)(at - settings.prompt_template), settings.prompt_template, label, at + strlen("{label}"));
}

static void set_error(struct job *job, char *message) {
    pthread_mutex_lock(&job->lock);
    if (job->error == NULL) job->error = message;
    else free(message);
    pthread_mutex_unlock(&job->lock);
}

static int is_cancelled(struct job *job) {
    pthread_mutex_lock(&job->lock);
    int cancel = job->cancel;
    pthread_mutex_unlock(&job->lock);
    return cancel;
}

/* Progress of one map within the job: `unit` of `units` maps. */
struct progress_scope {
    struct job *job;
    size_t unit, units;
};

static int32_t on_progress(uint64_t done, uint64_t total, double value, void *user_data) {
    struct progress_scope *scope = user_data;
    pthread_mutex_lock(&scope->job->lock);
    scope->job->progress = (float)((scope->unit + (total ? (double)done / (double)total : 0.0)) / (double)scope->units);
    int cancel = scope->job->cancel;
    pthread_mutex_unlock(&scope->job->lock);
    return cancel;
}

static int write_file(const char *path, const void *data, size_t size) {
    FILE *file = fopen(path, "wb");
    if (file == NULL) return -1;
    int ok = fwrite(data, 1, size, file) == size;
    return fclose(file) == 0 && ok ? 0 : -1;
}

static char *read_file(const char *path, size_t *out_size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *data = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (data != NULL && fread(data, 1, (size_t)size, file) != (size_t)size) {
        free(data);
        data = NULL;
    }
    fclose(file);
    *out_size = (size_t)size;
    return data;
}

/* The library's message about the temporary copy `path` of `instance`, naming the instance instead. */
static char *library_error(const char *instance, const char *path) {
    const char *message = dm_last_error();
    size_t length = strlen(path);
    if (strncmp(message, path, length) == 0 && strncmp(message + length, ": ", 2) == 0) message += length + 2;
    return format_string("instance %s: %s", instance, message);
}

/* Copies instance `instance` out of Orthanc into `path`; NULL on success, else the message. */
static char *fetch_instance(const char *instance, const char *path) {
    char uri[256];
    snprintf(uri, sizeof uri, "/instances/%s/file", instance);
    OrthancPluginMemoryBuffer file;
    if (OrthancPluginRestApiGet(context, &file, uri) != OrthancPluginErrorCode_Success) return format_string("instance %s: not in Orthanc any more", instance);
    int failed = write_file(path, file.data, file.size);
    OrthancPluginFreeMemoryBuffer(context, &file);
    return failed ? format_string("instance %s: cannot write %s: %s", instance, path, strerror(errno)) : NULL;
}

/* The result objects of one map, written into the job's folder as files to store. */
static char *write_results(struct job *job, const char *source, const char *instance, size_t index, size_t label, const float *map, size_t map_len, uint32_t width,
                           uint32_t height, char series[][RESULT_KINDS][DM_UID_BUFFER_SIZE]) {
    for (int kind = 0; kind < RESULT_KINDS; kind++) {
        if (!(job->request.results & (1u << kind))) continue;
        char path[4200], uid[DM_UID_BUFFER_SIZE], description[LABEL_MAX + 1];
        snprintf(path, sizeof path, "%s/result-%zu-%zu-%d.dcm", job->folder, index, label, kind);
        const char *name = job->request.labels.items[label];
        /* A prompt given instead of a label may be too long to name the segment. */
        int named = strlen(name) <= LABEL_MAX - strlen("libdiffmine  typicality (parametric map)");
        snprintf(description, sizeof description, "libdiffmine %s typicality (%s)", named ? name : "prompt", RESULT_DESCRIPTIONS[kind]);
        dm_dicom_map_options options;
        dm_dicom_map_options_default(&options);
        options.kind = RESULT_MAP_KIND[kind];
        options.label = named ? name : NULL;
        options.prompt = job->request.prompts.items[label];
        options.null_prompt = settings.null_prompt;
        options.samples = job->request.samples;
        options.seed = job->request.seed;
        options.series_instance_uid = series[label][kind];
        options.series_description = description;
        /* Series numbers tell the kinds apart in lists sorted by number. */
        options.series_number = options.series_number + (uint32_t)kind;
        if (dm_map_write_dicom_object(source, 0, map, map_len, width, height, &options, path, uid, sizeof uid) != DM_OK) return library_error(instance, source);
        remember_written(uid);
        pthread_mutex_lock(&job->lock);
        int failed = strings_push(&job->outputs, path);
        pthread_mutex_unlock(&job->lock);
        if (failed) return format_string("out of memory");
    }
    return NULL;
}

/* The maps of one source instance, for every label of the request. */
static char *process_instance(struct job *job, size_t index, char series[][RESULT_KINDS][DM_UID_BUFFER_SIZE]) {
    const char *instance = job->request.instances.items[index];
    char source[4200];
    snprintf(source, sizeof source, "%s/source-%zu.dcm", job->folder, index);
    char *error = fetch_instance(instance, source);
    if (error != NULL) return error;
    dm_image *image = NULL;
    if (dm_image_open(source, NULL, &image) != DM_OK) return library_error(instance, source);
    dm_image_view view;
    dm_typicality_options options;
    dm_typicality_options_default(&options);
    options.samples = job->request.samples;
    options.batch = settings.batch;
    options.seed = job->request.seed;
    options.resize_short_side = settings.working_size;
    uint32_t height = 0, width = 0;
    if (dm_image_get_view(image, &view) != DM_OK || dm_typicality_map_size(&view, &options, &height, &width) != DM_OK) {
        error = library_error(instance, source);
        dm_image_free(image);
        return error;
    }
    size_t map_len = (size_t)width * height;
    float *map = malloc(map_len * sizeof *map);
    for (size_t label = 0; label < job->request.prompts.count && error == NULL; label++) {
        struct progress_scope scope = {job, index * job->request.prompts.count + label, job->request.instances.count * job->request.prompts.count};
        if (map == NULL) error = format_string("out of memory for a %u x %u map", width, height);
        else if (dm_typicality_map(model, &view, job->request.prompts.items[label], settings.null_prompt, &options, on_progress, &scope, map, map_len, NULL, 0) != DM_OK)
            error = library_error(instance, source);
        else error = write_results(job, source, instance, index, label, map, map_len, width, height, series);
    }
    free(map);
    dm_image_free(image);
    return error;
}

static void *job_work(void *user_data) {
    struct job *job = user_data;
    size_t labels = job->request.prompts.count;
    char(*series)[RESULT_KINDS][DM_UID_BUFFER_SIZE] = calloc(labels, sizeof *series);
    char *error = series == NULL ? format_string("out of memory") : NULL;
    for (size_t label = 0; label < labels && error == NULL; label++)
        for (int kind = 0; kind < RESULT_KINDS && error == NULL; kind++)
            if (dm_dicom_new_uid(series[label][kind], DM_UID_BUFFER_SIZE) != DM_OK) error = format_string("%s", dm_last_error());
    for (size_t i = 0; i < job->request.instances.count && error == NULL; i++)
        error = is_cancelled(job) ? format_string("cancelled") : process_instance(job, i, series);
    free(series);
    if (error != NULL) set_error(job, error);
    pthread_mutex_lock(&job->lock);
    job->worker_done = 1;
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
    return NULL;
}

static int remove_entry(const char *path, const struct stat *info, int flag, struct FTW *ftw) { return remove(path); }

/* Stops the worker (cancelling its computation) and removes its files. */
static void stop_worker(struct job *job) {
    pthread_mutex_lock(&job->lock);
    job->cancel = 1;
    int join = job->worker_started && !job->worker_joined;
    job->worker_joined |= join;
    pthread_mutex_unlock(&job->lock);
    if (join) pthread_join(job->worker, NULL);
    if (job->folder[0] != '\0') nftw(job->folder, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    job->folder[0] = '\0';
    strings_free(&job->outputs);
}

static void set_content(struct job *job, json_object *content) {
    char *text = copy_string(json_object_to_json_string_ext(content, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(content);
    pthread_mutex_lock(&job->lock);
    free(job->content);
    job->content = text;
    pthread_mutex_unlock(&job->lock);
}

static json_object *strings_to_json(const struct strings *list) {
    json_object *array = json_object_new_array();
    for (size_t i = 0; i < list->count; i++) json_object_array_add(array, json_object_new_string(list->items[i]));
    return array;
}

/* The job's description: its request, and its new instances or its error. */
static void describe_job(struct job *job, const struct strings *stored, const char *error) {
    json_object *content = json_object_new_object();
    json_object_object_add(content, "Sources", strings_to_json(&job->request.instances));
    json_object_object_add(content, "Labels", strings_to_json(&job->request.labels));
    json_object_object_add(content, "Samples", json_object_new_int64(job->request.samples));
    json_object_object_add(content, "Seed", json_object_new_uint64(job->request.seed));
    if (stored != NULL) json_object_object_add(content, "Instances", strings_to_json(stored));
    if (error != NULL) json_object_object_add(content, "Error", json_object_new_string(error));
    set_content(job, content);
}

static void delete_instances(const struct strings *stored) {
    for (size_t i = 0; i < stored->count; i++) {
        char uri[256];
        snprintf(uri, sizeof uri, "/instances/%s", stored->items[i]);
        OrthancPluginRestApiDelete(context, uri);
    }
}

/* Stores every result file; on any failure removes those stored, so nothing is half-stored. */
static char *store_outputs(struct job *job, struct strings *stored) {
    for (size_t i = 0; i < job->outputs.count; i++) {
        size_t size = 0;
        char *data = read_file(job->outputs.items[i], &size);
        OrthancPluginMemoryBuffer answer;
        OrthancPluginErrorCode code = data == NULL ? OrthancPluginErrorCode_InexistentFile : OrthancPluginRestApiPost(context, &answer, "/instances", data, size);
        free(data);
        json_object *reply = NULL;
        if (code == OrthancPluginErrorCode_Success) {
            json_tokener *tokener = json_tokener_new();
            reply = json_tokener_parse_ex(tokener, answer.data, (int)answer.size);
            json_tokener_free(tokener);
            OrthancPluginFreeMemoryBuffer(context, &answer);
        }
        const char *id = reply != NULL ? json_string_at(reply, "ID") : "";
        if (*id == '\0' || strings_push(stored, id) != 0) {
            json_object_put(reply);
            delete_instances(stored);
            return format_string("Orthanc refused the result %s: %s", job->outputs.items[i], OrthancPluginGetErrorDescription(context, code));
        }
        json_object_put(reply);
    }
    return NULL;
}

static int start_worker(struct job *job) {
    char pattern[4096];
    snprintf(pattern, sizeof pattern, "%s/diffmine-XXXXXX", settings.temporary_folder);
    if (mkdtemp(pattern) == NULL) {
        set_error(job, format_string("cannot create a folder in %s: %s", settings.temporary_folder, strerror(errno)));
        return -1;
    }
    snprintf(job->folder, sizeof job->folder, "%s", pattern);
    if (pthread_create(&job->worker, NULL, job_work, job) != 0) {
        set_error(job, format_string("cannot start a thread"));
        return -1;
    }
    job->worker_started = 1;
    return 0;
}

static OrthancPluginJobStepStatus finish_failed(struct job *job) {
    LOG_ERROR("job %s failed: %s", job->id, job->error);
    describe_job(job, NULL, job->error);
    stop_worker(job);
    return OrthancPluginJobStepStatus_Failure;
}

/* One step: starts the worker, then waits for it a little at a time, then stores its results. */
static OrthancPluginJobStepStatus job_step(void *user_data) {
    struct job *job = user_data;
    pthread_mutex_lock(&job->lock);
    job->running = 1;
    pthread_mutex_unlock(&job->lock);
    if (!job->worker_started && start_worker(job) != 0) return finish_failed(job);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 200 * 1000 * 1000;
    until.tv_sec += until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    pthread_mutex_lock(&job->lock);
    while (!job->worker_done && pthread_cond_timedwait(&job->changed, &job->lock, &until) == 0) {
    }
    int done = job->worker_done;
    pthread_mutex_unlock(&job->lock);
    if (!done) return OrthancPluginJobStepStatus_Continue;
    pthread_join(job->worker, NULL);
    job->worker_joined = 1;
    if (job->error != NULL) return finish_failed(job);
    struct strings stored = {0};
    char *error = store_outputs(job, &stored);
    if (error != NULL) {
        set_error(job, error);
        strings_free(&stored);
        return finish_failed(job);
    }
    LOG_INFO("job %s stored %zu instances", job->id, stored.count);
    describe_job(job, &stored, NULL);
    strings_free(&stored);
    stop_worker(job);
    pthread_mutex_lock(&job->lock);
    job->progress = 1.0f;
    pthread_mutex_unlock(&job->lock);
    return OrthancPluginJobStepStatus_Success;
}

static OrthancPluginErrorCode job_stop(void *user_data, OrthancPluginJobStopReason reason) {
    struct job *job = user_data;
    stop_worker(job);
    if (reason == OrthancPluginJobStopReason_Canceled) LOG_WARNING("job %s cancelled: nothing stored", job->id);
    pthread_mutex_lock(&job->lock);
    job->running = 0;
    pthread_mutex_unlock(&job->lock);
    return OrthancPluginErrorCode_Success;
}

/* Back to the start, for a resubmitted job. */
static OrthancPluginErrorCode job_reset(void *user_data) {
    struct job *job = user_data;
    stop_worker(job);
    pthread_mutex_lock(&job->lock);
    job->worker_started = job->worker_done = job->worker_joined = job->cancel = 0;
    job->progress = 0.0f;
    free(job->error);
    job->error = NULL;
    pthread_mutex_unlock(&job->lock);
    describe_job(job, NULL, NULL);
    return OrthancPluginErrorCode_Success;
}

static float job_progress(void *user_data) {
    struct job *job = user_data;
    pthread_mutex_lock(&job->lock);
    float progress = job->progress;
    pthread_mutex_unlock(&job->lock);
    return progress;
}

/* Orthanc copies the content right away; the pointer stays valid until the next set_content. */
static const char *job_content(void *user_data) {
    struct job *job = user_data;
    pthread_mutex_lock(&job->lock);
    const char *content = job->content;
    pthread_mutex_unlock(&job->lock);
    return content;
}

static const char *job_serialized(void *user_data) { return NULL; }

static void job_finalize(void *user_data) {
    struct job *job = user_data;
    stop_worker(job);
    pthread_mutex_lock(&jobs_lock);
    for (struct job **at = &jobs; *at != NULL; at = &(*at)->next)
        if (*at == job) {
            *at = job->next;
            break;
        }
    pthread_mutex_unlock(&jobs_lock);
    request_free(&job->request);
    free(job->error);
    free(job->content);
    pthread_mutex_destroy(&job->lock);
    pthread_cond_destroy(&job->changed);
    free(job);
}

/* Submits a job for `request` (taken over); writes its ID to `out_id`. NULL on success, else the message. */
static char *submit_job(struct request *request, char *out_id, size_t out_id_size) {
    struct job *job = calloc(1, sizeof *job);
    if (job == NULL) {
        request_free(request);
        return format_string("out of memory");
    }
    job->request = *request;
    pthread_mutex_init(&job->lock, NULL);
    pthread_cond_init(&job->changed, NULL);
    describe_job(job, NULL, NULL);
    OrthancPluginJob *handle = OrthancPluginCreateJob(context, job, job_finalize, JOB_TYPE, job_progress, job_content, job_serialized, job_step, job_stop, job_reset);
    if (handle == NULL) {
        job_finalize(job);
        return format_string("Orthanc could not create the job");
    }
    /* Listed before it is submitted: Orthanc may finalize it as soon as it is. */
    pthread_mutex_lock(&jobs_lock);
    job->next = jobs;
    jobs = job;
    char *id = OrthancPluginSubmitJob(context, handle, 0);
    if (id != NULL) snprintf(job->id, sizeof job->id, "%s", id);
    pthread_mutex_unlock(&jobs_lock);
    if (id == NULL) return format_string("Orthanc could not submit the job");
    snprintf(out_id, out_id_size, "%s", id);
    OrthancPluginFreeString(context, id);
    return NULL;
}

/* ---------------------------------------------------------------- REST routes */

static void answer_json(OrthancPluginRestOutput *output, uint16_t status, json_object *body) {
    const char *text = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (status == 200) OrthancPluginAnswerBuffer(context, output, text, strlen(text), "application/json");
    else OrthancPluginSendHttpStatus(context, output, status, text, (uint32_t)strlen(text));
    json_object_put(body);
}

/* Answers an error with its HTTP status and logs it. */
static void answer_error(OrthancPluginRestOutput *output, uint16_t status, const char *uri, char *message) {
    LOG_ERROR("%s: %s", uri, message);
    json_object *body = json_object_new_object();
    json_object_object_add(body, "HttpStatus", json_object_new_int(status));
    json_object_object_add(body, "Error", json_object_new_string(message ? message : "out of memory"));
    free(message);
    answer_json(output, status, body);
}

/* The instances a resource holds, skipping the plugin's own outputs in a series or study. */
static char *resolve_instances(const char *level, const char *id, struct strings *out) {
    char uri[256];
    int single = strcmp(level, "instances") == 0;
    snprintf(uri, sizeof uri, single ? "/instances/%s" : "/%s/%s/instances", level, id);
    if (single) snprintf(uri, sizeof uri, "/instances/%s", id);
    json_object *answer = rest_get_json(uri);
    if (answer == NULL) return format_string("unknown %s \"%s\"", single ? "instance" : strcmp(level, "series") == 0 ? "series" : "study", id);
    if (single) {
        json_object_put(answer);
        return strings_push(out, id) == 0 ? NULL : format_string("out of memory");
    }
    for (size_t i = 0; i < json_object_array_length(answer); i++) {
        const char *instance = json_string_at(json_object_array_get_idx(answer, i), "ID");
        json_object *tags = instance_tags(instance);
        int skip = tags == NULL || is_own_output(tags);
        json_object_put(tags);
        if (!skip) strings_push(out, instance);
    }
    json_object_put(answer);
    return out->count ? NULL : format_string("%s %s holds no instance to score", level, id);
}

static char *add_label(struct request *request, const char *label) {
    char *prompt = prompt_for(label);
    int failed = prompt == NULL || strings_push(&request->labels, label) || strings_push(&request->prompts, prompt);
    free(prompt);
    return failed ? format_string("out of memory") : NULL;
}

/* Reads the body: "Label" or "Labels" (else the configured labels), or "Prompt"; optional
 * "Samples", "Seed" and "Results". NULL on success, else the message. */
static char *parse_request(const char *body, uint32_t size, struct request *request) {
    request->samples = settings.samples;
    request->seed = settings.seed;
    request->results = settings.results;
    json_object *root = NULL;
    if (size > 0) {
        json_tokener *tokener = json_tokener_new();
        root = json_tokener_parse_ex(tokener, body, (int)size);
        json_tokener_free(tokener);
        if (!json_object_is_type(root, json_type_object)) {
            json_object_put(root);
            return format_string("the body must be a JSON object");
        }
    }
    char *error = NULL;
    json_object *value;
    if (root != NULL && json_object_object_get_ex(root, "Prompt", &value)) {
        if (!json_object_is_type(value, json_type_string)) error = format_string("\"Prompt\" must be a string");
        else if (strings_push(&request->labels, json_object_get_string(value)) || strings_push(&request->prompts, json_object_get_string(value)))
            error = format_string("out of memory");
    } else if (root != NULL && json_object_object_get_ex(root, "Label", &value)) {
        error = json_object_is_type(value, json_type_string) ? add_label(request, json_object_get_string(value)) : format_string("\"Label\" must be a string");
    } else {
        json_object *labels = root != NULL && json_object_object_get_ex(root, "Labels", &value) ? value : settings.labels;
        if (!json_object_is_type(labels, json_type_array) || json_object_array_length(labels) == 0)
            error = format_string("give \"Label\", \"Labels\" or \"Prompt\" (the configuration has no \"Labels\")");
        for (size_t i = 0; error == NULL && i < json_object_array_length(labels); i++) {
            json_object *label = json_object_array_get_idx(labels, i);
            error = json_object_is_type(label, json_type_string) ? add_label(request, json_object_get_string(label)) : format_string("\"Labels\" must be strings");
        }
    }
    if (error == NULL && root != NULL && json_object_object_get_ex(root, "Samples", &value)) {
        int64_t samples = json_object_get_int64(value);
        if (!json_object_is_type(value, json_type_int) || samples < 1 || samples > DM_TYPICALITY_MAX_SAMPLES)
            error = format_string("\"Samples\" must be an integer in 1..%d", DM_TYPICALITY_MAX_SAMPLES);
        request->samples = (uint32_t)samples;
    }
    if (error == NULL && root != NULL && json_object_object_get_ex(root, "Seed", &value)) {
        if (!json_object_is_type(value, json_type_int) || json_object_get_int64(value) < 0) error = format_string("\"Seed\" must be a non-negative integer");
        request->seed = (uint64_t)json_object_get_int64(value);
    }
    if (error == NULL && root != NULL && json_object_object_get_ex(root, "Results", &value)) error = parse_results(value, &request->results);
    json_object_put(root);
    return error;
}

static OrthancPluginErrorCode on_typicality(OrthancPluginRestOutput *output, const char *url, const OrthancPluginHttpRequest *http) {
    if (http->method != OrthancPluginHttpMethod_Post) {
        OrthancPluginSendMethodNotAllowed(context, output, "POST");
        return OrthancPluginErrorCode_Success;
    }
    if (model == NULL) {
        answer_error(output, 503, url, format_string("%s", model_error));
        return OrthancPluginErrorCode_Success;
    }
    struct request request = {0};
    char *error = parse_request(http->body, http->bodySize, &request);
    if (error != NULL) {
        request_free(&request);
        answer_error(output, 400, url, error);
        return OrthancPluginErrorCode_Success;
    }
    if ((error = resolve_instances(http->groups[0], http->groups[1], &request.instances)) != NULL) {
        request_free(&request);
        answer_error(output, 404, url, error);
        return OrthancPluginErrorCode_Success;
    }
    char id[64];
    if ((error = submit_job(&request, id, sizeof id)) != NULL) {
        answer_error(output, 500, url, error);
        return OrthancPluginErrorCode_Success;
    }
    LOG_INFO("%s: job %s", url, id);
    json_object *body = json_object_new_object();
    json_object_object_add(body, "ID", json_object_new_string(id));
    char *path = format_string("/jobs/%s", id);
    json_object_object_add(body, "Path", json_object_new_string(path));
    free(path);
    answer_json(output, 200, body);
    return OrthancPluginErrorCode_Success;
}

/* ---------------------------------------------------------------- auto-processing */

static pthread_mutex_t auto_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t auto_changed = PTHREAD_COND_INITIALIZER;
static pthread_t auto_thread;
static int auto_started, auto_stopping;
static char *auto_queue[AUTO_QUEUE_CAPACITY];
static size_t auto_head, auto_count;
/* What became of the instances that arrived, for GET /diffmine/status. */
static uint64_t auto_submitted, auto_not_matching, auto_own_outputs, auto_failed, auto_dropped;

static void count(uint64_t *counter) {
    pthread_mutex_lock(&auto_lock);
    (*counter)++;
    pthread_mutex_unlock(&auto_lock);
}

/* Does `value` match one of the glob patterns (no list: everything matches)? */
static int matches_any(json_object *patterns, const char *value) {
    if (patterns == NULL) return 1;
    for (size_t i = 0; i < json_object_array_length(patterns); i++)
        if (fnmatch(json_object_get_string(json_object_array_get_idx(patterns, i)), value, 0) == 0) return 1;
    return 0;
}

static void auto_process(const char *instance) {
    json_object *tags = instance_tags(instance);
    if (tags == NULL) {
        LOG_WARNING("auto-processing: instance %s is gone", instance);
        count(&auto_failed);
        return;
    }
    int own = is_own_output(tags);
    int match = !own && matches_any(settings.auto_modalities, json_string_at(tags, "Modality")) && matches_any(settings.auto_descriptions, json_string_at(tags, "SeriesDescription"));
    json_object_put(tags);
    if (own) {
        count(&auto_own_outputs);
        return;
    }
    if (!match) {
        count(&auto_not_matching);
        return;
    }
    struct request request = {.samples = settings.samples, .seed = settings.seed, .results = settings.results};
    char *error = strings_push(&request.instances, instance) ? format_string("out of memory") : NULL;
    for (size_t i = 0; error == NULL && i < json_object_array_length(settings.auto_labels); i++)
        error = add_label(&request, json_object_get_string(json_object_array_get_idx(settings.auto_labels, i)));
    char id[64];
    if (error == NULL) error = submit_job(&request, id, sizeof id);
    else request_free(&request);
    if (error != NULL) {
        LOG_ERROR("auto-processing instance %s: %s", instance, error);
        free(error);
        count(&auto_failed);
        return;
    }
    LOG_INFO("auto-processing instance %s: job %s", instance, id);
    count(&auto_submitted);
}

static void *auto_loop(void *user_data) {
    pthread_mutex_lock(&auto_lock);
    for (;;) {
        while (auto_count == 0 && !auto_stopping) pthread_cond_wait(&auto_changed, &auto_lock);
        if (auto_stopping) break;
        char *instance = auto_queue[auto_head];
        auto_head = (auto_head + 1) % AUTO_QUEUE_CAPACITY;
        auto_count--;
        pthread_mutex_unlock(&auto_lock);
        auto_process(instance);
        free(instance);
        pthread_mutex_lock(&auto_lock);
    }
    pthread_mutex_unlock(&auto_lock);
    return NULL;
}

/* Runs on Orthanc's change thread: only queues the instance. */
static OrthancPluginErrorCode on_change(OrthancPluginChangeType change, OrthancPluginResourceType level, const char *id) {
    if (change != OrthancPluginChangeType_NewInstance || !auto_started) return OrthancPluginErrorCode_Success;
    pthread_mutex_lock(&auto_lock);
    if (auto_count < AUTO_QUEUE_CAPACITY) {
        auto_queue[(auto_head + auto_count) % AUTO_QUEUE_CAPACITY] = copy_string(id);
        auto_count++;
        pthread_cond_signal(&auto_changed);
    } else {
        auto_dropped++;
    }
    pthread_mutex_unlock(&auto_lock);
    return OrthancPluginErrorCode_Success;
}

/* ---------------------------------------------------------------- GET /diffmine/status */

static OrthancPluginErrorCode on_status(OrthancPluginRestOutput *output, const char *url, const OrthancPluginHttpRequest *http) {
    if (http->method != OrthancPluginHttpMethod_Get) {
        OrthancPluginSendMethodNotAllowed(context, output, "GET");
        return OrthancPluginErrorCode_Success;
    }
    json_object *body = json_object_new_object();
    json_object_object_add(body, "Plugin", json_object_new_string(PLUGIN_VERSION));
    json_object_object_add(body, "Library", json_object_new_string(dm_version()));
    json_object_object_add(body, "Model", settings.model ? json_object_new_string(settings.model) : NULL);
    json_object_object_add(body, "ModelLoaded", json_object_new_boolean(model != NULL));
    json_object_object_add(body, "ModelError", model_error ? json_object_new_string(model_error) : NULL);
    json_object_object_add(body, "Device", settings.device ? json_object_new_string(settings.device) : NULL);
    json_object_object_add(body, "Dtype", settings.dtype ? json_object_new_string(settings.dtype) : NULL);
    json_object *running = json_object_new_array();
    pthread_mutex_lock(&jobs_lock);
    for (struct job *job = jobs; job != NULL; job = job->next) {
        pthread_mutex_lock(&job->lock);
        if (job->running && job->id[0] != '\0') json_object_array_add(running, json_object_new_string(job->id));
        pthread_mutex_unlock(&job->lock);
    }
    pthread_mutex_unlock(&jobs_lock);
    json_object_object_add(body, "JobsRunning", running);
    json_object *autos = json_object_new_object();
    pthread_mutex_lock(&auto_lock);
    json_object_object_add(autos, "Enabled", json_object_new_boolean(auto_started));
    json_object_object_add(autos, "Queued", json_object_new_uint64(auto_count));
    json_object_object_add(autos, "Submitted", json_object_new_uint64(auto_submitted));
    json_object_object_add(autos, "NotMatching", json_object_new_uint64(auto_not_matching));
    json_object_object_add(autos, "OwnOutputs", json_object_new_uint64(auto_own_outputs));
    json_object_object_add(autos, "Failed", json_object_new_uint64(auto_failed));
    json_object_object_add(autos, "Dropped", json_object_new_uint64(auto_dropped));
    pthread_mutex_unlock(&auto_lock);
    json_object_object_add(body, "AutoProcessing", autos);
    answer_json(output, 200, body);
    return OrthancPluginErrorCode_Success;
}

/* ---------------------------------------------------------------- plugin entry points */

ORTHANC_PLUGINS_API int32_t OrthancPluginInitialize(OrthancPluginContext *c) {
    context = c;
    if (OrthancPluginCheckVersion(context) == 0) {
        LOG_ERROR("this Orthanc (%s) is older than the SDK the plugin was built with (%d.%d.%d)", context->orthancVersion, ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER,
                  ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER, ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER);
        return -1;
    }
    OrthancPluginSetDescription(context, "Typicality maps of a finetuned diffusion model (libdiffmine), stored as new series of the source's study.");
    dm_log_set_callback(forward_library_log, DM_LOG_WARN, NULL);
    model_error = read_settings();
    if (model_error == NULL) {
        LOG_WARNING("loading the model %s (device %s, %s)", settings.model, settings.device, settings.dtype);
        load_model();
    }
    if (model_error != NULL) LOG_ERROR("%s; the plugin's routes answer this error", model_error);
    else LOG_WARNING("model %s loaded; libdiffmine %s", settings.model, dm_version());
    OrthancPluginRegisterRestCallbackNoLock(context, "/diffmine/(instances|series|studies)/([^/]+)/typicality", on_typicality);
    OrthancPluginRegisterRestCallbackNoLock(context, "/diffmine/status", on_status);
    OrthancPluginRegisterOnChangeCallback(context, on_change);
    if (model != NULL && settings.auto_enabled) auto_started = pthread_create(&auto_thread, NULL, auto_loop, NULL) == 0;
    return 0;
}

ORTHANC_PLUGINS_API void OrthancPluginFinalize(void) {
    if (auto_started) {
        pthread_mutex_lock(&auto_lock);
        auto_stopping = 1;
        pthread_cond_signal(&auto_changed);
        pthread_mutex_unlock(&auto_lock);
        pthread_join(auto_thread, NULL);
        auto_started = 0;
    }
    for (size_t i = 0; i < auto_count; i++) free(auto_queue[(auto_head + i) % AUTO_QUEUE_CAPACITY]);
    dm_log_set_callback(NULL, 0, NULL);
    dm_model_free(model);
    model = NULL;
    for (size_t i = 0; i < WRITTEN_UIDS_CAPACITY; i++) free(written_uids[i]);
    json_object_put(settings.root);
    free(model_error);
}

ORTHANC_PLUGINS_API const char *OrthancPluginGetName(void) { return PLUGIN_NAME; }

ORTHANC_PLUGINS_API const char *OrthancPluginGetVersion(void) { return PLUGIN_VERSION; }
