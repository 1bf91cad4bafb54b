//! The stages of mining one by one, for callers that spread them over machines: the images of a
//! labelled set (`dm_mining_list_set`), each image's best boxes (`dm_mining_image`), the best boxes
//! of a label from any blocks of them (`dm_mining_top`), the DIFT features of given boxes
//! (`dm_mining_box_features`), the clusters of given features
//! (`dm_mining_cluster`) and the report of given results (`dm_report`). They are the functions
//! `dm_miner_run` and `diffmine mine` compose, so composing them gives the same result, bit for bit,
//! whatever the order images come in: every generator is seeded per image from the options alone,
//! and boxes are ordered by typicality, then image name, then row, then column.
use std::collections::BTreeMap;
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::Array2;

use super::args::{at_least_one, input_slice, optional_str, required_str, write_array, write_output, write_sized, write_text, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::handle;
use super::image::{borrow_view, dm_image_view};
use super::miner::{c_clusters, dm_mined_cluster, dm_miner_options, label_arg, mining_options, read_miner_options};
use super::model::{dm_model, model_ref};
use super::status::dm_status;
use super::typicality::dm_box;
use crate::dataset::{LabelledImage, LabelledSet, Pixels};
use crate::mining::cluster::{ClusterOptions, RankedCluster};
use crate::mining::miner::{box_features, cluster_patches, image_candidates, read_image, LabelResult, MinedPatch, MiningOptions, SkippedImage, KEPT_MAP_SIDE};
use crate::mining::patches::{rank_order, ImagePatch, PatchBox};
use crate::mining::report::{write_report, ReportOptions};

/// The most values of the reduced typicality map `dm_mining_image` writes (64 × 64).
pub const DM_MINING_MAP_MAX: usize = 4096;
const _: () = assert!(DM_MINING_MAP_MAX == KEPT_MAP_SIDE * KEPT_MAP_SIDE);

/// What `dm_mining_image` tells of an image besides its boxes and map.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dm_mined_image_info {
    /// `sizeof(dm_mined_image_info)` as the caller was compiled with.
    pub struct_size: usize,
    /// The image's size as mined (after any resize): boxes are in these pixels.
    pub width: u32,
    pub height: u32,
    /// The size of the reduced typicality map written (at most 64 a side).
    pub map_width: u32,
    pub map_height: u32,
}

/// A box of a label's candidates: its image by name (UTF-8; a path, or any name that is unique in
/// the set), its place and its mean typicality.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_candidate {
    pub image: *const c_char,
    pub x: u32,
    pub y: u32,
    pub size: u32,
    pub typicality: f32,
}

/// A kept box placed in its cluster by `dm_mining_cluster`: `candidate` indexes the boxes given.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct dm_clustered_patch {
    pub candidate: u32,
    /// Rank of its cluster (0: highest median typicality), its rank inside it (0: closest to the
    /// centroid) and its distance to the centroid.
    pub cluster: u32,
    pub rank_in_cluster: u32,
    pub distance: f32,
}

/// An image given as a view, named by its pixels (so a cache entry follows the pixels).
///
/// # Safety
/// `image` NULL or a valid view.
unsafe fn viewed_image(image: *const dm_image_view) -> FfiResult<LabelledImage> {
    // SAFETY: forwarded to the caller's contract.
    let view = unsafe { borrow_view(image) }?;
    Ok(LabelledImage { path: PathBuf::new(), labels: Vec::new(), pixels: Some(Pixels::copy_of(&view)?) })
}

/// The mining options, required (not NULL: `prompt_template` is).
///
/// # Safety
/// `options` NULL or a valid options struct whose strings are NUL-terminated.
unsafe fn required_options(options: *const dm_miner_options) -> FfiResult<MiningOptions> {
    if options.is_null() {
        return Err(FfiError::Null("options"));
    }
    // SAFETY: forwarded to the caller's contract.
    let o = unsafe { read_miner_options(options) }?;
    // SAFETY: as above.
    unsafe { mining_options(&o) }
}

/// The set stage: the labelled set at `data` (UTF-8: a folder with a subfolder of images per label,
/// or a CSV of `path,label` rows) as `dm_miner_run` and `diffmine mine` list it, so that a caller
/// spreading the other stages over machines mines the same images under the same names. Writes a
/// JSON array of `{"path": ..., "labels": [...]}`, an object per image in the order mining reads
/// them, NUL-terminated into `out_json` (room for `out_json_len` bytes) and its size with the NUL
/// into `*out_json_needed`; with `out_json` NULL only the size (`DM_ERR_BUFFER_TOO_SMALL` also
/// writes it). Images are listed, not read: an unreadable one is found by `dm_mining_image`.
///
/// # Safety
/// `data` NULL or NUL-terminated; `out_json` NULL or `out_json_len` writable bytes; `out_json_needed`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_mining_list_set(data: *const c_char, out_json: *mut c_char, out_json_len: usize, out_json_needed: *mut usize) -> dm_status {
    guard(|| {
        // SAFETY: forwarded to the caller's contract.
        let data = unsafe { required_str(data, "data") }?;
        let set = LabelledSet::open(Path::new(data))?;
        let items = set.items.iter().map(|item| {
            let path = item.path.to_str().ok_or_else(|| FfiError::Invalid(format!("{}: the path is not UTF-8", item.path.display())))?;
            Ok(serde_json::json!({ "path": path, "labels": item.labels }))
        });
        let json = serde_json::Value::Array(items.collect::<FfiResult<_>>()?).to_string();
        // SAFETY: forwarded to the caller's contract.
        unsafe { write_text(&json, out_json, out_json_len, out_json_needed) }
    })
}

/// The per-image stage: the typicality map of `image` under `label`'s prompt and its best boxes,
/// as `dm_miner_run` computes them (`options` as for `dm_miner_create`; `cache_dir` caches the map,
/// keyed by the pixels). Writes up to `options.per_image` boxes, best first, into `out_boxes` and
/// their count into `*out_box_count`; the map reduced to at most 64 pixels a side (row-major, what
/// the report's heat map shows; `DM_MINING_MAP_MAX` floats always suffice) into `out_map`; and the
/// sizes into `*out_info`, whose `struct_size` the caller sets. An image read from a file goes in as
/// `dm_image_open` reads it (`dm_image_get_view`), as the miner reads its files.
///
/// # Safety
/// `model` a live model or NULL; `options` NULL or valid with NUL-terminated strings; `image` NULL or
/// a valid view; `label` NULL or NUL-terminated; the outputs NULL or writable for their lengths.
#[no_mangle]
pub unsafe extern "C" fn dm_mining_image(
    model: *const dm_model,
    options: *const dm_miner_options,
    image: *const dm_image_view,
    label: *const c_char,
    out_boxes: *mut dm_box,
    boxes_len: usize,
    out_box_count: *mut usize,
    out_map: *mut f32,
    map_len: usize,
    out_info: *mut dm_mined_image_info,
) -> dm_status {
    guard(|| {
        let model = model_ref(model)?;
        // SAFETY: forwarded to the caller's contract.
        let (options, item, label) = unsafe { (required_options(options)?, viewed_image(image)?, label_arg(label)?) };
        if out_info.is_null() {
            return Err(FfiError::Null("out_info"));
        }
        let input = read_image(&item, &options)?;
        let candidates = image_candidates(&model, &item, &input, &label, &options)?;
        let boxes: Vec<dm_box> = candidates.boxes.iter().map(c_box).collect();
        let (map_height, map_width) = candidates.map.dim();
        let map: Vec<f32> = candidates.map.iter().copied().collect();
        let info = dm_mined_image_info {
            struct_size: std::mem::size_of::<dm_mined_image_info>(),
            width: candidates.width as u32,
            height: candidates.height as u32,
            map_width: map_width as u32,
            map_height: map_height as u32,
        };
        // Outputs are written only on success: the map's buffer is checked before the boxes go out.
        fits(out_map, map_len, map.len(), "out_map")?;
        // SAFETY: the caller's contract covers the outputs.
        unsafe {
            write_array(&boxes, out_boxes, boxes_len, out_box_count, "out_boxes")?;
            write_output(&map, out_map, map_len, "out_map")?;
            write_sized(info, out_info, std::mem::size_of::<dm_mined_image_info>(), "out_info")
        }
    })
}

/// Checks that a caller's buffer `what` is there and holds `needed` elements, before any output is written.
fn fits<T>(buffer: *mut T, len: usize, needed: usize, what: &'static str) -> FfiResult<()> {
    if buffer.is_null() {
        return Err(FfiError::Null(what));
    }
    if len < needed {
        return Err(FfiError::BufferTooSmall { what, needed, given: len });
    }
    Ok(())
}

fn c_box(b: &PatchBox) -> dm_box {
    dm_box { x: b.x as u32, y: b.y as u32, size: b.size as u32, score: b.score }
}

/// A C candidate as a box keyed by its image's name.
///
/// # Safety
/// `c.image` NULL or NUL-terminated.
unsafe fn candidate(c: &dm_candidate) -> FfiResult<ImagePatch<PathBuf>> {
    // SAFETY: forwarded to the caller's contract.
    let image = unsafe { required_str(c.image, "candidate.image") }?;
    Ok(ImagePatch { image: PathBuf::from(image), patch: PatchBox { x: c.x as usize, y: c.y as usize, size: c.size as usize, score: c.typicality } })
}

/// The candidates of a C array.
///
/// # Safety
/// `candidates` NULL or `count` valid candidates whose names are NUL-terminated.
unsafe fn candidates(candidates: *const dm_candidate, count: usize) -> FfiResult<Vec<ImagePatch<PathBuf>>> {
    // SAFETY: forwarded to the caller's contract.
    let given = unsafe { input_slice(candidates, count, "candidates") }?;
    // SAFETY: as above.
    given.iter().map(|c| unsafe { candidate(c) }).collect()
}

/// The selection stage: the `top` best of `count` candidate boxes of one label, by typicality (ties:
/// image name, then row, then column). Writes their indices in `candidates`, best first, into
/// `out_indices` (room for `out_len`) and their count into `*out_count`. Associative: the best of
/// several blocks' best is the best of all, whatever the blocks and their order.
///
/// # Safety
/// `candidates` NULL or `count` valid candidates whose names are NUL-terminated; `out_indices` NULL or
/// `out_len` writable; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_mining_top(
    candidates: *const dm_candidate,
    count: usize,
    top: u32,
    out_indices: *mut usize,
    out_len: usize,
    out_count: *mut usize,
) -> dm_status {
    guard(|| {
        // SAFETY: forwarded to the caller's contract.
        let given = unsafe { self::candidates(candidates, count) }?;
        // The order of `top_patches`, the index last to tell apart boxes given twice.
        let mut indices: Vec<usize> = (0..given.len()).collect();
        indices.sort_by(|&a, &b| rank_order(&given[a], &given[b]).then(a.cmp(&b)));
        indices.truncate(top as usize);
        // SAFETY: the caller's contract covers the outputs.
        unsafe { write_array(&indices, out_indices, out_len, out_count, "out_indices") }
    })
}

/// The number of values in a DIFT feature of a box of `model` (the channels of its UNet's up block
/// the features come from): `dm_mining_box_features` writes that many per box.
///
/// # Safety
/// `out_dim` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_mining_feature_dim(model: *const dm_model, out_dim: *mut usize) -> dm_status {
    guard(|| {
        let model = model_ref(model)?;
        let dim = crate::mining::dift::feature_channels(&model, MiningOptions::default().dift.up_block)?;
        // SAFETY: forwarded to the caller's contract.
        unsafe { write_value(dim, out_dim, "out_dim") }
    })
}

/// The feature stage: the DIFT features of `box_count` boxes of `image` under `label`'s prompt, as
/// `dm_miner_run` computes them. Writes a row of `dm_mining_feature_dim` floats per box, in the
/// boxes' order, into `out_features` (room for `out_len` floats).
///
/// # Safety
/// `model` a live model or NULL; `options` NULL or valid with NUL-terminated strings; `image` NULL or
/// a valid view; `label` NULL or NUL-terminated; `boxes` NULL or `box_count` boxes; `out_features`
/// NULL or `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn dm_mining_box_features(
    model: *const dm_model,
    options: *const dm_miner_options,
    image: *const dm_image_view,
    label: *const c_char,
    boxes: *const dm_box,
    box_count: usize,
    out_features: *mut f32,
    out_len: usize,
) -> dm_status {
    guard(|| {
        let model = model_ref(model)?;
        // SAFETY: forwarded to the caller's contract.
        let (options, item, label, boxes) =
            unsafe { (required_options(options)?, viewed_image(image)?, label_arg(label)?, input_slice(boxes, box_count, "boxes")?) };
        let boxes: Vec<PatchBox> = boxes.iter().map(|b| PatchBox { x: b.x as usize, y: b.y as usize, size: b.size as usize, score: b.score }).collect();
        let features = box_features(&model, &item, &boxes, &label, &options)?;
        let values: Vec<f32> = features.iter().copied().collect();
        // SAFETY: the caller's contract covers the output.
        unsafe { write_output(&values, out_features, out_len, "out_features") }
    })
}

/// The clustering stage: k-means over the features of a label's `count` kept boxes (row i, `dim`
/// floats, the feature of `kept[i]`) with the clusters and restarts of `options` (NULL: the
/// defaults; its prompts are not needed), clusters ranked by their members' median typicality.
/// The boxes may come in any order. Writes every box, in cluster rank order then rank in cluster,
/// into `out_patches` (room for `patches_len`; `count` suffice) and their count into
/// `*out_patch_count`; the clusters in rank order into `out_clusters` (room for `clusters_len`;
/// `count` suffice) and their count into `*out_cluster_count`.
///
/// # Safety
/// `kept` NULL or `count` valid candidates whose names are NUL-terminated; `features` NULL or
/// `features_len` floats; `options` NULL or valid; the outputs NULL or writable for their lengths.
#[no_mangle]
pub unsafe extern "C" fn dm_mining_cluster(
    kept: *const dm_candidate,
    count: usize,
    features: *const f32,
    features_len: usize,
    dim: usize,
    options: *const dm_miner_options,
    out_patches: *mut dm_clustered_patch,
    patches_len: usize,
    out_patch_count: *mut usize,
    out_clusters: *mut dm_mined_cluster,
    clusters_len: usize,
    out_cluster_count: *mut usize,
) -> dm_status {
    guard(|| {
        // SAFETY: forwarded to the caller's contract.
        let (given, values) = unsafe { (candidates(kept, count)?, input_slice(features, features_len, "features")?) };
        if dim == 0 || features_len != count * dim {
            return Err(FfiError::Invalid(format!("features hold {features_len} values; {count} boxes of {dim} need {}", count * dim)));
        }
        // SAFETY: forwarded to the caller's contract.
        let o = unsafe { read_miner_options(options) }?;
        let cluster =
            ClusterOptions { clusters: at_least_one(o.clusters, "clusters")?, restarts: at_least_one(o.restarts, "restarts")?, ..ClusterOptions::default() };
        let table = Array2::from_shape_vec((count, dim), values.to_vec()).map_err(|e| FfiError::Invalid(format!("features: {e}")))?;
        let clustered = cluster_patches(&given, &table, &cluster)?;
        let index: BTreeMap<(&Path, usize, usize), usize> = given.iter().enumerate().map(|(i, p)| ((p.image.as_path(), p.patch.y, p.patch.x), i)).collect();
        let patches: Vec<dm_clustered_patch> = clustered
            .patches
            .iter()
            .map(|p| dm_clustered_patch {
                candidate: index[&(p.path.as_path(), p.patch.y, p.patch.x)] as u32,
                cluster: p.cluster_rank as u32,
                rank_in_cluster: p.rank_in_cluster as u32,
                distance: p.distance,
            })
            .collect();
        let clusters = c_clusters(&clustered.clusters);
        // Outputs are written only on success: the clusters' buffer is checked before the patches go out.
        fits(out_clusters, clusters_len, clusters.len(), "out_clusters")?;
        if out_cluster_count.is_null() {
            return Err(FfiError::Null("out_cluster_count"));
        }
        // SAFETY: the caller's contract covers the outputs.
        unsafe {
            write_array(&patches, out_patches, patches_len, out_patch_count, "out_patches")?;
            write_array(&clusters, out_clusters, clusters_len, out_cluster_count, "out_clusters")
        }
    })
}

/// The report of results mined stage by stage, gathered label by label, then written as
/// `dm_miner_write_report` writes a miner's.
#[allow(non_camel_case_types)]
pub struct dm_report {
    _opaque: [u8; 0],
}

/// What a `dm_report` gathers.
struct Report {
    options: ReportOptions,
    contents: Mutex<Contents>,
}

#[derive(Default)]
struct Contents {
    labels: Vec<LabelResult>,
    /// The pixels of the images that are not files, by name.
    images: BTreeMap<PathBuf, Pixels>,
}

impl Report {
    fn contents(&self) -> std::sync::MutexGuard<'_, Contents> {
        // Every change is a single insert or push, so a poisoned lock holds consistent contents.
        self.contents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Contents {
    fn label(&mut self, label: &str) -> FfiResult<&mut LabelResult> {
        self.labels
            .iter_mut()
            .find(|r| r.label == label)
            .ok_or_else(|| FfiError::Invalid(format!("no label `{label}` in the report: add it with dm_report_add_label first")))
    }
}

fn report_ref(report: *const dm_report) -> FfiResult<std::sync::Arc<Report>> {
    handle::get::<Report, dm_report>(report, "report")
}

/// Starts a report of results mined with `options` (NULL: the defaults; only the resize matters
/// here, so boxes land where they were found). `*out_report` owns it, released with `dm_report_free`.
///
/// # Safety
/// `options` NULL or valid; `out_report` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_report_new(options: *const dm_miner_options, out_report: *mut *mut dm_report) -> dm_status {
    guard(|| {
        // SAFETY: forwarded to the caller's contract.
        let o = unsafe { read_miner_options(options) }?;
        if out_report.is_null() {
            return Err(FfiError::Null("out_report"));
        }
        let resize = (o.resize_short_side > 0).then_some(o.resize_short_side as usize);
        let report = Report { options: ReportOptions { resize, ..ReportOptions::default() }, contents: Mutex::default() };
        // SAFETY: checked non-NULL above; writable by the caller's contract.
        unsafe { write_value(handle::register::<Report, dm_report>(report), out_report, "out_report") }
    })
}

/// Adds a label's results as `dm_mining_cluster` gives them: its kept boxes (`kept`, `count`), its
/// clustered boxes and its clusters. Labels appear in the report in the order they are added.
///
/// # Safety
/// `label` NULL or NUL-terminated; `kept` NULL or `count` valid candidates with NUL-terminated names;
/// `patches` and `clusters` NULL or their counts of elements.
#[no_mangle]
pub unsafe extern "C" fn dm_report_add_label(
    report: *mut dm_report,
    label: *const c_char,
    kept: *const dm_candidate,
    count: usize,
    patches: *const dm_clustered_patch,
    patch_count: usize,
    clusters: *const dm_mined_cluster,
    cluster_count: usize,
) -> dm_status {
    guard(|| {
        let report = report_ref(report)?;
        // SAFETY: forwarded to the caller's contract.
        let (label, kept, patches, clusters) = unsafe {
            (label_arg(label)?, candidates(kept, count)?, input_slice(patches, patch_count, "patches")?, input_slice(clusters, cluster_count, "clusters")?)
        };
        let result = label_result(label, &kept, patches, clusters)?;
        let mut contents = report.contents();
        if contents.labels.iter().any(|r| r.label == result.label) {
            return Err(FfiError::Invalid(format!("label `{}` is already in the report", result.label)));
        }
        contents.labels.push(result);
        Ok(())
    })
}

/// A label's result from the C views of its clustering, checked for indices out of range.
fn label_result(label: String, kept: &[ImagePatch<PathBuf>], patches: &[dm_clustered_patch], clusters: &[dm_mined_cluster]) -> FfiResult<LabelResult> {
    let mut mined = Vec::with_capacity(patches.len());
    for p in patches {
        let k = kept
            .get(p.candidate as usize)
            .ok_or_else(|| FfiError::Invalid(format!("patch candidate {} is out of range ({} boxes)", p.candidate, kept.len())))?;
        if p.cluster as usize >= clusters.len() {
            return Err(FfiError::Invalid(format!("patch cluster {} is out of range ({} clusters)", p.cluster, clusters.len())));
        }
        mined.push(MinedPatch {
            path: k.image.clone(),
            patch: k.patch,
            cluster_rank: p.cluster as usize,
            rank_in_cluster: p.rank_in_cluster as usize,
            distance: p.distance,
        });
    }
    let mut ranked = Vec::with_capacity(clusters.len());
    for (id, c) in clusters.iter().enumerate() {
        let members = c.first as usize..c.first as usize + c.members as usize;
        if members.end > mined.len() {
            return Err(FfiError::Invalid(format!("cluster {id} holds patches {members:?}, beyond the {} patches", mined.len())));
        }
        ranked.push(RankedCluster { id, members: members.collect(), median_typicality: c.median_typicality });
    }
    Ok(LabelResult {
        label,
        patches: mined,
        clusters: ranked,
        image_sizes: BTreeMap::new(),
        in_memory: BTreeMap::new(),
        maps: BTreeMap::new(),
        skipped: Vec::new(),
        times: Default::default(),
    })
}

/// Adds the reduced typicality map of `image` (by name) under `label`, as `dm_mining_image` wrote it
/// (`height` × `width`, row-major): the report draws the heat map of every image it shows from it.
///
/// # Safety
/// `label` and `image` NULL or NUL-terminated; `map` NULL or `height` × `width` floats.
#[no_mangle]
pub unsafe extern "C" fn dm_report_add_map(
    report: *mut dm_report,
    label: *const c_char,
    image: *const c_char,
    map: *const f32,
    height: u32,
    width: u32,
) -> dm_status {
    guard(|| {
        let report = report_ref(report)?;
        let (h, w) = (height as usize, width as usize);
        // SAFETY: forwarded to the caller's contract.
        let (label, image, values) = unsafe { (label_arg(label)?, required_str(image, "image")?, input_slice(map, h * w, "map")?) };
        let map = Array2::from_shape_vec((h, w), values.to_vec()).map_err(|e| FfiError::Invalid(format!("map: {e}")))?;
        report.contents().label(&label)?.maps.insert(PathBuf::from(image), map);
        Ok(())
    })
}

/// Adds the pixels of an image named `image` that is not a file (copied): the report crops it from
/// these. An image whose name is a file's path needs none; the report reads the file.
///
/// # Safety
/// `image` NULL or NUL-terminated; `view` NULL or a valid view.
#[no_mangle]
pub unsafe extern "C" fn dm_report_add_image(report: *mut dm_report, image: *const c_char, view: *const dm_image_view) -> dm_status {
    guard(|| {
        let report = report_ref(report)?;
        // SAFETY: forwarded to the caller's contract.
        let (name, view) = unsafe { (required_str(image, "image")?, borrow_view(view)?) };
        report.contents().images.insert(PathBuf::from(name), Pixels::copy_of(&view)?);
        Ok(())
    })
}

/// Names an image of `label` that could not be read and was left out, with the reason (NULL: none
/// given); the report lists and counts them.
///
/// # Safety
/// `label`, `image` and `reason` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dm_report_add_skipped(report: *mut dm_report, label: *const c_char, image: *const c_char, reason: *const c_char) -> dm_status {
    guard(|| {
        let report = report_ref(report)?;
        // SAFETY: forwarded to the caller's contract.
        let (label, image, reason) = unsafe { (label_arg(label)?, required_str(image, "image")?, optional_str(reason, "reason")?) };
        let skipped = SkippedImage { path: PathBuf::from(image), reason: reason.unwrap_or("unreadable").to_string() };
        report.contents().label(&label)?.skipped.push(skipped);
        Ok(())
    })
}

/// Writes the report into the folder `out_dir` (UTF-8; created if missing), as
/// `dm_miner_write_report` does.
///
/// # Safety
/// `out_dir` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dm_report_write(report: *const dm_report, out_dir: *const c_char) -> dm_status {
    guard(|| {
        let report = report_ref(report)?;
        // SAFETY: forwarded to the caller's contract.
        let out_dir = unsafe { required_str(out_dir, "out_dir") }?;
        let mut contents = report.contents();
        let Contents { labels, images } = &mut *contents;
        for result in labels.iter_mut() {
            result.in_memory = images.clone();
        }
        write_report(labels, &report.options, Path::new(out_dir))?;
        Ok(())
    })
}

/// Releases a report. NULL is accepted; a handle that is not a live report gives
/// `DM_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn dm_report_free(report: *mut dm_report) -> dm_status {
    guard(|| handle::release::<Report, dm_report>(report, "report"))
}
