//! `cxr8-eval`: ChestX-ray8 evaluation of typicality maps against the dataset's boxes.
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use diffmine::cxr8::{evaluate_files, EvaluationFiles, EvaluationOptions};
use diffmine::Result;

use crate::options::ModelArgs;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct Cxr8EvalArgs {
    /// The finetuned model (--model) and how it runs.
    #[command(flatten)]
    model: ModelArgs,
    /// The pretrained model whose maps are evaluated beside the finetuned ones (same device and dtype).
    #[arg(long, value_name = "DIR")]
    baseline: Option<PathBuf>,
    /// Components the baseline folder lacks come from DIR.
    #[arg(long, value_name = "DIR", requires = "baseline")]
    baseline_base: Option<PathBuf>,
    /// The folder of ChestX-ray8 images.
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// BBox_List_2017.csv.
    #[arg(long, value_name = "CSV")]
    bbox: PathBuf,
    /// Data_Entry_2017.csv: boxes whose image it does not list with that finding are left out.
    #[arg(long, value_name = "CSV")]
    data_entry: Option<PathBuf>,
    /// Writes report.md, .csv, .json and the overlays here.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// At most this many image–disease pairs, in image-name order (default: all).
    #[arg(long, value_name = "PAIRS")]
    limit: Option<usize>,
    /// A disease to evaluate; repeat the option for several.
    #[arg(long = "disease", visible_alias = "diseases", value_name = "DISEASE", default_values_t = EvaluationOptions::default().diseases)]
    diseases: Vec<String>,
    /// Side the images are resized to (their shorter side), and the maps' size.
    #[arg(long, default_value_t = EvaluationOptions::default().working_size)]
    size: usize,
    /// Typicality samples per map.
    #[arg(long, default_value_t = EvaluationOptions::default().samples)]
    samples: usize,
    /// Lower end of the timestep range, as a fraction of the training steps.
    #[arg(long, default_value_t = EvaluationOptions::default().t_min)]
    t_min: f64,
    /// Upper end of the timestep range, as a fraction of the training steps.
    #[arg(long, default_value_t = EvaluationOptions::default().t_max)]
    t_max: f64,
    /// Seed of the typicality samples.
    #[arg(long, default_value_t = EvaluationOptions::default().seed)]
    seed: u64,
    /// Samples per UNet call.
    #[arg(long, default_value_t = EvaluationOptions::default().batch)]
    batch: usize,
}

impl Cxr8EvalArgs {
    /// AUC-PR of the finetuned (and baseline) typicality maps against the boxes.
    pub fn run(self) -> Result<()> {
        let finetuned = self.model.open()?;
        let baseline = self.baseline.as_ref().map(|dir| self.model.other(dir, self.baseline_base.as_deref()).open()).transpose()?;
        let options = EvaluationOptions {
            working_size: self.size,
            diseases: self.diseases.clone(),
            limit: self.limit,
            samples: self.samples,
            t_min: self.t_min,
            t_max: self.t_max,
            seed: self.seed,
            batch: self.batch,
        };
        let files = EvaluationFiles { images: &self.images, bbox_list: &self.bbox, data_entry: self.data_entry.as_deref(), out: &self.out };
        let started = Instant::now();
        let mut progress = Progress::new("maps");
        let run = evaluate_files(&finetuned, baseline.as_ref(), &files, &options, &mut progress.callback())?;
        drop(progress);
        print!("{}", run.report.markdown());
        if run.unconfirmed_boxes > 0 {
            println!("{} boxes left out: the data entry does not list their image with that finding", run.unconfirmed_boxes);
        }
        println!(
            "{} image–disease pairs in {:.0} s; wrote {} (report.md, .csv, .json) and {} overlays",
            run.results.len(),
            started.elapsed().as_secs_f64(),
            self.out.display(),
            run.overlays.len()
        );
        Ok(())
    }
}
