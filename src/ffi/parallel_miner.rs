//! `dm_parallel_miner`: mining co-typical elements (the paper's Section 5.1) through the C ABI. A
//! parallel miner is created with its labels, collects source images each with one of them (files or
//! caller buffers), and on `dm_parallel_miner_run` translates each source to every other label and
//! mines the parallel sets as `diffmine parallel-mine` does; then it hands out its results and writes
//! the report. The translations are saved as the run makes them (memory stays bounded however many
//! sources there are) into a versions folder the report's strips are cut from.
use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::ptr::null;

use super::args::{at_least_one, checked_typicality, optional_str, read_options, required_str, write_array, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::image::dm_image_view;
use super::miner::{c_clusters, dm_mined_cluster, label_arg};
use super::mining_handle::{self, MiningJob};
use super::model::dm_model;
use super::status::dm_status;
use super::translate::{dm_translate_options, prompt_list, translate_options};
use super::typicality::dm_progress_fn;
use crate::dataset::Pixels;
use crate::error::{Error, Result};
use crate::mining::cluster::ClusterOptions;
use crate::mining::cotypicality::report::{write_parallel_report, ParallelReportOptions, ReportSource, VersionStore};
use crate::mining::cotypicality::{mine_parallel_sets, CotypicalMiner, CotypicalResult, ParallelMiningOptions, ParallelSource, Projection};
use crate::mining::dift::DiftOptions;
use crate::model::StableDiffusion;
use crate::typicality::{Progress, TypicalityOptions};

/// A co-typicality mining job: its model, labels, options, source images and, once run, its results.
/// Calls on one parallel miner from several threads are serialised (a call waits while another, such
/// as `dm_parallel_miner_run`, holds it).
#[allow(non_camel_case_types)]
pub struct dm_parallel_miner {
    _opaque: [u8; 0],
}

/// `dm_parallel_miner_options.projection`: UMAP, as the authors (the default).
pub const DM_PROJECTION_UMAP: u32 = 0;
/// `dm_parallel_miner_options.projection`: principal component analysis.
pub const DM_PROJECTION_PCA: u32 = 1;

/// How to mine co-typical elements. Fill with `dm_parallel_miner_options_default`, then set at least
/// `prompt_template`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_parallel_miner_options {
    /// `sizeof(dm_parallel_miner_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// The label prompt with `{label}` (UTF-8); required, as it must be the caption the model was
    /// finetuned with. The translations' prompts use it too.
    pub prompt_template: *const c_char,
    /// The null prompt of typicality (UTF-8); NULL means "".
    pub null_prompt: *const c_char,
    /// How each source is translated to the other labels; NULL means `dm_translate_options_default`'s
    /// settings. Where its `null_prompt` is NULL (or it is NULL) the translations use `null_prompt`
    /// above, as the CLI's `--null-prompt` sets both.
    pub translate: *const dm_translate_options,
    /// Typicality: (noise, t) samples per version (100), samples per UNet call (10), and the seed (42).
    pub samples: u32,
    pub batch: u32,
    pub seed: u64,
    /// Resize each source so its shorter side has this many pixels first (Lanczos); 0 keeps its size.
    pub resize_short_side: u32,
    /// Side of the square patches (64), boxes kept per parallel set (5) and overall (10 000).
    pub patch_size: u32,
    pub per_set: u32,
    pub top: u32,
    /// DIFT ensemble members averaged (8).
    pub dift_ensemble: u32,
    /// k-means: clusters k (32; fewer boxes get one cluster each) and restarts (10).
    pub clusters: u32,
    pub restarts: u32,
    /// Dimensions each version's DIFT feature is projected to before the versions are concatenated (32).
    pub projection_dims: u32,
    /// `DM_PROJECTION_UMAP` (default; seeded with `seed`) or `DM_PROJECTION_PCA`, fitted once on the
    /// features of all versions together.
    pub projection: u32,
    /// UMAP's neighbours (15, the authors'); unused by PCA.
    pub projection_neighbors: u32,
    /// Folder (UTF-8; created if missing) where `dm_parallel_miner_run` saves every version of every
    /// parallel set as `<set>_<label>.png` (set: 5 digits, the source's index; label: its index), which
    /// `dm_parallel_miner_write_report` cuts its strips from. The caller owns the folder and its files:
    /// the library never deletes them. NULL (the default) uses a private folder in the system's
    /// temporary folder (TMPDIR, else /tmp), made by `dm_parallel_miner_create` and removed with its
    /// contents by `dm_parallel_miner_free`. Either way it holds sources × labels PNGs of the mined
    /// size.
    pub versions_dir: *const c_char,
}

impl Default for dm_parallel_miner_options {
    fn default() -> Self {
        let d = ParallelMiningOptions::default();
        dm_parallel_miner_options {
            struct_size: std::mem::size_of::<dm_parallel_miner_options>(),
            prompt_template: null(),
            null_prompt: null(),
            translate: null(),
            samples: d.typicality.samples as u32,
            batch: d.typicality.batch as u32,
            seed: d.typicality.seed,
            resize_short_side: 0,
            patch_size: d.patch_size as u32,
            per_set: d.per_set as u32,
            top: d.top as u32,
            dift_ensemble: d.dift.ensemble as u32,
            clusters: d.cluster.clusters as u32,
            restarts: d.cluster.restarts as u32,
            projection_dims: d.projection_dims as u32,
            projection: DM_PROJECTION_UMAP,
            projection_neighbors: match d.projection {
                Projection::Umap { neighbors, .. } => neighbors as u32,
                Projection::Pca => 15,
            },
            versions_dir: null(),
        }
    }
}

/// A kept box, in result order (cluster rank, then rank in cluster). The box is the same in every
/// version of its parallel set.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dm_cotypical_element {
    /// The source image, by the order sources were added (see `dm_parallel_miner_image_name`), which is
    /// also its parallel set's index.
    pub image: u32,
    /// The source's label, as an index into the labels the miner was created with.
    pub source_label: u32,
    /// Columns `x .. x+size`, rows `y .. y+size` of the image as mined (after any resize).
    pub x: u32,
    pub y: u32,
    pub size: u32,
    /// Co-typicality: the median over the versions of the box's mean typicality for their own label.
    pub cotypicality: f32,
    /// Rank of its cluster (0: highest median co-typicality), its rank inside it (0: closest to the
    /// centroid) and its distance to the centroid.
    pub cluster: u32,
    pub rank_in_cluster: u32,
    pub distance: f32,
}

/// How `dm_parallel_miner_write_report` draws the report. Fill with
/// `dm_parallel_report_options_default`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_parallel_report_options {
    /// `sizeof(dm_parallel_report_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// Strip figures written, one per cluster from the best (32); 0 writes only the CSV and the page.
    pub strips: u32,
    /// Rows of a strip: the cluster's members closest to its centroid (8; at least 1).
    pub per_strip: u32,
}

impl Default for dm_parallel_report_options {
    fn default() -> Self {
        let d = ParallelReportOptions::default();
        dm_parallel_report_options { struct_size: std::mem::size_of::<dm_parallel_report_options>(), strips: d.strips as u32, per_strip: d.per_strip as u32 }
    }
}

/// The versions folder of a miner: the caller's, or a temporary one removed when the miner is dropped.
struct Versions {
    store: VersionStore,
    _temporary: Option<tempfile::TempDir>,
}

impl Versions {
    fn new(dir: Option<&str>) -> FfiResult<Self> {
        match dir {
            Some(dir) => Ok(Versions { store: VersionStore::create(dir)?, _temporary: None }),
            None => {
                let temporary = tempfile::Builder::new().prefix("diffmine-versions-").tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
                Ok(Versions { store: VersionStore::create(temporary.path())?, _temporary: Some(temporary) })
            }
        }
    }
}

/// The results of a run: the safe API's, kept for the report, and as C structs.
struct Mined {
    result: CotypicalResult,
    elements: Vec<dm_cotypical_element>,
    clusters: Vec<dm_mined_cluster>,
}

impl Mined {
    fn new(result: CotypicalResult, sources: &[ParallelSource]) -> Self {
        let elements = result
            .elements
            .iter()
            .map(|e| dm_cotypical_element {
                image: e.set as u32,
                source_label: sources[e.set].label as u32,
                x: e.patch.x as u32,
                y: e.patch.y as u32,
                size: e.patch.size as u32,
                cotypicality: e.patch.score,
                cluster: e.cluster_rank as u32,
                rank_in_cluster: e.rank_in_cluster as u32,
                distance: e.distance,
            })
            .collect();
        let clusters = c_clusters(&result.clusters);
        Mined { result, elements, clusters }
    }
}

/// A `dm_parallel_miner`'s job: its labels, options (which may hold tensors, explicit noise, so they
/// live behind the handle's lock: tensors cannot be shared between threads), sources and versions
/// folder.
struct ParallelJob {
    labels: Vec<String>,
    options: ParallelMiningOptions,
    sources: Vec<ParallelSource>,
    versions: Versions,
}

impl MiningJob for ParallelJob {
    type Results = Mined;
    type Label = usize;
    const C_NAME: &'static str = "dm_parallel_miner";
    const NOUN: &'static str = "parallel miner";

    /// The index of a label argument among the miner's labels.
    unsafe fn label(&self, label: *const c_char) -> FfiResult<usize> {
        // SAFETY: forwarded to the caller's contract.
        let label = unsafe { label_arg(label) }?;
        self.labels
            .iter()
            .position(|l| *l == label)
            .ok_or_else(|| FfiError::Invalid(format!("label `{label}` is not one of the miner's labels ({})", self.labels.join(", "))))
    }

    fn add(&mut self, path: PathBuf, pixels: Option<Pixels>, label: usize) -> FfiResult<()> {
        self.sources.push(ParallelSource { path, pixels, label });
        Ok(())
    }

    fn image_count(&self) -> usize {
        self.sources.len()
    }

    fn image_name(&self, index: usize) -> Option<String> {
        self.sources.get(index).map(|s| s.path.to_string_lossy().into_owned())
    }

    fn run(&self, model: &StableDiffusion, progress: Progress) -> Result<Mined> {
        let result = mine_parallel_sets(model, &self.labels, &self.sources, &self.options, &self.versions.store, progress)?;
        Ok(Mined::new(result, &self.sources))
    }
}

/// The results of `miner`'s successful run.
fn with_mined<T>(miner: *const dm_parallel_miner, read: impl FnOnce(&Mined) -> FfiResult<T>) -> FfiResult<T> {
    mining_handle::with_results::<ParallelJob, _, _>(miner, |_, mined| read(mined))
}

/// Fills `options` with the authors' defaults (no prompts, the default translation).
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_parallel_miner_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_options_default(options: *mut dm_parallel_miner_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_parallel_miner_options::default(), options, "options") })
}

/// Reads the C options into the safe API's options.
///
/// # Safety
/// Every non-NULL string in `o` NUL-terminated; `o.translate` NULL or a valid options struct.
unsafe fn parallel_options(o: &dm_parallel_miner_options) -> FfiResult<ParallelMiningOptions> {
    let d = ParallelMiningOptions::default();
    let translate_size = std::mem::size_of::<dm_translate_options>();
    // SAFETY: the caller's contract covers each pointer.
    let (template, null_prompt, mut translate) = unsafe {
        (
            required_str(o.prompt_template, "options.prompt_template")?,
            optional_str(o.null_prompt, "options.null_prompt")?,
            read_options(o.translate, dm_translate_options::default(), translate_size, "options.translate")?,
        )
    };
    if translate.null_prompt.is_null() {
        translate.null_prompt = o.null_prompt;
    }
    Ok(ParallelMiningOptions {
        prompt_template: template.to_string(),
        null_prompt: null_prompt.unwrap_or_default().to_string(),
        // SAFETY: its null prompt is the caller's, or `o.null_prompt`, both NULL or NUL-terminated.
        translate: unsafe { translate_options(&translate) }?,
        typicality: checked_typicality(TypicalityOptions {
            samples: at_least_one(o.samples, "samples")?,
            batch: at_least_one(o.batch, "batch")?,
            seed: o.seed,
            ..d.typicality
        })?,
        dift: DiftOptions { ensemble: at_least_one(o.dift_ensemble, "dift_ensemble")?, ..d.dift },
        cluster: ClusterOptions { clusters: at_least_one(o.clusters, "clusters")?, restarts: at_least_one(o.restarts, "restarts")?, ..d.cluster },
        patch_size: at_least_one(o.patch_size, "patch_size")?,
        per_set: at_least_one(o.per_set, "per_set")?,
        top: at_least_one(o.top, "top")?,
        projection_dims: at_least_one(o.projection_dims, "projection_dims")?,
        projection: projection(o)?,
        resize: (o.resize_short_side > 0).then_some(o.resize_short_side as usize),
    })
}

fn projection(o: &dm_parallel_miner_options) -> FfiResult<Projection> {
    match o.projection {
        DM_PROJECTION_UMAP => Ok(Projection::Umap { neighbors: at_least_one(o.projection_neighbors, "projection_neighbors")?, seed: o.seed }),
        DM_PROJECTION_PCA => Ok(Projection::Pca),
        other => Err(FfiError::Invalid(format!("`options.projection` = {other} is not a DM_PROJECTION_* value"))),
    }
}

/// The labels argument: each one non-blank and different from the others. The safe API checks that
/// there are at least 2.
///
/// # Safety
/// `labels` NULL or `labels_len` readable pointers, each NULL or NUL-terminated.
unsafe fn label_list(labels: *const *const c_char, labels_len: usize) -> FfiResult<Vec<String>> {
    // SAFETY: forwarded to the caller's contract.
    let labels: Vec<String> = unsafe { prompt_list(labels, labels_len, "labels") }?.iter().map(|l| l.trim().to_string()).collect();
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() {
            return Err(FfiError::Invalid(format!("`labels[{i}]` is empty")));
        }
        if let Some(first) = labels[..i].iter().position(|l| l == label) {
            return Err(FfiError::Invalid(format!("`labels[{i}]` = `{label}` repeats `labels[{first}]`")));
        }
    }
    Ok(labels)
}

/// Creates a parallel miner for `model` (which it keeps alive; the caller may free its own handle)
/// over the `labels_len` labels in `labels` (UTF-8, at least 2, distinct; a parallel set holds one
/// version per label, in this order) with `options` (not NULL: `prompt_template` is required). The
/// settings are checked against the model now, and the versions folder is made (see
/// `options.versions_dir`). On success `*out_miner` owns a new parallel miner, released with
/// `dm_parallel_miner_free`.
///
/// # Safety
/// `labels` NULL or `labels_len` readable pointers to NUL-terminated strings; `options` NULL or a
/// valid options struct whose strings are NUL-terminated; `out_miner` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_create(
    model: *const dm_model,
    labels: *const *const c_char,
    labels_len: usize,
    options: *const dm_parallel_miner_options,
    out_miner: *mut *mut dm_parallel_miner,
) -> dm_status {
    guard(|| {
        let make = |model: &StableDiffusion, o: dm_parallel_miner_options| {
            // SAFETY: the caller's contract covers `labels` and the strings of `options`.
            let (labels, options) = unsafe { (label_list(labels, labels_len)?, parallel_options(&o)?) };
            // Refused now rather than after the first translation: the labels, the counts and the
            // translation's steps.
            CotypicalMiner::new(model, labels.clone(), &options)?;
            options.translate.check(model)?;
            // SAFETY: as above.
            let versions = Versions::new(unsafe { optional_str(o.versions_dir, "options.versions_dir") }?)?;
            Ok(ParallelJob { labels, options, sources: Vec::new(), versions })
        };
        // SAFETY: the caller's contract covers `options` and `out_miner`.
        unsafe {
            mining_handle::create(model, options, dm_parallel_miner_options::default(), std::mem::size_of::<dm_parallel_miner_options>(), out_miner, make)
        }
    })
}

/// Adds the image file at `path` (UTF-8; PNG, JPEG, BMP or DICOM, told apart by content) as a source
/// of label `label` (UTF-8, one of the miner's labels). The file must exist now; it is read during `dm_parallel_miner_run`.
///
/// # Safety
/// `path` and `label` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_add_file(miner: *mut dm_parallel_miner, path: *const c_char, label: *const c_char) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::add_file::<ParallelJob, _>(miner, path, label) })
}

/// Adds an image held in memory as a source of label `label` (UTF-8, one of the miner's labels); its
/// pixels are copied, so the buffer may be reused at once. `name` (UTF-8) stands for the image in the
/// results; NULL names it `image-<i>`, `i` its index.
///
/// # Safety
/// `image` NULL or a valid view whose buffer holds `data_len` bytes; `name` and `label` NULL or
/// NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_add_image(
    miner: *mut dm_parallel_miner,
    image: *const dm_image_view,
    name: *const c_char,
    label: *const c_char,
) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::add_image::<ParallelJob, _>(miner, image, name, label) })
}

/// Translates each source to every other label, scores and describes every version, keeps the best
/// boxes by co-typicality and clusters them. `progress` (may be NULL) is called after each UNet call
/// of a translation and after each version's typicality and DIFT, with (units done, sources ×
/// (inversion steps + sampling steps + 2 × labels), NaN); returning non-zero cancels with
/// `DM_ERR_CANCELLED`. A failed or cancelled run may be run again; after a successful run the results
/// stay and a second run is an error.
///
/// # Safety
/// `progress` safe to call with `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_run(miner: *mut dm_parallel_miner, progress: dm_progress_fn, user_data: *mut c_void) -> dm_status {
    guard(|| mining_handle::run::<ParallelJob, _>(miner, progress, user_data))
}

/// The number of source images added.
///
/// # Safety
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_image_count(miner: *const dm_parallel_miner, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::write_image_count::<ParallelJob, _>(miner, out_count) })
}

/// The path or name of source image `image` (by the order sources were added), as
/// `dm_cotypical_element.image` refers to it. Writes it NUL-terminated into `out` (room for `out_len`
/// bytes) and its size with the NUL into `*out_needed`; pass `out` NULL to ask the size only.
///
/// # Safety
/// `out` NULL or `out_len` writable bytes; `out_needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_image_name(
    miner: *const dm_parallel_miner,
    image: u32,
    out: *mut c_char,
    out_len: usize,
    out_needed: *mut usize,
) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::write_image_name::<ParallelJob, _>(miner, image, out, out_len, out_needed) })
}

/// The number of kept elements. Fails before a successful `dm_parallel_miner_run`.
///
/// # Safety
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_element_count(miner: *const dm_parallel_miner, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_value(mined.elements.len(), out_count, "out_count") }))
}

/// The kept elements in cluster rank order, then rank in cluster, into `out` (room for `out_len`;
/// `dm_parallel_miner_element_count` gives the number), their count into `*out_count`.
///
/// # Safety
/// `out` NULL or `out_len` writable elements; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_elements(
    miner: *const dm_parallel_miner,
    out: *mut dm_cotypical_element,
    out_len: usize,
    out_count: *mut usize,
) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_array(&mined.elements, out, out_len, out_count, "out") }))
}

/// The number of clusters. Fails before a successful `dm_parallel_miner_run`.
///
/// # Safety
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_cluster_count(miner: *const dm_parallel_miner, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_value(mined.clusters.len(), out_count, "out_count") }))
}

/// The clusters in rank order (highest median co-typicality first; `median_typicality` holds that
/// median) into `out` (room for `out_len`; `dm_parallel_miner_cluster_count` gives the number), their
/// count into `*out_count`. A cluster's members are the elements `first .. first+members`.
///
/// # Safety
/// `out` NULL or `out_len` writable elements; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_clusters(
    miner: *const dm_parallel_miner,
    out: *mut dm_mined_cluster,
    out_len: usize,
    out_count: *mut usize,
) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_array(&mined.clusters, out, out_len, out_count, "out") }))
}

/// Fills `options` with the defaults (32 strips of 8 rows).
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_parallel_report_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_report_options_default(options: *mut dm_parallel_report_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_parallel_report_options::default(), options, "options") })
}

fn report_options(o: &dm_parallel_report_options) -> FfiResult<ParallelReportOptions> {
    Ok(ParallelReportOptions { strips: o.strips as usize, per_strip: at_least_one(o.per_strip, "per_strip")? })
}

/// Writes the report of the results into the folder `out_dir` (UTF-8; created if missing; files of
/// the same names are overwritten): `elements.csv` (every element: set, image, source label, box,
/// co-typicality, cluster rank, rank in cluster, distance), `strip_NN.png` per shown cluster (NN its
/// rank; a row per member, each row the element's box in every version side by side in label order,
/// the source's own framed in red; cells of the largest box + 2 pixels) and `index.html`. The strips
/// are cut from the versions folder the run saved. `options` NULL means
/// `dm_parallel_report_options_default`'s. Fails before a successful `dm_parallel_miner_run`.
///
/// # Safety
/// `out_dir` NULL or NUL-terminated; `options` NULL or a valid options struct.
#[no_mangle]
pub unsafe extern "C" fn dm_parallel_miner_write_report(
    miner: *const dm_parallel_miner,
    out_dir: *const c_char,
    options: *const dm_parallel_report_options,
) -> dm_status {
    guard(|| {
        let min_size = std::mem::size_of::<dm_parallel_report_options>();
        // SAFETY: forwarded to the caller's contract.
        let (out_dir, options) =
            unsafe { (required_str(out_dir, "out_dir")?, read_options(options, dm_parallel_report_options::default(), min_size, "options")?) };
        let options = report_options(&options)?;
        mining_handle::with_results::<ParallelJob, _, _>(miner, |job, mined| {
            let sources: Vec<ReportSource> = job.sources.iter().map(ParallelSource::report_source).collect();
            write_parallel_report(&mined.result, &sources, &job.labels, &job.versions.store, &options, Path::new(out_dir))?;
            Ok(())
        })
    })
}

/// Releases a parallel miner and, unless `options.versions_dir` named one, its temporary versions
/// folder. NULL is accepted; a handle that is not a live parallel miner gives
/// `DM_ERR_INVALID_HANDLE`. A call still running on another thread finishes first.
#[no_mangle]
pub extern "C" fn dm_parallel_miner_free(miner: *mut dm_parallel_miner) -> dm_status {
    guard(|| mining_handle::release::<ParallelJob, _>(miner))
}
