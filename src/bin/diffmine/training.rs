//! `finetune` (a model's UNet, or LoRA adapters on it, on a labelled set) and `train-vae` (a model's VAE as an autoencoder).
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use diffmine::autoencoder::{train_autoencoder, AutoencoderOptions};
use diffmine::dataset::LabelledSet;
use diffmine::finetune::{finetune, FinetuneOptions, LoraOptions, StepCompute, TrainOptions};
use diffmine::model::{dtype_name, parse_dtype};
use diffmine::Result;
use tch::Kind;

use crate::options::ModelArgs;
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A folder with a subfolder of images per label, or a CSV of `path,label` rows.
    #[arg(long, value_name = "DIR_OR_CSV")]
    data: PathBuf,
    /// The finetuned model folder, or with --lora-rank the folder of pytorch_lora_weights.safetensors
    /// (checkpoints in OUT/checkpoints).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = FinetuneOptions::default().steps)]
    steps: usize,
    /// Images per step.
    #[arg(long, default_value_t = FinetuneOptions::default().batch_size)]
    batch: usize,
    /// Images are resized (shorter side) and centre-cropped to this size.
    #[arg(long, default_value_t = FinetuneOptions::default().resolution)]
    resolution: usize,
    /// An image's caption, `{label}` standing for its labels.
    #[arg(long, default_value_t = FinetuneOptions::default().caption_template)]
    caption: String,
    /// The caption that replaces an image's with probability --dropout (the unconditional caption).
    #[arg(long, default_value_t = FinetuneOptions::default().null_prompt)]
    null_prompt: String,
    /// Probability that a caption is replaced by --null-prompt.
    #[arg(long, default_value_t = FinetuneOptions::default().condition_dropout)]
    dropout: f64,
    /// AdamW learning rate.
    #[arg(long, default_value_t = FinetuneOptions::default().train.learning_rate)]
    lr: f64,
    /// Seed of every random draw (batches, noise, timesteps, caption dropout).
    #[arg(long, default_value_t = FinetuneOptions::default().seed)]
    seed: u64,
    /// Save a resumable checkpoint every N steps (0: never).
    #[arg(long, value_name = "N", default_value_t = FinetuneOptions::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Continue from this checkpoint folder.
    #[arg(long, value_name = "CHECKPOINT_DIR")]
    resume: Option<PathBuf>,
    /// Mixed precision: float32 (none) or bfloat16.
    #[arg(long, default_value_t = dtype_name(FinetuneOptions::default().compute.autocast.unwrap_or(Kind::Float)))]
    autocast: String,
    /// Recompute each UNet block in the backward pass instead of keeping its activations.
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Train LoRA adapters of this rank on the UNet's attention projections instead of the whole
    /// UNet (the base weights frozen); writes OUT/pytorch_lora_weights.safetensors for --lora.
    #[arg(long, value_name = "RANK")]
    lora_rank: Option<usize>,
    /// The adapters' alpha: their output is scaled by alpha / rank [default: the rank].
    #[arg(long, value_name = "ALPHA", requires = "lora_rank")]
    lora_alpha: Option<f64>,
    /// The attention projections to adapt (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "lora_rank", default_values_t = LoraOptions::default().targets)]
    lora_targets: Vec<String>,
}

impl FinetuneArgs {
    pub fn run(self) -> Result<()> {
        let model_options = self.model.options()?;
        let set = LabelledSet::open(&self.data)?;
        let defaults = FinetuneOptions::default();
        let options = FinetuneOptions {
            train: TrainOptions { learning_rate: self.lr, ..defaults.train.clone() },
            caption_template: self.caption.clone(),
            null_prompt: self.null_prompt.clone(),
            condition_dropout: self.dropout,
            batch_size: self.batch,
            steps: self.steps,
            seed: self.seed,
            resolution: self.resolution,
            checkpoint_every: self.checkpoint_every,
            checkpoint_dir: Some(self.out.join("checkpoints")),
            compute: StepCompute::new(parse_dtype(&self.autocast)?, self.gradient_checkpointing || defaults.compute.gradient_checkpointing),
            lora: self.lora_rank.map(|rank| LoraOptions { rank, alpha: self.lora_alpha, targets: self.lora_targets.clone() }),
            ..defaults
        };
        if let Some(lora) = &options.lora {
            lora.validate()?;
            println!("training LoRA adapters of rank {} (alpha {}) on {}", lora.rank, lora.alpha.unwrap_or(lora.rank as f64), lora.targets.join(", "));
        }
        println!("finetuning on {} images of {} labels: {:?}", set.items.len(), set.labels().len(), set.labels());
        let started = Instant::now();
        // The steps after this run's first, timed apart from loading, encoding and warm-up (benches/training.sh).
        let mut first_step: Option<(Instant, u64)> = None;
        let mut last_step = (Instant::now(), 0);
        let mut bar = Progress::new("steps");
        let mut progress = |done, total, loss| {
            first_step.get_or_insert((Instant::now(), done));
            last_step = (Instant::now(), done);
            bar.update(done, total, loss)
        };
        let report = finetune(&self.model.model, &model_options, &set, &options, self.resume.as_deref(), &self.out, &mut progress)?;
        drop(bar);
        println!("{} steps in {:.0} s, last loss {:.4}; wrote {}", options.steps, started.elapsed().as_secs_f64(), report.loss, self.out.display());
        if let Some((first_at, first)) = first_step.filter(|&(_, first)| last_step.1 > first) {
            let (last_at, last) = last_step;
            println!("steps after the first: {:.3} s each", (last_at - first_at).as_secs_f64() / (last - first) as f64);
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct TrainVaeArgs {
    /// The model folder whose VAE is trained (the other components are copied).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// A folder with a subfolder of images per label, or a CSV of `path,label` rows.
    #[arg(long, value_name = "DIR_OR_CSV")]
    data: PathBuf,
    /// The model folder written, with the trained VAE and its measured scaling factor.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = AutoencoderOptions::default().steps)]
    steps: usize,
    /// Images per step.
    #[arg(long, default_value_t = AutoencoderOptions::default().batch_size)]
    batch: usize,
    /// Images are resized (shorter side) and centre-cropped to this size.
    #[arg(long, default_value_t = AutoencoderOptions::default().resolution)]
    resolution: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = AutoencoderOptions::default().train.learning_rate)]
    lr: f64,
    /// Weight of the KL term against the reconstruction loss.
    #[arg(long, default_value_t = AutoencoderOptions::default().kl_weight)]
    kl_weight: f64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = AutoencoderOptions::default().seed)]
    seed: u64,
}

impl TrainVaeArgs {
    /// Trains the VAE as an autoencoder (for models built from scratch) and measures its scaling factor.
    pub fn run(self) -> Result<()> {
        let set = LabelledSet::open(&self.data)?;
        let defaults = AutoencoderOptions::default();
        let options = AutoencoderOptions {
            train: TrainOptions { learning_rate: self.lr, ..defaults.train.clone() },
            kl_weight: self.kl_weight,
            batch_size: self.batch,
            steps: self.steps,
            seed: self.seed,
            resolution: self.resolution,
        };
        let started = Instant::now();
        let mut bar = Progress::new("steps");
        let scaling = train_autoencoder(&self.model, &set, &options, &self.out, &mut |done, total, loss| bar.update(done, total, loss))?;
        drop(bar);
        println!("{} steps in {:.0} s; scaling factor {scaling:.5}; wrote {}", options.steps, started.elapsed().as_secs_f64(), self.out.display());
        Ok(())
    }
}
