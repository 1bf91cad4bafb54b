//! A whole co-typicality mining run over source images, the one loop the CLI, the C API and Python
//! share: each source is loaded, translated to every other label, its parallel set's versions saved
//! (the report's strips are cut from them) and the set handed to a [`CotypicalMiner`]; progress is
//! counted in one unit and returning false from it cancels.
use std::path::PathBuf;

use super::report::{ReportSource, VersionStore};
use super::{parallel_set, CotypicalMiner, CotypicalResult, ParallelMiningOptions};
use crate::dataset::{load_image_or_pixels, LabelledSet, Pixels};
use crate::error::Result;
use crate::model::StableDiffusion;
use crate::typicality::Progress;

/// A source image of a parallel set and the index of its label among the run's labels.
#[derive(Debug, Clone)]
pub struct ParallelSource {
    /// The image file, or for an image held in memory the name it goes by in results and reports.
    pub path: PathBuf,
    /// The pixels of an image held in memory (None: read the file at `path`).
    pub pixels: Option<Pixels>,
    pub label: usize,
}

impl ParallelSource {
    /// The sources of a labelled set, in set order: its images with exactly one label among `labels`
    /// (a parallel set is translated from one source label); and how many images were left out.
    pub fn from_set(set: &LabelledSet, labels: &[String]) -> (Vec<ParallelSource>, usize) {
        let sources: Vec<ParallelSource> = set
            .items
            .iter()
            .filter_map(|item| match item.labels.as_slice() {
                [label] => labels.iter().position(|l| l == label).map(|label| ParallelSource { path: item.path.clone(), pixels: item.pixels.clone(), label }),
                _ => None,
            })
            .collect();
        let left_out = set.items.len() - sources.len();
        (sources, left_out)
    }

    /// The source as the report names it.
    pub fn report_source(&self) -> ReportSource {
        ReportSource { name: self.path.to_string_lossy().into_owned(), label: self.label }
    }
}

/// Translates each source to every other label, saves each parallel set's versions into `versions`
/// (set index: the source's) as it is made, so memory stays bounded by the miner's kept boxes, and
/// mines the sets. Progress: (units done, sources × (inversion steps + sampling steps + 2 × labels)),
/// after each UNet call of a translation and after each version's typicality and DIFT.
pub fn mine_parallel_sets(
    model: &StableDiffusion,
    labels: &[String],
    sources: &[ParallelSource],
    options: &ParallelMiningOptions,
    versions: &VersionStore,
    progress: Progress,
) -> Result<CotypicalResult> {
    let translation = (options.translate.inversion_steps + options.translate.steps) as u64;
    let per_set = translation + 2 * labels.len() as u64;
    let total = per_set * sources.len() as u64;
    let mut miner = CotypicalMiner::new(model, labels.to_vec(), options)?;
    for (i, source) in sources.iter().enumerate() {
        let offset = i as u64 * per_set;
        let image = load_image_or_pixels(&source.path, source.pixels.as_ref(), options.resize)?;
        let set = parallel_set(model, &image, source.label, labels, options, &mut |done, _| progress(offset + done, total))?;
        versions.save(i, &set)?;
        miner.add_set(&set, &mut |done, _| progress(offset + translation + done, total))?;
    }
    miner.finish()
}
