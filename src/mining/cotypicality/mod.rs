//! Mining co-typical elements over parallel sets (the paper's Section 5.1): each image is translated to
//! every other label ([`parallel_set`]); a [`CotypicalMiner`] takes the sets one at a time, scores each
//! version's typicality for its own label, keeps the set's best boxes by co-typicality (the median over
//! the versions) with every version's DIFT feature of each box, and at the end keeps the best boxes
//! overall, projects their features ([`sequence_features`], UMAP by default), clusters them with k-means and ranks the
//! clusters by the median co-typicality of their members.
//!
//! Memory is bounded by the boxes kept (at most `top`, each with one feature per version), not by the
//! number of images: a set's versions can be dropped once added. [`mine_parallel_sets`] runs the
//! whole loop over source images.
pub mod elements;
pub mod report;
mod run;
pub mod umap;

use std::collections::HashMap;

use tch::Tensor;

use crate::error::{Error, Result};
use crate::mining::cluster::{kmeans, rank_clusters, ClusterOptions, RankedCluster};
use crate::mining::dift::{box_feature, dift_features, DiftOptions};
use crate::mining::patches::{top_patches, ImagePatch, PatchBox};
use crate::model::StableDiffusion;
use crate::translate::{translate, TranslateOptions};
use crate::typicality::{typicality, Progress, TypicalityOptions};
pub use elements::Projection;
use elements::{cotypical_patches, sequence_features};
pub use run::{mine_parallel_sets, ParallelSource};

#[derive(Debug)]
pub struct ParallelMiningOptions {
    /// Label prompt with `{label}` and the null prompt of typicality: the captions the model was
    /// finetuned with. The translations' prompts use the same template.
    pub prompt_template: String,
    pub null_prompt: String,
    pub translate: TranslateOptions,
    pub typicality: TypicalityOptions,
    pub dift: DiftOptions,
    pub cluster: ClusterOptions,
    /// Side k of the square patches (64).
    pub patch_size: usize,
    /// Boxes kept per parallel set (5) and overall (10 000).
    pub per_set: usize,
    pub top: usize,
    /// Dimensions each version's DIFT feature is projected to (32).
    pub projection_dims: usize,
    /// How they are projected: UMAP with 15 neighbours (the authors'), or PCA.
    pub projection: Projection,
    /// Resize each source so its shorter side has this many pixels first (None: as it is).
    pub resize: Option<usize>,
}

impl Default for ParallelMiningOptions {
    fn default() -> Self {
        ParallelMiningOptions {
            prompt_template: "Image of {label}.".into(),
            null_prompt: String::new(),
            translate: TranslateOptions::default(),
            typicality: TypicalityOptions::default(),
            dift: DiftOptions::default(),
            cluster: ClusterOptions::default(),
            patch_size: 64,
            per_set: 5,
            top: 10_000,
            projection_dims: 32,
            projection: Projection::default(),
            resize: None,
        }
    }
}

impl ParallelMiningOptions {
    pub fn prompt(&self, label: &str) -> String {
        self.prompt_template.replace("{label}", label)
    }
}

/// One image in every label: `versions` (L, 3, H, W) in label order, the source label's being the
/// image itself and the others its translations.
pub struct ParallelSet {
    pub source: usize,
    pub versions: Tensor,
}

/// Translates `image` (1, 3, H, W) of label `labels[source]` to every other label, in one batch.
pub fn parallel_set(
    model: &StableDiffusion,
    image: &Tensor,
    source: usize,
    labels: &[String],
    options: &ParallelMiningOptions,
    progress: Progress,
) -> Result<ParallelSet> {
    if source >= labels.len() || labels.len() < 2 {
        return Err(Error::InvalidArgument(format!("source label {source} of {} labels: a parallel set needs the source among at least 2", labels.len())));
    }
    let prompts: Vec<String> = labels.iter().map(|l| options.prompt(l)).collect();
    let targets: Vec<&str> = prompts.iter().enumerate().filter(|&(i, _)| i != source).map(|(_, p)| p.as_str()).collect();
    // Clamped to the range of real images, as a saved translation would be.
    let translated = translate(model, image, &prompts[source], &targets, &options.translate, progress)?.images.f_clamp(-1.0, 1.0)?;
    let mut versions: Vec<Tensor> = (0..translated.size()[0]).map(|i| translated.get(i)).collect();
    versions.insert(source, image.f_squeeze_dim(0)?.f_to_kind(tch::Kind::Float)?.f_to_device(tch::Device::Cpu)?);
    Ok(ParallelSet { source, versions: Tensor::f_stack(&versions, 0)? })
}

/// A box of a parallel set with its versions' DIFT features (L, C).
struct Candidate {
    patch: ImagePatch,
    features: Tensor,
}

/// A kept box and its place in the clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct CotypicalElement {
    /// The parallel set's index, in the order the sets were added.
    pub set: usize,
    pub patch: PatchBox,
    /// Rank of its cluster (0: highest median co-typicality).
    pub cluster_rank: usize,
    /// Its rank inside the cluster (0: closest to the centroid).
    pub rank_in_cluster: usize,
    pub distance: f32,
}

pub struct CotypicalResult {
    /// Every kept box, in cluster rank order then rank in cluster.
    pub elements: Vec<CotypicalElement>,
    /// Clusters in rank order; their `members` index `elements`.
    pub clusters: Vec<RankedCluster>,
}

pub struct CotypicalMiner<'a> {
    model: &'a StableDiffusion,
    labels: Vec<String>,
    options: &'a ParallelMiningOptions,
    candidates: Vec<Candidate>,
    sets: usize,
}

impl<'a> CotypicalMiner<'a> {
    pub fn new(model: &'a StableDiffusion, labels: Vec<String>, options: &'a ParallelMiningOptions) -> Result<Self> {
        if labels.len() < 2 {
            return Err(Error::InvalidArgument("co-typicality needs at least 2 labels".into()));
        }
        if options.per_set == 0 || options.top == 0 {
            return Err(Error::InvalidArgument("boxes per set and overall must be at least 1".into()));
        }
        Ok(CotypicalMiner { model, labels, options, candidates: Vec::new(), sets: 0 })
    }

    /// Scores a parallel set and keeps its best boxes with their features. Progress after each
    /// version's typicality and DIFT: (units done, 2·L).
    pub fn add_set(&mut self, set: &ParallelSet, progress: Progress) -> Result<()> {
        let _span = tracing::info_span!("cotypical_set", set = self.sets).entered();
        let (count, _, height, width) = set.versions.size4()?;
        if count as usize != self.labels.len() {
            return Err(Error::InvalidArgument(format!("a parallel set must hold {} versions, got {count}", self.labels.len())));
        }
        let (h, w) = (height as usize, width as usize);
        let total = 2 * count as u64;
        let mut maps = Vec::with_capacity(count as usize);
        for (v, label) in self.labels.iter().enumerate() {
            let image = set.versions.f_narrow(0, v as i64, 1)?;
            let map = typicality(self.model, &image, &self.options.prompt(label), &self.options.null_prompt, &self.options.typicality, &mut |_, _| true)?.map;
            maps.push(Vec::<f32>::try_from(map.f_flatten(0, -1)?)?);
            report(progress, v as u64 + 1, total)?;
        }
        let views: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let boxes = cotypical_patches(&views, h, w, self.options.patch_size.min(h).min(w), self.options.per_set)?;
        let mut features: Vec<Vec<Tensor>> = boxes.iter().map(|_| Vec::with_capacity(count as usize)).collect();
        for (v, label) in self.labels.iter().enumerate() {
            let image = set.versions.f_narrow(0, v as i64, 1)?;
            let dift = dift_features(self.model, &image, &self.options.prompt(label), &self.options.dift)?;
            for (patch, rows) in boxes.iter().zip(features.iter_mut()) {
                rows.push(box_feature(&dift, patch, h, w)?);
            }
            report(progress, count as u64 + v as u64 + 1, total)?;
        }
        for (patch, rows) in boxes.into_iter().zip(features) {
            self.candidates.push(Candidate { patch: ImagePatch { image: self.sets, patch }, features: Tensor::f_stack(&rows, 0)? });
        }
        self.sets += 1;
        self.keep_top();
        Ok(())
    }

    /// Keeps only the boxes that can still make the overall top, best first.
    fn keep_top(&mut self) {
        let ranked = top_patches(self.candidates.iter().map(|c| c.patch).collect(), self.options.top);
        let mut by_place: HashMap<(usize, usize, usize), Candidate> =
            self.candidates.drain(..).map(|c| ((c.patch.image, c.patch.patch.y, c.patch.patch.x), c)).collect();
        self.candidates = ranked.iter().filter_map(|p| by_place.remove(&(p.image, p.patch.y, p.patch.x))).collect();
    }

    /// Keeps the best boxes overall, clusters their feature sequences and ranks the clusters.
    pub fn finish(mut self) -> Result<CotypicalResult> {
        self.keep_top();
        if self.candidates.is_empty() {
            return Err(Error::InvalidArgument("no boxes to cluster: add parallel sets first".into()));
        }
        let ranked: Vec<ImagePatch> = self.candidates.iter().map(|c| c.patch).collect();
        let kept: Vec<&Tensor> = self.candidates.iter().map(|c| &c.features).collect();
        // versions[v]: the kept boxes' features in version v.
        let versions: Vec<Tensor> = (0..self.labels.len() as i64)
            .map(|v| Tensor::f_stack(&kept.iter().map(|f| f.get(v)).collect::<Vec<_>>(), 0))
            .collect::<std::result::Result<_, _>>()?;
        let dims = self.options.projection_dims.min(kept.len()).min(versions[0].size()[1] as usize);
        let sequences = sequence_features(&versions, dims, &self.options.projection)?;
        let clustering = kmeans(&sequences, &self.options.cluster)?;
        let scores: Vec<f32> = ranked.iter().map(|p| p.patch.score).collect();
        let mut elements = Vec::with_capacity(ranked.len());
        let mut clusters = Vec::new();
        for (cluster_rank, cluster) in rank_clusters(&clustering, &scores).into_iter().enumerate() {
            let first = elements.len();
            for (rank_in_cluster, &member) in cluster.members.iter().enumerate() {
                let p = &ranked[member];
                elements.push(CotypicalElement { set: p.image, patch: p.patch, cluster_rank, rank_in_cluster, distance: clustering.distances[member] });
            }
            clusters.push(RankedCluster { members: (first..elements.len()).collect(), ..cluster });
        }
        Ok(CotypicalResult { elements, clusters })
    }
}

fn report(progress: Progress, done: u64, total: u64) -> Result<()> {
    if progress(done, total) {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}
