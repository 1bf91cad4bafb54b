//! The mining pipeline of one labelled set, per label: typicality of each image → its best boxes →
//! the label's best boxes over all images → the DIFT feature of each → k-means → clusters ranked by
//! the median typicality of their members.
//!
//! Memory stays bounded by the boxes kept, not by the number of images: maps are reduced to their
//! boxes as they are computed. Typicality maps and DIFT feature maps are cached on disk (when a cache
//! folder is given), keyed by the model, the image file and the settings, so a re-run with other
//! clustering settings, or after an interruption, recomputes nothing upstream. Images held in memory
//! are keyed by their pixels instead of the file.
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ndarray::Array2;
use tch::Tensor;

use super::cluster::{kmeans, rank_clusters, ClusterOptions, RankedCluster};
use super::dift::{box_feature, dift_features, DiftOptions};
use super::patches::{select_patches, top_patches, ImagePatch, PatchBox};
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
    /// Where mining this label spent its time.
    pub times: StageTimes,
}

/// Wall time spent in each stage of mining, so a user (or a benchmark) can see where it goes.
/// Typicality and DIFT include reading each image and the on-disk cache (or writing it after
/// computing); clustering includes ranking the clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub typicality: Duration,
    /// Pooling each map and choosing its boxes.
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

/// Mines every label of `set`.
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

fn mine_label(
    model: &StableDiffusion,
    label: &str,
    images: &[&LabelledImage],
    options: &MiningOptions,
    step: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<LabelResult> {
    let _span = tracing::info_span!("mine_label", label, images = images.len()).entered();
    let prompt = options.prompt(label);
    let mut times = StageTimes::default();
    let mut kept: Vec<ImagePatch> = Vec::new();
    let mut image_sizes = BTreeMap::new();
    let mut maps: BTreeMap<usize, Array2<f32>> = BTreeMap::new();
    for (index, image) in images.iter().enumerate() {
        let map = timed(&mut times.typicality, || cached_typicality(model, image, &prompt, options))?;
        let (h, w) = (map.size()[0] as usize, map.size()[1] as usize);
        image_sizes.insert(image.path.clone(), (h, w));
        timed(&mut times.patches, || -> Result<()> {
            let values = Vec::<f32>::try_from(map.f_flatten(0, -1)?)?;
            let boxes = select_patches(&values, h, w, options.patch_size.min(h).min(w), options.per_image)?;
            kept.extend(boxes.into_iter().map(|patch| ImagePatch { image: index, patch }));
            // Keep only what can still make the label's top: memory bounded by the boxes kept.
            kept = top_patches(std::mem::take(&mut kept), options.top);
            let holding: BTreeSet<usize> = kept.iter().map(|p| p.image).collect();
            if holding.contains(&index) {
                maps.insert(index, reduced(&values, h, w, KEPT_MAP_SIDE));
            }
            maps.retain(|i, _| holding.contains(i));
            Ok(())
        })?;
        step("typicality")?;
    }
    let features = timed(&mut times.dift, || box_features(model, images, &kept, &prompt, options, step))?;
    let (clustering, clusters) = timed(&mut times.clustering, || -> Result<_> {
        let clustering = kmeans(&features, &options.cluster)?;
        let scores: Vec<f32> = kept.iter().map(|p| p.patch.score).collect();
        let clusters = rank_clusters(&clustering, &scores);
        Ok((clustering, clusters))
    })?;
    let mut patches = Vec::with_capacity(kept.len());
    let mut ranked_clusters = Vec::with_capacity(clusters.len());
    for (cluster_rank, cluster) in clusters.into_iter().enumerate() {
        let first = patches.len();
        for (rank_in_cluster, &member) in cluster.members.iter().enumerate() {
            let p = &kept[member];
            patches.push(MinedPatch {
                path: images[p.image].path.clone(),
                patch: p.patch,
                cluster_rank,
                rank_in_cluster,
                distance: clustering.distances[member],
            });
        }
        let members = (first..patches.len()).collect();
        ranked_clusters.push(RankedCluster { members, ..cluster });
    }
    let in_memory = images.iter().filter_map(|i| Some((i.path.clone(), i.pixels.clone()?))).collect();
    let maps = maps.into_iter().map(|(i, map)| (images[i].path.clone(), map)).collect();
    Ok(LabelResult { label: label.to_string(), patches, clusters: ranked_clusters, image_sizes, in_memory, maps, times })
}

/// DIFT features of the kept boxes (n × C), one DIFT pass per image that has a kept box.
fn box_features(
    model: &StableDiffusion,
    images: &[&LabelledImage],
    kept: &[ImagePatch],
    prompt: &str,
    options: &MiningOptions,
    step: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<Array2<f32>> {
    let mut by_image: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in kept.iter().enumerate() {
        by_image.entry(p.image).or_default().push(i);
    }
    let mut rows: Vec<Option<Vec<f32>>> = vec![None; kept.len()];
    for (index, item) in images.iter().enumerate() {
        if let Some(members) = by_image.get(&index) {
            let image = item.load(options.resize)?;
            let (_, _, h, w) = image.size4()?;
            let features = cached_dift(model, item, &image, prompt, options)?;
            for &i in members {
                let f = box_feature(&features, &kept[i].patch, h as usize, w as usize)?;
                rows[i] = Some(Vec::<f32>::try_from(f)?);
            }
        }
        step("dift")?;
    }
    let dim = rows.iter().flatten().next().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.into_iter().flatten().flatten().collect();
    Array2::from_shape_vec((kept.len(), dim), flat).map_err(|e| Error::InvalidArgument(format!("feature table: {e}")))
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

fn cached_typicality(model: &StableDiffusion, image: &LabelledImage, prompt: &str, options: &MiningOptions) -> Result<Tensor> {
    let t = &options.typicality;
    let settings = format!("{prompt}|{}|{}|{}|{}|{}|{:?}|{:?}", options.null_prompt, t.samples, t.t_min, t.t_max, t.seed, t.latent, options.resize);
    cached(options, "typicality", cache_key(model, image, &settings), || {
        let input = image.load(options.resize)?;
        Ok(typicality(model, &input, prompt, &options.null_prompt, t, &mut |_, _| true)?.map)
    })
}

fn cached_dift(model: &StableDiffusion, item: &LabelledImage, image: &Tensor, prompt: &str, options: &MiningOptions) -> Result<Tensor> {
    let d = &options.dift;
    let settings = format!("{prompt}|{}|{}|{}|{}|{:?}|{:?}", d.ensemble, d.timestep, d.up_block, d.seed, d.latent, options.resize);
    cached(options, "dift", cache_key(model, item, &settings), || dift_features(model, image, prompt, d))
}
