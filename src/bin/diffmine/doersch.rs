//! `doersch`: the discriminative mining baseline (Doersch et al.) on a labelled set, written as the
//! same report as `mine`.
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use diffmine::dataset::LabelledSet;
use diffmine::mining::doersch::{mine_discriminative, DoerschOptions, DoerschTimes, Precision, Stage};
use diffmine::mining::report::{write_report, ReportOptions, Scores};
use diffmine::Result;

use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct DoerschArgs {
    /// A folder with a subfolder of images per label, or a CSV of `path,label` rows (two labels at least).
    #[arg(long, value_name = "DIR_OR_CSV")]
    data: PathBuf,
    /// Where the report (index.html and its images) is written.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Images are resized so their shorter side has this many pixels (default: as they are).
    #[arg(long, value_name = "SHORT_SIDE")]
    resize: Option<usize>,
    /// Random candidate windows per label.
    #[arg(long, default_value_t = DoerschOptions::default().candidates)]
    candidates: usize,
    /// Detectors kept by the greedy selection, per label.
    #[arg(long, default_value_t = DoerschOptions::default().detectors)]
    detectors: usize,
    /// Training rounds.
    #[arg(long, default_value_t = DoerschOptions::default().rounds)]
    rounds: usize,
    /// Random negative windows per round, at least.
    #[arg(long, default_value_t = DoerschOptions::default().negatives)]
    negatives: usize,
    /// Random negative windows per round plus the hard negatives kept, at most (unless --negatives is more).
    #[arg(long, default_value_t = DoerschOptions::default().negative_pool)]
    negative_pool: usize,
    /// Best images per trained detector that rank it by the share carrying the label.
    #[arg(long, default_value_t = DoerschOptions::default().final_neighbours)]
    final_neighbours: usize,
    /// Detectors shown per label, best first.
    #[arg(long, default_value_t = DoerschOptions::default().keep)]
    keep: usize,
    /// Number type of the stored window features and of the dense search.
    #[arg(long, value_enum, default_value_t = DoerschOptions::default().precision.into())]
    precision: PrecisionArg,
    #[arg(long, default_value_t = DoerschOptions::default().seed)]
    seed: u64,
    /// Writes each stage's wall time and the peak resident memory at its end as JSON here.
    #[arg(long, value_name = "FILE")]
    timings: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum PrecisionArg {
    Float32,
    Bfloat16,
}

impl From<Precision> for PrecisionArg {
    fn from(precision: Precision) -> Self {
        match precision {
            Precision::Float32 => PrecisionArg::Float32,
            Precision::BFloat16 => PrecisionArg::Bfloat16,
        }
    }
}

impl From<PrecisionArg> for Precision {
    fn from(precision: PrecisionArg) -> Self {
        match precision {
            PrecisionArg::Float32 => Precision::Float32,
            PrecisionArg::Bfloat16 => Precision::BFloat16,
        }
    }
}

impl DoerschArgs {
    fn options(&self) -> DoerschOptions {
        DoerschOptions {
            resize: self.resize,
            candidates: self.candidates,
            detectors: self.detectors,
            rounds: self.rounds,
            negatives: self.negatives,
            negative_pool: self.negative_pool,
            final_neighbours: self.final_neighbours,
            keep: self.keep,
            precision: self.precision.into(),
            seed: self.seed,
            ..DoerschOptions::default()
        }
    }

    pub fn run(self) -> Result<()> {
        let set = LabelledSet::open(&self.data)?;
        let started = Instant::now();
        let (labels, times) = mine_discriminative(&set, &self.options(), &mut Progress::new("steps").callback())?;
        let report_started = Instant::now();
        let results: Vec<_> = labels.iter().map(|l| l.result.clone()).collect();
        let report_options = ReportOptions { resize: self.resize, scores: Scores::Discriminative, min_members: 1, ..ReportOptions::default() };
        write_report(&results, &report_options, &self.out)?;
        let report = Stage { wall: report_started.elapsed(), peak_resident_bytes: None };
        for l in &labels {
            println!("{}: {} candidates, {} detectors selected, {} shown", l.result.label, l.candidates, l.selected, l.result.clusters.len());
        }
        println!("{}", stage_line(&times, report.wall.as_secs_f64()));
        if let Some(path) = &self.timings {
            diffmine::io::write_atomic(path, timings_json(&times, report, set.items.len()).as_bytes())?;
        }
        println!("mined {} images in {:.0} s; report: {}", set.items.len(), started.elapsed().as_secs_f64(), self.out.join("index.html").display());
        Ok(())
    }
}

fn stages(times: &DoerschTimes) -> [(&'static str, Stage); 6] {
    [
        ("features", times.features),
        ("candidates", times.candidates),
        ("initial_search", times.initial_search),
        ("selection", times.selection),
        ("training", times.training),
        ("final_ranking", times.final_ranking),
    ]
}

/// One line of where the time went; benches/doersch.sh reads it.
fn stage_line(times: &DoerschTimes, report: f64) -> String {
    let parts: Vec<String> = stages(times).iter().map(|(name, s)| format!("{} {:.4} s", name.replace('_', " "), s.wall.as_secs_f64())).collect();
    format!("stage times: {}, report {report:.4} s", parts.join(", "))
}

fn timings_json(times: &DoerschTimes, report: Stage, images: usize) -> String {
    let mut map = serde_json::Map::new();
    for (name, stage) in stages(times).into_iter().chain([("report", report)]) {
        map.insert(name.into(), serde_json::json!({ "seconds": stage.wall.as_secs_f64(), "peak_resident_bytes": stage.peak_resident_bytes }));
    }
    serde_json::json!({ "images": images, "stages": map }).to_string()
}
