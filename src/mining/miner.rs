//! The mining pipeline of one labelled set, per label: typicality of each image → its best boxes →
//! the label's best boxes over all images → the DIFT feature of each → k-means → clusters ranked by
//! the median typicality of their members.
//!
//! Memory stays bounded by the boxes kept, not by the number of images: maps are reduced to their
//! boxes as they are computed. Typicality maps and DIFT feature maps are cached on disk (when a cache
//! folder is given), keyed by the model, the image file and the settings, so a re-run with other
//! clustering settings, or after an interruption, recomputes nothing upstream. Images held in memory
//! are keyed by their pixels instead of the file.
//!
//! Each stage is a public function that [`mine`] calls in turn, so the stages can also run apart (on
//! other machines, images in any order): [`read_image`] and [`image_candidates`] per image,
//! [`top_patches`] over any blocks of candidates and then over the blocks' tops, [`box_features`] per
//! image holding kept boxes, [`cluster_patches`], then `report::write_report`. Every generator is
//! seeded per image from the options alone, and boxes are ordered by score, then image path or name,
//! then place, so composing the stages gives what [`mine`] gives, bit for bit, whatever the order.
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ndarray::{Array1, Array2, Axis};
use tch::Tensor;

use super::cluster::{kmeans, rank_clusters, ClusterOptions, RankedCluster};
use super::dift::{box_feature, dift_features, DiftOptions};
use super::patches::{rank_order, select_patches, top_patches, ImagePatch, PatchBox};
use crate::dataset::{LabelledImage, LabelledSet, Pixels};
use crate::error::{Error, Result};
use crate::heatmap::reduced;
use crate::model::StableDiffusion;
use crate::typicality::{typicality, TypicalityOptions};

#[derive(Debug)]
pub struct MiningOptions {
    /// Label prompt with `{label}`, and the null prompt: the captions the model was finetuned with.
    pub prompt_template: String,
    pub null_prompt: String,
    pub typicality: TypicalityOptions,
    /// Images are resized so their shorter side has this many pixels (None: as they are).
    pub resize: Option<usize>,
    /// Side k of the square patches (64; the authors used 50 on 256 px images).
    pub patch_size: usize,
    /// Boxes kept per image (5) and per label (1000).
    pub per_image: usize,
    pub top: usize,
    pub dift: DiftOptions,
    pub cluster: ClusterOptions,
    pub cache_dir: Option<PathBuf>,
}

impl Default for MiningOptions {
    fn default() -> Self {
        MiningOptions {
            prompt_template: "Image of {label}.".into(),
            null_prompt: String::new(),
            typicality: TypicalityOptions::default(),
            resize: None,
            patch_size: 64,
            per_image: 5,
            top: 1000,
            dift: DiftOptions::default(),
            cluster: ClusterOptions::default(),
            cache_dir: None,
        }
    }
}

impl MiningOptions {
    pub fn prompt(&self, label: &str) -> String {
        self.prompt_template.replace("{label}", label)
    }
}

/// A kept box with its place in the clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct MinedPatch {
    pub path: PathBuf,
    pub patch: PatchBox,
    /// Rank of its cluster (0: highest median typicality).
    pub cluster_rank: usize,
    /// Its rank inside the cluster (0: closest to the centroid).
    pub rank_in_cluster: usize,
    pub distance: f32,
}

#[derive(Debug, Clone)]
pub struct LabelResult {
    pub label: String,
    /// Every kept box, in cluster rank order then rank in cluster.
    pub patches: Vec<MinedPatch>,
    /// Clusters in rank order; their `members` index `patches`.
    pub clusters: Vec<RankedCluster>,
    /// The image size (after resizing) each image was mined at, for crops.
    pub image_sizes: BTreeMap<PathBuf, (usize, usize)>,
    /// The pixels of the images held in memory rather than in files, by their name, for crops.
    pub in_memory: BTreeMap<PathBuf, Pixels>,
    /// The typicality map of every image holding a kept box, reduced to at most `KEPT_MAP_SIDE`
    /// pixels a side, for the report's heat maps.
    pub maps: BTreeMap<PathBuf, Array2<f32>>,
    /// The label's images that could not be read, left out.
    pub skipped: Vec<SkippedImage>,
    /// Where mining this label spent its time.
    pub times: StageTimes,
}

/// Wall time spent in each stage of mining, so a user (or a benchmark) can see where it goes.
/// Typicality (with each image's own boxes) and DIFT include reading each image and the on-disk cache
/// (or writing it after computing); patches is keeping the label's best boxes; clustering includes
/// ranking the clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub typicality: Duration,
    /// Keeping the label's best boxes among the images'.
    pub patches: Duration,
    pub dift: Duration,
    pub clustering: Duration,
}

impl std::ops::Add for StageTimes {
    type Output = StageTimes;
    fn add(self, other: StageTimes) -> StageTimes {
        StageTimes {
            typicality: self.typicality + other.typicality,
            patches: self.patches + other.patches,
            dift: self.dift + other.dift,
            clustering: self.clustering + other.clustering,
        }
    }
}

impl std::iter::Sum for StageTimes {
    fn sum<I: Iterator<Item = StageTimes>>(iter: I) -> StageTimes {
        iter.fold(StageTimes::default(), std::ops::Add::add)
    }
}

/// Runs `f`, adding the time it took to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    *total += started.elapsed();
    value
}

/// The longer side of the typicality maps a result keeps: maps are bilinear upsamplings of the
/// latent's grid (an eighth of the image's side), so for images up to 512 pixels a side this keeps
/// all of a map, and a label's `top` boxes hold at most `top` maps of 16 KiB.
pub(crate) const KEPT_MAP_SIDE: usize = 64;

/// Progress of mining: (units done, units in all), a unit being one image's typicality or DIFT.
pub type MiningProgress<'a> = &'a mut dyn FnMut(u64, u64) -> bool;

/// Mines every label of `set`: per label, [`read_image`] and [`image_candidates`] for each of its
/// images, [`top_patches`] over their boxes, [`box_features`] of the kept boxes and
/// [`cluster_patches`]. An image that cannot be read is skipped, logged and listed in its labels'
/// [`LabelResult::skipped`]; a label none of whose images can be read is an error.
pub fn mine(model: &StableDiffusion, set: &LabelledSet, options: &MiningOptions, progress: MiningProgress) -> Result<Vec<LabelResult>> {
    let labels = set.labels();
    let total = set.items.iter().map(|i| i.labels.len() as u64).sum::<u64>() * 2;
    let mut done = 0u64;
    let mut step = |what: &str| -> Result<()> {
        done += 1;
        tracing::debug!(what, done, total, "mining progress");
        if progress(done, total) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    };
    let mut results = Vec::with_capacity(labels.len());
    for label in &labels {
        let images: Vec<&LabelledImage> = set.items.iter().filter(|i| i.labels.contains(label)).collect();
        results.push(mine_label(model, label, &images, options, &mut step)?);
    }
    Ok(results)
}

/// An image left out of mining because it could not be read, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedImage {
    pub path: PathBuf,
    pub reason: String,
}

/// One image's share of a label's mining: what the label's later stages need of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageCandidates {
    /// The image's size as mined (after any resize).
    pub height: usize,
    pub width: usize,
    /// Its best boxes, best first (at most `per_image`), as [`select_patches`] chooses them.
    pub boxes: Vec<PatchBox>,
    /// Its typicality map reduced to at most 64 pixels a side, for the report.
    pub map: Array2<f32>,
}

/// Reads an image as mining does: model input, resized as `options` say. A failure here means the
/// image is unreadable, which mining reports and skips rather than failing the run.
pub fn read_image(item: &LabelledImage, options: &MiningOptions) -> Result<Tensor> {
    item.load(options.resize)
}

/// The typicality map of one image under `label` and its best boxes: the per-image stage of mining.
/// `input` is the image as [`read_image`] returns it. The map's generator is seeded with
/// `options.typicality.seed` alone, for every image, so the result depends only on the image, the
/// label and the options, never on the image's place in the set or the images mined before it.
pub fn image_candidates(model: &StableDiffusion, item: &LabelledImage, input: &Tensor, label: &str, options: &MiningOptions) -> Result<ImageCandidates> {
    let map = cached_typicality(model, item, input, &options.prompt(label), options)?;
    let (height, width) = (map.size()[0] as usize, map.size()[1] as usize);
    let values = Vec::<f32>::try_from(map.f_flatten(0, -1)?)?;
    let boxes = select_patches(&values, height, width, options.patch_size.min(height).min(width), options.per_image)?;
    Ok(ImageCandidates { height, width, boxes, map: reduced(&values, height, width, KEPT_MAP_SIDE) })
}

/// A label's kept boxes placed in their clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusteredPatches {
    /// Every box, in cluster rank order then rank in cluster.
    pub patches: Vec<MinedPatch>,
    /// Clusters in rank order; their `members` index `patches`.
    pub clusters: Vec<RankedCluster>,
}

/// Clusters a label's kept boxes by their features (row i the feature of `kept[i]`, as
/// [`box_features`] gives them) and ranks the clusters: the clustering stage of mining. The boxes
/// are first put in [`rank_order`], so the result does not depend on the order they are given in.
pub fn cluster_patches(kept: &[ImagePatch<PathBuf>], features: &Array2<f32>, options: &ClusterOptions) -> Result<ClusteredPatches> {
    if features.nrows() != kept.len() {
        return Err(Error::InvalidArgument(format!("{} boxes but {} feature rows", kept.len(), features.nrows())));
    }
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by(|&a, &b| rank_order(&kept[a], &kept[b]));
    let kept: Vec<&ImagePatch<PathBuf>> = order.iter().map(|&i| &kept[i]).collect();
    let features = features.select(Axis(0), &order);
    let clustering = kmeans(&features, options)?;
    let scores: Vec<f32> = kept.iter().map(|p| p.patch.score).collect();
    let mut patches = Vec::with_capacity(kept.len());
    let mut clusters = Vec::new();
    for (cluster_rank, cluster) in rank_clusters(&clustering, &scores).into_iter().enumerate() {
        let first = patches.len();
        for (rank_in_cluster, &member) in cluster.members.iter().enumerate() {
            let p = kept[member];
            patches.push(MinedPatch { path: p.image.clone(), patch: p.patch, cluster_rank, rank_in_cluster, distance: clustering.distances[member] });
        }
        clusters.push(RankedCluster { members: (first..patches.len()).collect(), ..cluster });
    }
    Ok(ClusteredPatches { patches, clusters })
}

fn mine_label(
    model: &StableDiffusion,
    label: &str,
    images: &[&LabelledImage],
    options: &MiningOptions,
    step: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<LabelResult> {
    let _span = tracing::info_span!("mine_label", label, images = images.len()).entered();
    let mut times = StageTimes::default();
    let mut kept: Vec<ImagePatch<PathBuf>> = Vec::new();
    let mut image_sizes = BTreeMap::new();
    let mut maps: BTreeMap<PathBuf, Array2<f32>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for image in images {
        let candidates = timed(&mut times.typicality, || match read_image(image, options) {
            Ok(input) => image_candidates(model, image, &input, label, options).map(Some),
            Err(e) => {
                tracing::warn!(image = %image.path.display(), error = %e, "unreadable image skipped");
                skipped.push(SkippedImage { path: image.path.clone(), reason: e.to_string() });
                Ok(None)
            }
        })?;
        if let Some(candidates) = candidates {
            image_sizes.insert(image.path.clone(), (candidates.height, candidates.width));
            timed(&mut times.patches, || {
                kept.extend(candidates.boxes.iter().map(|&patch| ImagePatch { image: image.path.clone(), patch }));
                // Keep only what can still make the label's top: memory bounded by the boxes kept.
                kept = top_patches(std::mem::take(&mut kept), options.top);
                maps.insert(image.path.clone(), candidates.map);
                let holding: BTreeSet<&PathBuf> = kept.iter().map(|p| &p.image).collect();
                maps.retain(|path, _| holding.contains(path));
            });
        }
        step("typicality")?;
    }
    if kept.is_empty() && !skipped.is_empty() {
        let names: Vec<String> = skipped.iter().map(|s| s.path.display().to_string()).collect();
        return Err(Error::InvalidData(format!("label `{label}`: no image could be read ({}): {}", names.join(", "), skipped[0].reason)));
    }
    let features = timed(&mut times.dift, || kept_features(model, images, &kept, label, options, step))?;
    let clustered = timed(&mut times.clustering, || cluster_patches(&kept, &features, &options.cluster))?;
    let in_memory = images.iter().filter_map(|i| Some((i.path.clone(), i.pixels.clone()?))).collect();
    Ok(LabelResult { label: label.to_string(), patches: clustered.patches, clusters: clustered.clusters, image_sizes, in_memory, maps, skipped, times })
}

/// DIFT features of the kept boxes (n × C), one [`box_features`] call per image that has a kept box.
fn kept_features(
    model: &StableDiffusion,
    images: &[&LabelledImage],
    kept: &[ImagePatch<PathBuf>],
    label: &str,
    options: &MiningOptions,
    step: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<Array2<f32>> {
    let mut by_image: BTreeMap<&PathBuf, Vec<usize>> = BTreeMap::new();
    for (i, p) in kept.iter().enumerate() {
        by_image.entry(&p.image).or_default().push(i);
    }
    let mut rows: Vec<Option<Array1<f32>>> = vec![None; kept.len()];
    for image in images {
        if let Some(members) = by_image.get(&image.path) {
            let boxes: Vec<PatchBox> = members.iter().map(|&i| kept[i].patch).collect();
            let features = box_features(model, image, &boxes, label, options)?;
            for (&i, row) in members.iter().zip(features.rows()) {
                rows[i] = Some(row.to_owned());
            }
        }
        step("dift")?;
    }
    let rows: Vec<Array1<f32>> =
        rows.into_iter().map(|r| r.ok_or_else(|| Error::InvalidArgument("a kept box of an image not in the set".into()))).collect::<Result<_>>()?;
    let views: Vec<_> = rows.iter().map(Array1::view).collect();
    ndarray::stack(Axis(0), &views).map_err(|e| Error::InvalidArgument(format!("feature table: {e}")))
}

/// The DIFT features of `boxes` of one image under `label` (a row per box, in their order): the
/// feature stage of mining. The features' generator is seeded with `options.dift.seed` alone, for
/// every image, so a box's feature depends only on its image, its place and the options.
pub fn box_features(model: &StableDiffusion, item: &LabelledImage, boxes: &[PatchBox], label: &str, options: &MiningOptions) -> Result<Array2<f32>> {
    let image = read_image(item, options)?;
    let (_, _, h, w) = image.size4()?;
    let features = cached_dift(model, item, &image, &options.prompt(label), options)?;
    let mut rows = Vec::with_capacity(boxes.len());
    for patch in boxes {
        rows.extend(Vec::<f32>::try_from(box_feature(&features, patch, h as usize, w as usize)?)?);
    }
    let dim = features.size()[0] as usize;
    Array2::from_shape_vec((boxes.len(), dim), rows).map_err(|e| Error::InvalidArgument(format!("feature table: {e}")))
}

/// A stable key for a cached result: the model's weights (by their tensors' names and first values),
/// the image (path, and the file's size and modification time or the pixels held in memory) and the
/// settings that change the result.
fn cache_key(model: &StableDiffusion, image: &LabelledImage, settings: &str) -> String {
    let mut hasher = DefaultHasher::new();
    for (name, t) in model.unet_weights().parameters.iter().take(4) {
        name.hash(&mut hasher);
        t.f_flatten(0, -1).ok().and_then(|f| f.f_double_value(&[0]).ok()).map(f64::to_bits).hash(&mut hasher);
    }
    image.path.hash(&mut hasher);
    match &image.pixels {
        Some(pixels) => pixels.hash(&mut hasher),
        None => {
            if let Ok(meta) = std::fs::metadata(&image.path) {
                meta.len().hash(&mut hasher);
                meta.modified().ok().hash(&mut hasher);
            }
        }
    }
    settings.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Returns the cached tensor for `key`, or computes and stores it.
fn cached(options: &MiningOptions, kind: &str, key: String, compute: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    let Some(dir) = &options.cache_dir else { return compute() };
    let path = dir.join(format!("{kind}-{key}.safetensors"));
    if let Ok(mut stored) = Tensor::read_safetensors(&path) {
        if let Some((_, t)) = stored.pop() {
            return Ok(t);
        }
    }
    let value = compute()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::io::write_atomic_with(&path, |temporary| Tensor::write_safetensors(&[(kind, &value)], temporary).map_err(|e| Error::io(&path, e)))?;
    Ok(value)
}

fn cached_typicality(model: &StableDiffusion, image: &LabelledImage, input: &Tensor, prompt: &str, options: &MiningOptions) -> Result<Tensor> {
    let t = &options.typicality;
    // Everything that changes the map but the image and the model, which `cache_key` adds.
    let settings = format!(
        "{prompt}|{}|{}|{}|{}|{}|{:?}|{:?}|{}|{}",
        options.null_prompt, t.samples, t.t_min, t.t_max, t.seed, t.latent, options.resize, t.antithetic, t.stratified
    );
    cached(options, "typicality", cache_key(model, image, &settings), || Ok(typicality(model, input, prompt, &options.null_prompt, t, &mut |_, _| true)?.map))
}

fn cached_dift(model: &StableDiffusion, item: &LabelledImage, image: &Tensor, prompt: &str, options: &MiningOptions) -> Result<Tensor> {
    let d = &options.dift;
    let settings = format!("{prompt}|{}|{}|{}|{}|{:?}|{:?}", d.ensemble, d.timestep, d.up_block, d.seed, d.latent, options.resize);
    cached(options, "dift", cache_key(model, item, &settings), || dift_features(model, image, prompt, d))
}
