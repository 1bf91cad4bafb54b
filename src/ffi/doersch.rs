//! `dm_doersch_run`: the discriminative mining baseline (Doersch et al.) through the C ABI, in one
//! call from a labelled folder or CSV to the report `dm_miner_write_report` writes.
use std::ffi::{c_char, c_void};
use std::path::Path;

use super::args::{at_least_one, read_options, required_str, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::status::dm_status;
use super::typicality::{dm_progress_fn, progress_adapter};
use crate::dataset::LabelledSet;
use crate::mining::doersch::{mine_discriminative, DoerschOptions, Precision};
use crate::mining::report::{write_report, ReportOptions, Scores};

/// How to mine discriminatively. Fill with `dm_doersch_options_default`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_doersch_options {
    /// `sizeof(dm_doersch_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// Resize each image so its shorter side has this many pixels first (Lanczos); 0 keeps its size.
    pub resize_short_side: u32,
    /// Random candidate windows per label (25,000) and detectors kept by the greedy selection (1,000).
    pub candidates: u32,
    pub detectors: u32,
    /// Training rounds (3); random negative windows per round, at least (10,000), and with the hard
    /// negatives kept at most (25,000).
    pub rounds: u32,
    pub negatives: u32,
    pub negative_pool: u32,
    /// Best images per trained detector that rank it (50) and detectors reported per label (32).
    pub final_neighbours: u32,
    pub keep: u32,
    /// Non-zero: window features and the dense search in bfloat16; zero: float32 (the default).
    pub bfloat16: u32,
    pub seed: u64,
}

impl Default for dm_doersch_options {
    fn default() -> Self {
        let d = DoerschOptions::default();
        dm_doersch_options {
            struct_size: std::mem::size_of::<dm_doersch_options>(),
            resize_short_side: 0,
            candidates: d.candidates as u32,
            detectors: d.detectors as u32,
            rounds: d.rounds as u32,
            negatives: d.negatives as u32,
            negative_pool: d.negative_pool as u32,
            final_neighbours: d.final_neighbours as u32,
            keep: d.keep as u32,
            bfloat16: (d.precision == Precision::BFloat16) as u32,
            seed: d.seed,
        }
    }
}

/// Fills `options` with the defaults (the authors' settings, float32 search).
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_doersch_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_doersch_options_default(options: *mut dm_doersch_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_doersch_options::default(), options, "options") })
}

fn doersch_options(o: &dm_doersch_options) -> FfiResult<DoerschOptions> {
    Ok(DoerschOptions {
        resize: (o.resize_short_side > 0).then_some(o.resize_short_side as usize),
        candidates: at_least_one(o.candidates, "candidates")?,
        detectors: at_least_one(o.detectors, "detectors")?,
        rounds: at_least_one(o.rounds, "rounds")?,
        negatives: at_least_one(o.negatives, "negatives")?,
        negative_pool: o.negative_pool as usize,
        final_neighbours: at_least_one(o.final_neighbours, "final_neighbours")?,
        keep: at_least_one(o.keep, "keep")?,
        precision: if o.bfloat16 != 0 { Precision::BFloat16 } else { Precision::Float32 },
        seed: o.seed,
        ..DoerschOptions::default()
    })
}

/// Mines every label of the labelled set at `data` (UTF-8: a folder with a subfolder of images per
/// label, or a CSV of `path,label` rows; two labels at least) against the other labels, and writes
/// the report into `out_dir` (UTF-8): `index.html`, `patches.csv` (each kept detector's detections as
/// its "cluster", ranked by discriminativeness), grids and crops. `options` NULL means the defaults.
/// `progress` (may be NULL) is called after each image searched and each detector trained with
/// (units done, units in all, NaN); returning non-zero cancels with `DM_ERR_CANCELLED`, and nothing
/// is written then.
///
/// # Safety
/// `data` and `out_dir` NULL or NUL-terminated; `options` NULL or a valid options struct;
/// `progress` safe to call with `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_doersch_run(
    data: *const c_char,
    out_dir: *const c_char,
    options: *const dm_doersch_options,
    progress: dm_progress_fn,
    user_data: *mut c_void,
) -> dm_status {
    guard(|| {
        // SAFETY: forwarded to the caller's contract.
        let (data, out_dir) = unsafe { (required_str(data, "data")?, required_str(out_dir, "out_dir")?) };
        let min = std::mem::size_of::<dm_doersch_options>();
        // SAFETY: forwarded to the caller's contract.
        let o = unsafe { read_options(options, dm_doersch_options::default(), min, "options") }?;
        let options = doersch_options(&o)?;
        let set = LabelledSet::open(Path::new(data)).map_err(FfiError::from)?;
        let (labels, _) = mine_discriminative(&set, &options, &mut progress_adapter(progress, user_data))?;
        let results: Vec<_> = labels.into_iter().map(|l| l.result).collect();
        let report = ReportOptions { resize: options.resize, scores: Scores::Discriminative, min_members: 1, ..ReportOptions::default() };
        write_report(&results, &report, Path::new(out_dir))?;
        Ok(())
    })
}
