//! `mine` (typical elements of each label) and `parallel-mine` (co-typical elements across labels).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use diffmine::dataset::LabelledSet;
use diffmine::mining::cluster::ClusterOptions;
use diffmine::mining::cotypicality::report::{write_parallel_report, ParallelReportOptions, ReportSource, VersionStore};
use diffmine::mining::cotypicality::{mine_parallel_sets, ParallelMiningOptions, ParallelSource, Projection};
use diffmine::mining::dift::DiftOptions;
use diffmine::mining::miner::{mine, MiningOptions, StageTimes};
use diffmine::mining::report::{write_comparison, write_report, ReportOptions};
use diffmine::typicality::TypicalityOptions;
use diffmine::Result;

use crate::options::{ModelArgs, PnpArgs};
use crate::progress::Progress;
use crate::typicality::SamplingArgs;

#[derive(Args, Debug)]
pub struct MineArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A folder with a subfolder of images per label, or a CSV of `path,label` rows.
    #[arg(long, value_name = "DIR_OR_CSV")]
    data: PathBuf,
    /// Where the visual summary (index.html and its images) is written.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The label prompt, `{label}` standing for the label.
    #[arg(long, default_value_t = MiningOptions::default().prompt_template)]
    prompt: String,
    /// The prompt the label prompt is compared with.
    #[arg(long, default_value_t = MiningOptions::default().null_prompt)]
    null_prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Images are resized so their shorter side has this many pixels (default: as they are).
    #[arg(long, value_name = "SHORT_SIDE")]
    resize: Option<usize>,
    #[command(flatten)]
    patches: PatchArgs,
    /// Typicality maps and features are cached here, keyed by model (default: OUT/cache).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// A second model mined the same way and shown beside the first in one report.
    #[arg(long, value_name = "DIR")]
    baseline: Option<PathBuf>,
    /// Components the baseline folder lacks come from DIR.
    #[arg(long, value_name = "DIR", requires = "baseline")]
    baseline_base: Option<PathBuf>,
}

/// Which patches are kept and how they are clustered.
#[derive(Args, Debug)]
struct PatchArgs {
    /// Side of the square patches, in pixels.
    #[arg(long, default_value_t = MiningOptions::default().patch_size, help_heading = "Patches and clusters")]
    patch: usize,
    /// Patches kept per image.
    #[arg(long, default_value_t = MiningOptions::default().per_image, help_heading = "Patches and clusters")]
    per_image: usize,
    /// Patches kept per label.
    #[arg(long, default_value_t = MiningOptions::default().top, help_heading = "Patches and clusters")]
    top: usize,
    /// DIFT features averaged over this many noise draws.
    #[arg(long, default_value_t = DiftOptions::default().ensemble, help_heading = "Patches and clusters")]
    ensemble: usize,
    /// k of k-means.
    #[arg(long, default_value_t = ClusterOptions::default().clusters, help_heading = "Patches and clusters")]
    clusters: usize,
    /// k-means runs from different starts; the best is kept.
    #[arg(long, default_value_t = ClusterOptions::default().restarts, help_heading = "Patches and clusters")]
    restarts: usize,
}

impl PatchArgs {
    fn dift(&self) -> DiftOptions {
        DiftOptions { ensemble: self.ensemble, ..DiftOptions::default() }
    }

    fn cluster(&self) -> ClusterOptions {
        ClusterOptions { clusters: self.clusters, restarts: self.restarts, ..ClusterOptions::default() }
    }
}

impl MineArgs {
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        let set = LabelledSet::open(&self.data)?;
        let options = MiningOptions {
            prompt_template: self.prompt.clone(),
            null_prompt: self.null_prompt.clone(),
            typicality: self.sampling.options(),
            resize: self.resize,
            patch_size: self.patches.patch,
            per_image: self.patches.per_image,
            top: self.patches.top,
            dift: self.patches.dift(),
            cluster: self.patches.cluster(),
            cache_dir: Some(self.cache.clone().unwrap_or_else(|| self.out.join("cache"))),
        };
        let started = Instant::now();
        let results = mine(&model, &set, &options, &mut Progress::new("steps").callback())?;
        let baseline_results = match &self.baseline {
            None => None,
            // The caches are keyed by model, so both models can share the cache folder.
            Some(baseline) => {
                let baseline = self.model.other(baseline, self.baseline_base.as_deref()).open()?;
                Some(mine(&baseline, &set, &options, &mut Progress::new("steps").callback())?)
            }
        };
        let report_started = Instant::now();
        let report_options = ReportOptions { resize: self.resize, ..ReportOptions::default() };
        match &baseline_results {
            None => write_report(&results, &report_options, &self.out)?,
            Some(baseline) => write_comparison(&[("model", &results), ("baseline", baseline)], &report_options, &self.out)?,
        }
        let report_time = report_started.elapsed();
        for r in &results {
            let skipped = match r.skipped.len() {
                0 => String::new(),
                1 => ", 1 unreadable image skipped".to_string(),
                n => format!(", {n} unreadable images skipped"),
            };
            println!("{}: {} patches, {} clusters{skipped}", r.label, r.patches.len(), r.clusters.len());
        }
        let times = results.iter().chain(baseline_results.iter().flatten()).map(|r| r.times).sum();
        print_stage_times(&times, report_time);
        println!("mined {} images in {:.0} s; report: {}", set.items.len(), started.elapsed().as_secs_f64(), self.out.join("index.html").display());
        Ok(())
    }
}

/// One line of where the mining's time went (both models' together with `--baseline`);
/// benches/mining.sh reads it.
fn print_stage_times(times: &StageTimes, report: Duration) {
    println!(
        "stage times: typicality {:.4} s, patches {:.4} s, DIFT {:.4} s, clustering {:.4} s, report {:.4} s",
        times.typicality.as_secs_f64(),
        times.patches.as_secs_f64(),
        times.dift.as_secs_f64(),
        times.clustering.as_secs_f64(),
        report.as_secs_f64()
    );
}

#[derive(Args, Debug)]
pub struct ParallelMineArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A folder with a subfolder of images per label, or a CSV of `path,label` rows; images with
    /// several labels are left out (a parallel set translates from one source label).
    #[arg(long, value_name = "DIR_OR_CSV")]
    data: PathBuf,
    /// Writes elements.csv, versions/, strip_<rank>.png and index.html here.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The label prompt of typicality and of the translations, `{label}` standing for the label.
    #[arg(long, default_value_t = ParallelMiningOptions::default().prompt_template)]
    prompt: String,
    /// The null prompt of typicality and of the translations' unconditional rows.
    #[arg(long, default_value_t = ParallelMiningOptions::default().null_prompt)]
    null_prompt: String,
    /// Seed of typicality, of the translations' posterior sample and of UMAP.
    #[arg(long, default_value_t = ParallelMiningOptions::default().typicality.seed)]
    seed: u64,
    #[command(flatten)]
    pnp: PnpArgs,
    /// Images are resized so their shorter side has this many pixels (default: as they are).
    #[arg(long, value_name = "SHORT_SIDE")]
    resize: Option<usize>,
    /// Typicality samples per version.
    #[arg(long, default_value_t = ParallelMiningOptions::default().typicality.samples, help_heading = "Patches and clusters")]
    samples: usize,
    /// DIFT features averaged over this many noise draws.
    #[arg(long, default_value_t = ParallelMiningOptions::default().dift.ensemble, help_heading = "Patches and clusters")]
    ensemble: usize,
    /// Side of the square patches, in pixels.
    #[arg(long, default_value_t = ParallelMiningOptions::default().patch_size, help_heading = "Patches and clusters")]
    patch: usize,
    /// Patches kept per parallel set.
    #[arg(long, default_value_t = ParallelMiningOptions::default().per_set, help_heading = "Patches and clusters")]
    per_set: usize,
    /// Patches kept overall.
    #[arg(long, default_value_t = ParallelMiningOptions::default().top, help_heading = "Patches and clusters")]
    top: usize,
    /// k of k-means.
    #[arg(long, default_value_t = ParallelMiningOptions::default().cluster.clusters, help_heading = "Patches and clusters")]
    clusters: usize,
    /// k-means runs from different starts; the best is kept.
    #[arg(long, default_value_t = ParallelMiningOptions::default().cluster.restarts, help_heading = "Patches and clusters")]
    restarts: usize,
    /// How each version's features are projected before clustering (UMAP as the authors, or PCA).
    #[arg(long, value_enum, default_value_t = ParallelMiningOptions::default().projection.into(), help_heading = "Patches and clusters")]
    projection: ProjectionKind,
    /// UMAP's neighbours.
    #[arg(long, default_value_t = default_neighbors(), help_heading = "Patches and clusters")]
    neighbors: usize,
    /// Strip figures written, from the top-ranked cluster.
    #[arg(long, default_value_t = ParallelReportOptions::default().strips, help_heading = "Report")]
    strips: usize,
    /// Elements per strip figure.
    #[arg(long, default_value_t = ParallelReportOptions::default().per_strip, help_heading = "Report")]
    per_strip: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum ProjectionKind {
    Umap,
    Pca,
}

impl From<Projection> for ProjectionKind {
    fn from(projection: Projection) -> Self {
        match projection {
            Projection::Umap { .. } => ProjectionKind::Umap,
            Projection::Pca => ProjectionKind::Pca,
        }
    }
}

/// UMAP's neighbours in the library's default projection (which is UMAP; were it PCA, 0 would say
/// there is no default to follow).
fn default_neighbors() -> usize {
    match ParallelMiningOptions::default().projection {
        Projection::Umap { neighbors, .. } => neighbors,
        Projection::Pca => 0,
    }
}

impl ParallelMineArgs {
    fn options(&self) -> ParallelMiningOptions {
        let d = ParallelMiningOptions::default();
        ParallelMiningOptions {
            prompt_template: self.prompt.clone(),
            null_prompt: self.null_prompt.clone(),
            translate: self.pnp.options(&self.null_prompt, self.seed),
            typicality: TypicalityOptions { samples: self.samples, seed: self.seed, ..d.typicality },
            dift: DiftOptions { ensemble: self.ensemble, ..d.dift },
            cluster: ClusterOptions { clusters: self.clusters, restarts: self.restarts, ..d.cluster },
            patch_size: self.patch,
            per_set: self.per_set,
            top: self.top,
            resize: self.resize,
            projection: match self.projection {
                ProjectionKind::Umap => Projection::Umap { neighbors: self.neighbors, seed: self.seed },
                ProjectionKind::Pca => Projection::Pca,
            },
            ..d
        }
    }

    /// Mines co-typical elements over the parallel sets of every image that has exactly one label.
    pub fn run(self) -> Result<()> {
        let versions_dir = self.out.join("versions");
        let fresh = !versions_dir.exists();
        let result = self.mine(&versions_dir);
        // A failed or cancelled run leaves no partial set of versions behind (one from an earlier run
        // stays: it is overwritten set by set).
        if result.is_err() && fresh {
            let _ = std::fs::remove_dir_all(&versions_dir);
        }
        result
    }

    fn mine(&self, versions_dir: &Path) -> Result<()> {
        let model = self.model.open()?;
        let data = LabelledSet::open(&self.data)?;
        let labels = data.labels();
        let versions = VersionStore::create(versions_dir)?;
        let options = self.options();
        let report_options = ParallelReportOptions { strips: self.strips, per_strip: self.per_strip };
        let (sources, left_out) = ParallelSource::from_set(&data, &labels);
        if left_out > 0 {
            tracing::warn!("{left_out} images with several labels left out");
        }
        let started = Instant::now();
        let mut progress = Progress::new("steps");
        let result = mine_parallel_sets(&model, &labels, &sources, &options, &versions, &mut progress.callback())?;
        drop(progress);
        let report_sources: Vec<ReportSource> = sources.iter().map(ParallelSource::report_source).collect();
        let strips = write_parallel_report(&result, &report_sources, &labels, &versions, &report_options, &self.out)?;
        println!(
            "{} parallel sets in {:.0} s: {} elements in {} clusters; wrote {strips} strip figures; report: {}",
            sources.len(),
            started.elapsed().as_secs_f64(),
            result.elements.len(),
            result.clusters.len(),
            self.out.join("index.html").display()
        );
        Ok(())
    }
}
