//! Discriminative mining of visual elements, the baseline the typicality miner is compared with
//! (Doersch et al., "What makes Paris look like Paris?", as the ECCV 2024 authors reimplemented it):
//! per label, HOG + colour window features ([`features`]), random high-contrast candidate windows of
//! the label's images, each a first detector (its own feature) scored by how many of its 20 best
//! images carry the label, detectors kept greedily unless their detections overlap a kept one's,
//! three rounds of linear SVM training ([`svm`]) on each detector's best windows in the label's
//! images against random and hard negative windows of the other labels, and a final ranking by the
//! share of the label's images among each detector's best images. Every search over windows is a
//! dense matrix product ([`search`]).
//!
//! The cost grows with the set: the candidates grow with the label's images (up to their cap) and
//! every candidate searches every window of every image.
pub mod features;
pub mod search;
pub mod svm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ndarray::Array2;
use tch::{Kind, Tensor};

use self::features::{is_low_contrast, window_features, Rgb, WindowGrid, FEATURE_DIM, STRIDE, WINDOW};
use self::search::{best_windows, top, Detection, ImageWindows};
use self::svm::{train, SvmOptions};
use super::cluster::RankedCluster;
use super::miner::{LabelResult, MinedPatch};
use super::patches::PatchBox;
use crate::dataset::{LabelledImage, LabelledSet};
use crate::error::{Error, Result};
use crate::image::to_rgb_image;
use crate::rng::SplitMix64;

/// The number type of the stored window features and of the dense search's products. Float32 by
/// default: measured on a 16-image set, bfloat16 features changed which detectors the training kept
/// (39 of 40 reported detectors found other windows) for a search no faster on a CPU without bfloat16
/// units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Float32,
    /// Half the memory of float32; libtorch's CPU products use bfloat16 units where the processor
    /// has them (AMX, AVX512-BF16), as the authors searched in float16 on a GPU.
    BFloat16,
}

impl Precision {
    fn kind(self) -> Kind {
        match self {
            Precision::Float32 => Kind::Float,
            Precision::BFloat16 => Kind::BFloat16,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DoerschOptions {
    /// Images are resized so their shorter side has this many pixels (None: as they are).
    pub resize: Option<usize>,
    /// Random candidate windows per label (25,000).
    pub candidates: usize,
    /// A candidate whose grey levels' 1st–99th percentile range is under this share of the dynamic
    /// range is dropped (0.15).
    pub contrast_threshold: f64,
    /// Random windows tried per visit of an image when drawing candidates (100).
    pub contrast_trials: usize,
    /// Detectors kept by the greedy selection (1,000).
    pub detectors: usize,
    /// Best images (one window each) a first detector is judged on (50), and among them the first
    /// ones whose labels count (20).
    pub neighbours: usize,
    pub scored_neighbours: usize,
    /// A detector is rejected when more than `overlaps` of its neighbours' windows overlap (IoU above
    /// `overlap_iou`) a kept detector's (5, 0.3).
    pub overlaps: usize,
    pub overlap_iou: f64,
    /// Training rounds (3); round i uses a random (i + 1)/rounds share of the window positions.
    pub rounds: usize,
    /// Positive windows per round: the detector's best windows in as many of the label's images (5).
    pub positives: usize,
    /// Random negative windows per round: the pool less the hard negatives, at least `negatives`
    /// (25,000 and 10,000).
    pub negative_pool: usize,
    pub negatives: usize,
    pub svm: SvmOptions,
    /// Best images of a trained detector that rank it: the share of them carrying the label (50, the
    /// paper's measure; the authors' code counts among 100).
    pub final_neighbours: usize,
    /// Detectors in the result, best first (32).
    pub keep: usize,
    pub precision: Precision,
    pub seed: u64,
}

impl Default for DoerschOptions {
    fn default() -> Self {
        DoerschOptions {
            resize: None,
            candidates: 25_000,
            contrast_threshold: 0.15,
            contrast_trials: 100,
            detectors: 1000,
            neighbours: 50,
            scored_neighbours: 20,
            overlaps: 5,
            overlap_iou: 0.3,
            rounds: 3,
            positives: 5,
            negative_pool: 25_000,
            negatives: 10_000,
            svm: SvmOptions::default(),
            final_neighbours: 50,
            keep: 32,
            precision: Precision::Float32,
            seed: 42,
        }
    }
}

/// Wall time of each stage, and the process's peak resident memory when the stage ended (where the
/// system tells it), so that a benchmark sees which stage raised it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DoerschTimes {
    pub features: Stage,
    pub candidates: Stage,
    pub initial_search: Stage,
    pub selection: Stage,
    pub training: Stage,
    pub final_ranking: Stage,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stage {
    pub wall: Duration,
    pub peak_resident_bytes: Option<u64>,
}

impl Stage {
    fn run<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let value = f()?;
        self.wall += started.elapsed();
        self.peak_resident_bytes = peak_resident_bytes();
        Ok(value)
    }
}

/// The process's peak resident set size (Linux's VmHWM), or None where it is not known.
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The mined detectors of a label in the mining report's terms: each kept detector is a "cluster"
/// whose members are its best windows in the label's images (best first) and whose rank value is its
/// discriminativeness; the maps are the response of the best-ranked detector shown in each image.
#[derive(Debug, Clone)]
pub struct DiscriminativeLabel {
    pub result: LabelResult,
    /// Candidate windows drawn, and detectors kept by the greedy selection.
    pub candidates: usize,
    pub selected: usize,
}

/// Progress: (units done, units in all), a unit being one image searched or one detector trained.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64) -> bool;

/// Counts units of work and reports them; a false answer from the caller cancels.
struct Tracker<'a> {
    done: u64,
    total: u64,
    progress: Progress<'a>,
}

impl Tracker<'_> {
    fn step(&mut self, units: u64) -> Result<()> {
        self.done += units;
        tracing::debug!(done = self.done, total = self.total, "discriminative mining progress");
        if (self.progress)(self.done, self.total) {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }
}

/// Mines every label of `set` against the others.
pub fn mine_discriminative(set: &LabelledSet, options: &DoerschOptions, progress: Progress) -> Result<(Vec<DiscriminativeLabel>, DoerschTimes)> {
    check(options)?;
    let labels = set.labels();
    if labels.len() < 2 {
        return Err(Error::InvalidArgument("discriminative mining needs images of at least two labels".into()));
    }
    let n = set.items.len() as u64;
    let positives_of = |label: &String| set.items.iter().filter(|i| i.labels.contains(label)).count() as u64;
    let per_label = |positives: u64| 2 * n + options.rounds as u64 * (positives + options.detectors as u64);
    let total = labels.iter().map(|l| per_label(positives_of(l))).sum::<u64>() + n;
    let mut tracker = Tracker { done: 0, total, progress };
    let mut times = DoerschTimes::default();
    let images = times.features.run(|| load_windows(&set.items, options, &mut tracker))?;
    let mut results = Vec::with_capacity(labels.len());
    for label in &labels {
        let end = tracker.done + per_label(positives_of(label));
        let positive: Vec<bool> = set.items.iter().map(|i| i.labels.contains(label)).collect();
        results.push(mine_label(set, &images, label, &positive, options, &mut times, &mut tracker)?);
        // Fewer detectors kept than the most allowed: their units count as done.
        let rest = end.saturating_sub(tracker.done);
        tracker.step(rest)?;
    }
    Ok((results, times))
}

fn check(options: &DoerschOptions) -> Result<()> {
    let positive = [
        ("candidates", options.candidates),
        ("detectors", options.detectors),
        ("neighbours", options.neighbours),
        ("rounds", options.rounds),
        ("positives", options.positives),
        ("negatives", options.negatives),
        ("final neighbours", options.final_neighbours),
        ("kept detectors", options.keep),
        ("contrast trials", options.contrast_trials),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(Error::InvalidArgument(format!("discriminative mining: the number of {name} must be positive")));
    }
    if options.scored_neighbours == 0 || options.scored_neighbours > options.neighbours {
        return Err(Error::InvalidArgument(format!(
            "discriminative mining: the scored neighbours ({}) must be between 1 and the neighbours ({})",
            options.scored_neighbours, options.neighbours
        )));
    }
    if !(0.0..1.0).contains(&options.overlap_iou) || !(0.0..=1.0).contains(&options.contrast_threshold) {
        return Err(Error::InvalidArgument(format!(
            "discriminative mining: the overlap IoU ({}) must lie in [0, 1) and the contrast threshold ({}) in [0, 1]",
            options.overlap_iou, options.contrast_threshold
        )));
    }
    Ok(())
}

/// An image as mined: its 8-bit RGB pixels and its windows' features.
struct LoadedImage {
    rgb: image::RgbImage,
    windows: ImageWindows,
}

fn load_windows(items: &[LabelledImage], options: &DoerschOptions, tracker: &mut Tracker) -> Result<Vec<LoadedImage>> {
    let mut images = Vec::with_capacity(items.len());
    for item in items {
        let rgb = to_rgb_image(&item.load(options.resize)?)?;
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        let (grid, values) =
            window_features(Rgb { data: rgb.as_raw(), width, height }).map_err(|e| Error::InvalidArgument(format!("{}: {e}", item.path.display())))?;
        let features = Tensor::from_slice(&values).f_reshape([grid.len() as i64, FEATURE_DIM as i64])?.f_to_kind(options.precision.kind())?;
        images.push(LoadedImage { rgb, windows: ImageWindows { grid, features } });
        tracker.step(1)?;
    }
    Ok(images)
}

/// A first or trained detector and what it found.
struct Detector {
    weights: Tensor,
    neighbours: Vec<Detection>,
}

fn mine_label(
    set: &LabelledSet,
    images: &[LoadedImage],
    label: &str,
    positive: &[bool],
    options: &DoerschOptions,
    times: &mut DoerschTimes,
    tracker: &mut Tracker,
) -> Result<DiscriminativeLabel> {
    let _span = tracing::info_span!("mine_discriminative", label).entered();
    let windows: Vec<&ImageWindows> = images.iter().map(|i| &i.windows).collect();
    let all: Vec<usize> = (0..images.len()).collect();
    let positives: Vec<usize> = all.iter().copied().filter(|&i| positive[i]).collect();
    let negatives: Vec<usize> = all.iter().copied().filter(|&i| !positive[i]).collect();
    if negatives.is_empty() {
        return Err(Error::InvalidArgument(format!("every image carries the label {label}: no negative images to mine it against")));
    }
    let mut rng = SplitMix64::new(options.seed ^ label_seed(label));
    let candidates = times.candidates.run(|| Ok(draw_candidates(images, &positives, options, &mut rng)))?;
    let first = times.initial_search.run(|| {
        let rows: Vec<Tensor> = candidates.iter().map(|&(image, window)| windows[image].features.get(window as i64)).collect();
        let weights = Tensor::f_stack(&rows, 0)?.f_to_kind(Kind::Float)?;
        let found = best_windows(&windows, &all, &weights, None, &mut || tracker.step(1))?;
        Ok(found
            .into_iter()
            .enumerate()
            .map(|(k, hits)| Detector { weights: weights.get(k as i64), neighbours: top(hits, options.neighbours) })
            .collect::<Vec<_>>())
    })?;
    let selected = times.selection.run(|| Ok(select_detectors(first, &windows, positive, options)))?;
    let trained = times.training.run(|| train_detectors(&selected, &windows, &positives, &negatives, options, &mut rng, tracker))?;
    let ranked = times.final_ranking.run(|| rank_detectors(trained, &windows, &all, positive, options, tracker))?;
    let result = label_result(set, images, label, &ranked, positive)?;
    Ok(DiscriminativeLabel { result, candidates: candidates.len(), selected: selected.len() })
}

/// A seed part from the label's name, so that each label draws its own windows.
fn label_seed(label: &str) -> u64 {
    label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Up to `options.candidates` random windows (image, window) of the positive images, visiting the
/// images in a random order round and round; each visit tries up to `contrast_trials` untried windows
/// of the image and takes the first that is not of low contrast.
fn draw_candidates(images: &[LoadedImage], positives: &[usize], options: &DoerschOptions, rng: &mut SplitMix64) -> Vec<(usize, usize)> {
    let mut order = positives.to_vec();
    shuffle(&mut order, rng);
    let mut untried: Vec<Vec<usize>> = order.iter().map(|&i| (0..images[i].windows.grid.len()).collect()).collect();
    let mut chosen = Vec::new();
    while chosen.len() < options.candidates && untried.iter().any(|u| !u.is_empty()) {
        for (slot, &image) in order.iter().enumerate() {
            if chosen.len() == options.candidates {
                break;
            }
            let loaded = &images[image];
            let rgb = Rgb { data: loaded.rgb.as_raw(), width: loaded.rgb.width() as usize, height: loaded.rgb.height() as usize };
            for _ in 0..options.contrast_trials {
                let pool = &mut untried[slot];
                if pool.is_empty() {
                    break;
                }
                let window = pool.swap_remove(rng.below(pool.len() as u64) as usize);
                let (x, y) = loaded.windows.grid.origin(window);
                if !is_low_contrast(rgb, x, y, options.contrast_threshold) {
                    chosen.push((image, window));
                    break;
                }
            }
        }
    }
    chosen
}

fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// The first detectors ordered by how many of their first `scored_neighbours` neighbours carry the
/// label (ties: the order drawn), each kept unless more than `overlaps` pairs of its neighbours'
/// windows and one kept detector's overlap (IoU above `overlap_iou`), up to `detectors`.
fn select_detectors(first: Vec<Detector>, windows: &[&ImageWindows], positive: &[bool], options: &DoerschOptions) -> Vec<Detector> {
    let score = |d: &Detector| d.neighbours.iter().take(options.scored_neighbours).filter(|n| positive[n.image]).count();
    let mut order: Vec<(usize, Detector)> = first.into_iter().map(|d| (score(&d), d)).collect();
    order.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    let mut kept: Vec<Detector> = Vec::new();
    for (_, candidate) in order {
        if kept.len() == options.detectors {
            break;
        }
        let clashes = |other: &Detector| {
            let mut count = 0;
            for a in &candidate.neighbours {
                for b in other.neighbours.iter().filter(|b| b.image == a.image) {
                    let grid = windows[a.image].grid;
                    if iou(grid.origin(a.window), grid.origin(b.window)) > options.overlap_iou {
                        count += 1;
                    }
                }
            }
            count > options.overlaps
        };
        if !kept.iter().any(clashes) {
            kept.push(candidate);
        }
    }
    kept
}

/// Intersection over union of two windows given by their top-left corners.
fn iou((ax, ay): (usize, usize), (bx, by): (usize, usize)) -> f64 {
    let overlap = |a: usize, b: usize| (a.min(b) + WINDOW).saturating_sub(a.max(b)) as f64;
    let inter = overlap(ax, bx) * overlap(ay, by);
    let area = (WINDOW * WINDOW) as f64;
    inter / (2.0 * area - inter)
}

/// The window positions of `image` a training round may use: a random `share` of them, the same for
/// every detector of the round.
fn fold_windows(grid: WindowGrid, seed: u64, round: usize, image: usize, share: (usize, usize)) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ ((round as u64) << 48) ^ (image as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut all: Vec<usize> = (0..grid.len()).collect();
    shuffle(&mut all, &mut rng);
    all.truncate((grid.len() * share.0 / share.1).max(1));
    all
}

/// Three (`rounds`) rounds of training per detector: positives are its best windows in `positives`
/// of the label's images, negatives random windows of the other labels' images plus the hard
/// negatives of the rounds before; the new hard negatives are the random negatives it scores above 0.
fn train_detectors(
    selected: &[Detector],
    windows: &[&ImageWindows],
    positives: &[usize],
    negatives: &[usize],
    options: &DoerschOptions,
    rng: &mut SplitMix64,
    tracker: &mut Tracker,
) -> Result<Vec<Tensor>> {
    if selected.is_empty() {
        return Ok(Vec::new());
    }
    let mut weights = Tensor::f_stack(&selected.iter().map(|d| d.weights.shallow_clone()).collect::<Vec<_>>(), 0)?;
    let mut hard: Vec<Option<Tensor>> = (0..selected.len()).map(|_| None).collect();
    let fold_seed = rng.next_u64();
    for round in 0..options.rounds {
        let share = (round + 1, options.rounds);
        let positions: BTreeMap<usize, Vec<usize>> =
            positives.iter().chain(negatives).map(|&i| (i, fold_windows(windows[i].grid, fold_seed, round, i, share))).collect();
        let masks: BTreeMap<usize, Tensor> = positions
            .iter()
            .map(|(&i, allowed)| {
                let mut mask = vec![false; windows[i].grid.len()];
                allowed.iter().for_each(|&w| mask[w] = true);
                (i, Tensor::from_slice(&mask))
            })
            .collect();
        let allowed = |image: usize| masks[&image].shallow_clone();
        let found = best_windows(windows, positives, &weights, Some(&allowed), &mut || tracker.step(1))?;
        let mut next = Vec::with_capacity(selected.len());
        for (k, hits) in found.into_iter().enumerate() {
            let best: Vec<Tensor> = top(hits, options.positives).iter().map(|d| windows[d.image].features.get(d.window as i64)).collect();
            let pool = options.negative_pool.saturating_sub(hard[k].as_ref().map_or(0, |h| h.size()[0] as usize)).max(options.negatives);
            let random = sample_negatives(windows, negatives, &positions, pool, rng)?;
            let (w, new_hard) = train_round(&best, hard[k].as_ref(), &random, pool, &options.svm)?;
            hard[k] = Some(match hard[k].take() {
                Some(h) => Tensor::f_cat(&[h, new_hard], 0)?,
                None => new_hard,
            });
            next.push(w);
            tracker.step(1)?;
        }
        weights = Tensor::f_stack(&next, 0)?;
    }
    Ok((0..selected.len()).map(|k| weights.get(k as i64)).collect())
}

/// `count` random windows of the negative images, among each image's allowed `positions` (f32 rows).
fn sample_negatives(
    windows: &[&ImageWindows],
    negatives: &[usize],
    positions: &BTreeMap<usize, Vec<usize>>,
    count: usize,
    rng: &mut SplitMix64,
) -> Result<Tensor> {
    let mut by_image: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for _ in 0..count {
        let image = negatives[rng.below(negatives.len() as u64) as usize];
        let allowed = &positions[&image];
        by_image.entry(image).or_default().push(allowed[rng.below(allowed.len() as u64) as usize] as i64);
    }
    let mut parts = Vec::with_capacity(by_image.len());
    for (image, rows) in by_image {
        parts.push(windows[image].features.f_index_select(0, &Tensor::from_slice(&rows))?);
    }
    Ok(Tensor::f_cat(&parts, 0)?.f_to_kind(Kind::Float)?)
}

/// One round of one detector: the SVM on [positives; hard negatives; random negatives], and the random
/// negatives it scores above 0, highest first, at most `most`.
fn train_round(positives: &[Tensor], hard: Option<&Tensor>, random: &Tensor, most: usize, svm: &SvmOptions) -> Result<(Tensor, Tensor)> {
    let positive_rows = Tensor::f_stack(positives, 0)?.f_to_kind(Kind::Float)?;
    let mut parts = vec![positive_rows.shallow_clone()];
    parts.extend(hard.map(Tensor::shallow_clone));
    parts.push(random.shallow_clone());
    let x = Tensor::f_cat(&parts, 0)?;
    let negatives = x.size()[0] as usize - positives.len();
    let labels: Vec<bool> = (0..positives.len()).map(|_| true).chain((0..negatives).map(|_| false)).collect();
    let model = train(&x, &labels, svm)?;
    let weights = Tensor::from_slice(&model.weights);
    let scores = Vec::<f32>::try_from(random.f_mv(&weights)?.f_add_scalar(model.bias)?)?;
    let mut above: Vec<(f32, i64)> = scores.into_iter().enumerate().filter(|(_, s)| *s > 0.0).map(|(i, s)| (s, i as i64)).collect();
    above.sort_by(|a, b| b.0.total_cmp(&a.0));
    above.truncate(most);
    let rows: Vec<i64> = above.into_iter().map(|(_, i)| i).collect();
    Ok((weights, random.f_index_select(0, &Tensor::from_slice(&rows))?))
}

/// A trained detector with its best images over the whole set and its discriminativeness.
struct Ranked {
    weights: Tensor,
    neighbours: Vec<Detection>,
    discriminativeness: f32,
}

/// Every trained detector's best `final_neighbours` images (one window each), the share of them
/// carrying the label; the `keep` best detectors by that share (ties: the selection order).
fn rank_detectors(
    trained: Vec<Tensor>,
    windows: &[&ImageWindows],
    all: &[usize],
    positive: &[bool],
    options: &DoerschOptions,
    tracker: &mut Tracker,
) -> Result<Vec<Ranked>> {
    if trained.is_empty() {
        tracker.step(all.len() as u64)?;
        return Ok(Vec::new());
    }
    let weights = Tensor::f_stack(&trained, 0)?;
    let found = best_windows(windows, all, &weights, None, &mut || tracker.step(1))?;
    let mut ranked: Vec<Ranked> = found
        .into_iter()
        .zip(trained)
        .map(|(hits, weights)| {
            let neighbours = top(hits, options.final_neighbours);
            let hits = neighbours.iter().filter(|d| positive[d.image]).count();
            Ranked { weights, discriminativeness: hits as f32 / neighbours.len().max(1) as f32, neighbours }
        })
        .collect();
    ranked.sort_by(|a, b| b.discriminativeness.total_cmp(&a.discriminativeness));
    ranked.truncate(options.keep);
    Ok(ranked)
}

/// The result in the mining report's terms: each detector a cluster of its detections in the label's
/// images; each image shown gets the response map of the best-ranked detector that found it.
fn label_result(set: &LabelledSet, images: &[LoadedImage], label: &str, ranked: &[Ranked], positive: &[bool]) -> Result<LabelResult> {
    let mut patches = Vec::new();
    let mut clusters = Vec::with_capacity(ranked.len());
    let mut maps = BTreeMap::new();
    let mut image_sizes = BTreeMap::new();
    for (rank, detector) in ranked.iter().enumerate() {
        let first = patches.len();
        for (rank_in_cluster, d) in detector.neighbours.iter().filter(|d| positive[d.image]).enumerate() {
            let path = set.items[d.image].path.clone();
            let (x, y) = images[d.image].windows.grid.origin(d.window);
            if !maps.contains_key(&path) {
                maps.insert(path.clone(), response_map(&images[d.image], &detector.weights)?);
                image_sizes.insert(path.clone(), (images[d.image].rgb.height() as usize, images[d.image].rgb.width() as usize));
            }
            patches.push(MinedPatch { path, patch: PatchBox { x, y, size: WINDOW, score: d.score }, cluster_rank: rank, rank_in_cluster, distance: 0.0 });
        }
        clusters.push(RankedCluster { id: rank, members: (first..patches.len()).collect(), median_typicality: detector.discriminativeness });
    }
    let shown: std::collections::BTreeSet<&PathBuf> = patches.iter().map(|p| &p.path).collect();
    let in_memory = set.items.iter().filter(|i| shown.contains(&i.path)).filter_map(|i| Some((i.path.clone(), i.pixels.clone()?))).collect();
    Ok(LabelResult { label: label.to_string(), patches, clusters, image_sizes, in_memory, maps, times: Default::default(), skipped: Vec::new() })
}

/// A detector's response over an image, one value per 8 × 8 cell: the best score of the windows
/// covering the cell.
fn response_map(image: &LoadedImage, weights: &Tensor) -> Result<Array2<f32>> {
    let grid = image.windows.grid;
    let scores = Vec::<f32>::try_from(image.windows.features.f_to_kind(Kind::Float)?.f_mv(weights)?)?;
    let (rows, cols) = (image.rgb.height() as usize / STRIDE, image.rgb.width() as usize / STRIDE);
    let span = WINDOW / STRIDE;
    let mut map = Array2::from_elem((rows, cols), f32::NEG_INFINITY);
    for (index, &score) in scores.iter().enumerate() {
        let (r, c) = (index / grid.cols, index % grid.cols);
        for y in r..r + span {
            for x in c..c + span {
                map[[y, x]] = map[[y, x]].max(score);
            }
        }
    }
    Ok(map)
}
