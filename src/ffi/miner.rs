//! `dm_miner`: mining typical visual elements through the C ABI. A miner collects labelled images
//! (files or caller buffers), mines them once, then hands out its results and writes the report.
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::null;
use std::sync::OnceLock;

use super::args::{at_least_one, checked_typicality, optional_str, read_options, required_str, write_array, write_text, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::image::dm_image_view;
use super::mining_handle::{self, MiningJob};
use super::model::dm_model;
use super::status::dm_status;
use super::typicality::{c_latent, dm_progress_fn, latent_mode};
use crate::dataset::{LabelledImage, LabelledSet, Pixels};
use crate::error::Result;
use crate::mining::cluster::{ClusterOptions, RankedCluster};
use crate::mining::dift::DiftOptions;
use crate::mining::miner::{mine, LabelResult, MiningOptions};
use crate::mining::report::{write_report, ReportOptions};
use crate::model::StableDiffusion;
use crate::typicality::{Progress, TypicalityOptions};

/// A mining job: its model, options, images and, once run, its results. Calls on one miner from
/// several threads are serialised (a call waits while another, such as `dm_miner_run`, holds it).
#[allow(non_camel_case_types)]
pub struct dm_miner {
    _opaque: [u8; 0],
}

/// How to mine. Fill with `dm_miner_options_default`, then set at least `prompt_template`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_miner_options {
    /// `sizeof(dm_miner_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// The label prompt with `{label}` (UTF-8), e.g. "A car from the {label}s.": the caption the model
    /// was finetuned with. `dm_miner_options_default` points it at the library's default, "Image of
    /// {label}." (the command line's); NULL is refused.
    pub prompt_template: *const c_char,
    /// The null prompt (UTF-8); NULL means "".
    pub null_prompt: *const c_char,
    /// Typicality: (noise, t) samples per image (100), samples per UNet call (10), and the seed (42).
    pub samples: u32,
    pub batch: u32,
    pub seed: u64,
    /// Resize each image so its shorter side has this many pixels first (Lanczos); 0 keeps its size.
    pub resize_short_side: u32,
    /// Side of the square patches (64), boxes kept per image (5) and per label (1000).
    pub patch_size: u32,
    pub per_image: u32,
    pub top: u32,
    /// DIFT ensemble members averaged (8).
    pub dift_ensemble: u32,
    /// k-means: clusters k (32; a label with fewer boxes gets one per box) and restarts (10).
    pub clusters: u32,
    pub restarts: u32,
    /// Folder caching typicality maps and DIFT features across runs (UTF-8); NULL caches nothing.
    pub cache_dir: *const c_char,
    // Second version of the struct: how the typicality samples are drawn, as in
    // `dm_typicality_options`.
    /// t range as fractions of the training steps (0.1, 0.7: t in [100, 699]).
    pub t_min: f64,
    pub t_max: f64,
    /// `DM_LATENT_SAMPLE` (default) or `DM_LATENT_MEAN`.
    pub latent: u32,
    /// Non-zero: samples in pairs (noise, t) and (−noise, t) (0: independent draws, the authors').
    pub antithetic: u32,
    /// Non-zero: each drawn t uniform within its own stratum of the t range (0: over the whole range).
    pub stratified: u32,
}

/// The size of the struct's first version, which ended at `cache_dir`: a caller built against it
/// gets the defaults of the later fields.
const MINER_OPTIONS_V1_SIZE: usize = std::mem::offset_of!(dm_miner_options, t_min);

/// Reads a caller's `dm_miner_options` of any version (NULL: the defaults).
///
/// # Safety
/// `ptr` NULL or a valid options struct.
pub(crate) unsafe fn read_miner_options(ptr: *const dm_miner_options) -> FfiResult<dm_miner_options> {
    // SAFETY: forwarded to the caller's contract.
    unsafe { read_options(ptr, dm_miner_options::default(), MINER_OPTIONS_V1_SIZE, "options") }
}

impl Default for dm_miner_options {
    fn default() -> Self {
        let d = MiningOptions::default();
        dm_miner_options {
            struct_size: std::mem::size_of::<dm_miner_options>(),
            prompt_template: default_prompt_template().as_ptr(),
            null_prompt: null(),
            samples: d.typicality.samples as u32,
            batch: d.typicality.batch as u32,
            seed: d.typicality.seed,
            resize_short_side: 0,
            patch_size: d.patch_size as u32,
            per_image: d.per_image as u32,
            top: d.top as u32,
            dift_ensemble: d.dift.ensemble as u32,
            clusters: d.cluster.clusters as u32,
            restarts: d.cluster.restarts as u32,
            cache_dir: null(),
            t_min: d.typicality.t_min,
            t_max: d.typicality.t_max,
            latent: c_latent(d.typicality.latent),
            antithetic: d.typicality.antithetic as u32,
            stratified: d.typicality.stratified as u32,
        }
    }
}

/// The library's default label prompt as a C string that lives as long as the process.
fn default_prompt_template() -> &'static CStr {
    static TEMPLATE: OnceLock<CString> = OnceLock::new();
    TEMPLATE.get_or_init(|| CString::new(MiningOptions::default().prompt_template).expect("the default prompt holds no NUL"))
}

/// A kept box of a label, in the label's result order (cluster rank, then rank in cluster).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dm_mined_patch {
    /// The image, by the order images were first added (see `dm_miner_image_name`).
    pub image: u32,
    /// Columns `x .. x+size`, rows `y .. y+size` of the image as mined (after any resize).
    pub x: u32,
    pub y: u32,
    pub size: u32,
    /// Mean typicality of the box.
    pub typicality: f32,
    /// Rank of its cluster (0: highest median typicality) and its rank inside it (0: closest to the
    /// centroid), and its distance to the centroid.
    pub cluster: u32,
    pub rank_in_cluster: u32,
    pub distance: f32,
}

/// A cluster of a label, in rank order. Its members are the patches `first .. first+members` of the
/// label's patch array. `dm_parallel_miner_clusters` hands out its clusters in the same struct: there
/// the members are elements and `median_typicality` is their median co-typicality.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dm_mined_cluster {
    pub first: u32,
    pub members: u32,
    pub median_typicality: f32,
}

/// The results of a run, with the C views of each label computed once.
struct Mined {
    labels: Vec<LabelResult>,
    patches: Vec<Vec<dm_mined_patch>>,
    clusters: Vec<Vec<dm_mined_cluster>>,
}

/// A `dm_miner`'s job: its options and labelled images.
struct MinerJob {
    options: MiningOptions,
    set: LabelledSet,
    /// Position in `set.items` of each image by its path or name.
    index: HashMap<PathBuf, usize>,
}

impl MiningJob for MinerJob {
    type Results = Mined;
    type Label = String;
    const C_NAME: &'static str = "dm_miner";
    const NOUN: &'static str = "miner";

    unsafe fn label(&self, label: *const c_char) -> FfiResult<String> {
        // SAFETY: forwarded to the caller's contract.
        unsafe { label_arg(label) }
    }

    /// Adds one image with one label. An image already added (same path or name, same pixels) gets
    /// the label as another of its labels.
    fn add(&mut self, path: PathBuf, pixels: Option<Pixels>, label: String) -> FfiResult<()> {
        match self.index.get(&path) {
            None => {
                self.index.insert(path.clone(), self.set.items.len());
                self.set.items.push(LabelledImage { path, labels: vec![label], pixels });
            }
            Some(&i) if self.set.items[i].pixels == pixels => {
                let labels = &mut self.set.items[i].labels;
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
            Some(_) => {
                return Err(FfiError::Invalid(format!("an image named `{}` was already added with other pixels or as a file", path.display())));
            }
        }
        Ok(())
    }

    fn image_count(&self) -> usize {
        self.set.items.len()
    }

    fn image_name(&self, index: usize) -> Option<String> {
        self.set.items.get(index).map(|item| item.path.to_string_lossy().into_owned())
    }

    fn run(&self, model: &StableDiffusion, progress: Progress) -> Result<Mined> {
        Ok(Mined::new(mine(model, &self.set, &self.options, progress)?, &self.index))
    }
}

impl Mined {
    fn new(labels: Vec<LabelResult>, index: &HashMap<PathBuf, usize>) -> Self {
        let patches = labels
            .iter()
            .map(|r| {
                r.patches
                    .iter()
                    .map(|p| dm_mined_patch {
                        image: index[&p.path] as u32,
                        x: p.patch.x as u32,
                        y: p.patch.y as u32,
                        size: p.patch.size as u32,
                        typicality: p.patch.score,
                        cluster: p.cluster_rank as u32,
                        rank_in_cluster: p.rank_in_cluster as u32,
                        distance: p.distance,
                    })
                    .collect()
            })
            .collect();
        let clusters = labels.iter().map(|r| c_clusters(&r.clusters)).collect();
        Mined { labels, patches, clusters }
    }

    /// Index `label` checked against the number of labels.
    fn label(&self, label: u32) -> FfiResult<usize> {
        let n = self.labels.len();
        let i = label as usize;
        if i >= n {
            return Err(FfiError::Invalid(format!("label index {label} is out of range (the results have {n} labels)")));
        }
        Ok(i)
    }
}

/// Ranked clusters as C structs. The results list each cluster's members together, in rank order, so
/// each cluster's members follow the previous one's.
pub(crate) fn c_clusters(clusters: &[RankedCluster]) -> Vec<dm_mined_cluster> {
    let mut first = 0;
    clusters
        .iter()
        .map(|c| {
            let cluster = dm_mined_cluster { first, members: c.members.len() as u32, median_typicality: c.median_typicality };
            first += cluster.members;
            cluster
        })
        .collect()
}

/// Fills `options` with the authors' defaults (the library's default label prompt, no null prompt,
/// no cache).
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_miner_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_options_default(options: *mut dm_miner_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_miner_options::default(), options, "options") })
}

/// Reads the C options into the safe API's options.
///
/// # Safety
/// Every non-NULL string in `o` must be NUL-terminated.
pub(crate) unsafe fn mining_options(o: &dm_miner_options) -> FfiResult<MiningOptions> {
    let d = MiningOptions::default();
    // SAFETY: the caller guarantees every non-NULL string is NUL-terminated.
    let (template, null_prompt, cache_dir) = unsafe {
        (
            required_str(o.prompt_template, "options.prompt_template")?,
            optional_str(o.null_prompt, "options.null_prompt")?,
            optional_str(o.cache_dir, "options.cache_dir")?,
        )
    };
    Ok(MiningOptions {
        prompt_template: template.to_string(),
        null_prompt: null_prompt.unwrap_or_default().to_string(),
        typicality: checked_typicality(TypicalityOptions {
            samples: at_least_one(o.samples, "samples")?,
            batch: at_least_one(o.batch, "batch")?,
            seed: o.seed,
            t_min: o.t_min,
            t_max: o.t_max,
            latent: latent_mode(o.latent)?,
            antithetic: o.antithetic != 0,
            stratified: o.stratified != 0,
            ..d.typicality
        })?,
        resize: (o.resize_short_side > 0).then_some(o.resize_short_side as usize),
        patch_size: at_least_one(o.patch_size, "patch_size")?,
        per_image: at_least_one(o.per_image, "per_image")?,
        top: at_least_one(o.top, "top")?,
        dift: DiftOptions { ensemble: at_least_one(o.dift_ensemble, "dift_ensemble")?, ..d.dift },
        cluster: ClusterOptions { clusters: at_least_one(o.clusters, "clusters")?, restarts: at_least_one(o.restarts, "restarts")?, ..d.cluster },
        cache_dir: cache_dir.map(PathBuf::from),
    })
}

/// Creates a miner for `model` (which it keeps alive; the caller may free its own handle) with
/// `options` (not NULL: `prompt_template` is required). On success `*out_miner` owns a new miner,
/// released with `dm_miner_free`.
///
/// # Safety
/// `options` NULL or a valid options struct whose strings are NUL-terminated; `out_miner` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_create(model: *const dm_model, options: *const dm_miner_options, out_miner: *mut *mut dm_miner) -> dm_status {
    guard(|| {
        let make = |_: &StableDiffusion, o: dm_miner_options| {
            // SAFETY: the caller's contract covers the strings of `options`.
            Ok(MinerJob { options: unsafe { mining_options(&o) }?, set: LabelledSet::default(), index: HashMap::new() })
        };
        // SAFETY: the caller's contract covers `options` and `out_miner`.
        unsafe { mining_handle::create(model, options, dm_miner_options::default(), MINER_OPTIONS_V1_SIZE, out_miner, make) }
    })
}

/// The results of `miner`'s successful run.
fn with_mined<T>(miner: *const dm_miner, read: impl FnOnce(&Mined) -> FfiResult<T>) -> FfiResult<T> {
    mining_handle::with_results::<MinerJob, _, _>(miner, |_, mined| read(mined))
}

/// A label argument: required, not blank.
///
/// # Safety
/// `label` NULL or NUL-terminated.
pub(crate) unsafe fn label_arg(label: *const c_char) -> FfiResult<String> {
    // SAFETY: forwarded to the caller's contract.
    let label = unsafe { required_str(label, "label") }?.trim();
    if label.is_empty() {
        return Err(FfiError::Invalid("`label` is empty".into()));
    }
    Ok(label.to_string())
}

/// Adds the image file at `path` (UTF-8; PNG, JPEG, BMP or DICOM, recognised by content and read as
/// `dm_image_open` reads it with the default options) under `label` (UTF-8). Adding the same
/// path again with another label gives the image both labels. The file must exist now; it is read
/// during `dm_miner_run`.
///
/// # Safety
/// `path` and `label` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_add_file(miner: *mut dm_miner, path: *const c_char, label: *const c_char) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::add_file::<MinerJob, _>(miner, path, label) })
}

/// Adds an image held in memory under `label`; its pixels are copied, so the buffer may be reused at
/// once. `name` (UTF-8) stands for the image in results and the report; NULL names it `image-<i>`,
/// `i` its index. Adding the same name with the same pixels again gives the image another label;
/// the same name with other pixels is an error.
///
/// # Safety
/// `image` NULL or a valid view whose buffer holds `data_len` bytes; `name` and `label` NULL or
/// NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_add_image(miner: *mut dm_miner, image: *const dm_image_view, name: *const c_char, label: *const c_char) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::add_image::<MinerJob, _>(miner, image, name, label) })
}

/// Mines every label of the images added. `progress` (may be NULL) is called after each image's
/// typicality and each image's DIFT with (units done, units in all, NaN); returning non-zero cancels
/// with `DM_ERR_CANCELLED`. A failed or cancelled run may be run again (with a cache folder it
/// resumes); after a successful run the results stay and a second run is an error.
///
/// # Safety
/// `progress` safe to call with `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_run(miner: *mut dm_miner, progress: dm_progress_fn, user_data: *mut c_void) -> dm_status {
    guard(|| mining_handle::run::<MinerJob, _>(miner, progress, user_data))
}

/// The number of images added (each counted once, whatever its labels).
///
/// # Safety
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_image_count(miner: *const dm_miner, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::write_image_count::<MinerJob, _>(miner, out_count) })
}

/// The path or name of image `image` (by the order images were first added), as `dm_mined_patch.image`
/// refers to it. Writes it NUL-terminated into `out` (room for `out_len` bytes) and its size with the
/// NUL into `*out_needed`; pass `out` NULL to ask the size only.
///
/// # Safety
/// `out` NULL or `out_len` writable bytes; `out_needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_image_name(miner: *const dm_miner, image: u32, out: *mut c_char, out_len: usize, out_needed: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { mining_handle::write_image_name::<MinerJob, _>(miner, image, out, out_len, out_needed) })
}

/// The number of labels in the results (the distinct labels of the images, sorted; label indices of
/// the other accessors are in this order). Fails before a successful `dm_miner_run`.
///
/// # Safety
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_label_count(miner: *const dm_miner, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_value(mined.labels.len(), out_count, "out_count") }))
}

/// The name of label `label`, as `dm_miner_image_name` writes a name.
///
/// # Safety
/// `out` NULL or `out_len` writable bytes; `out_needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_label_name(miner: *const dm_miner, label: u32, out: *mut c_char, out_len: usize, out_needed: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_text(&mined.labels[mined.label(label)?].label, out, out_len, out_needed) }))
}

/// The number of kept boxes of label `label`.
///
/// # Safety
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_patch_count(miner: *const dm_miner, label: u32, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_value(mined.patches[mined.label(label)?].len(), out_count, "out_count") }))
}

/// The kept boxes of label `label` in cluster rank order, then rank in cluster, into `out` (room for
/// `out_len`; `dm_miner_patch_count` gives the number), their count into `*out_count`.
///
/// # Safety
/// `out` NULL or `out_len` writable elements; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_patches(miner: *const dm_miner, label: u32, out: *mut dm_mined_patch, out_len: usize, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_array(&mined.patches[mined.label(label)?], out, out_len, out_count, "out") }))
}

/// The number of clusters of label `label`.
///
/// # Safety
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_cluster_count(miner: *const dm_miner, label: u32, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_value(mined.clusters[mined.label(label)?].len(), out_count, "out_count") }))
}

/// The clusters of label `label` in rank order (highest median typicality first) into `out` (room
/// for `out_len`; `dm_miner_cluster_count` gives the number), their count into `*out_count`.
///
/// # Safety
/// `out` NULL or `out_len` writable elements; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_clusters(miner: *const dm_miner, label: u32, out: *mut dm_mined_cluster, out_len: usize, out_count: *mut usize) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| with_mined(miner, |mined| unsafe { write_array(&mined.clusters[mined.label(label)?], out, out_len, out_count, "out") }))
}

/// Writes the report of the results into the folder `out_dir` (UTF-8; created if missing):
/// `patches.csv`, per label a cluster grid and strips of patch crops, and `index.html`.
///
/// # Safety
/// `out_dir` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dm_miner_write_report(miner: *const dm_miner, out_dir: *const c_char) -> dm_status {
    guard(|| {
        // SAFETY: forwarded to the caller's contract.
        let out_dir = unsafe { required_str(out_dir, "out_dir") }?;
        mining_handle::with_results::<MinerJob, _, _>(miner, |job, mined| {
            let options = ReportOptions { resize: job.options.resize, ..ReportOptions::default() };
            write_report(&mined.labels, &options, Path::new(out_dir))?;
            Ok(())
        })
    })
}

/// Releases a miner. NULL is accepted; a handle that is not a live miner gives
/// `DM_ERR_INVALID_HANDLE`. A call still running on another thread finishes first.
#[no_mangle]
pub extern "C" fn dm_miner_free(miner: *mut dm_miner) -> dm_status {
    guard(|| mining_handle::release::<MinerJob, _>(miner))
}
