//! `translate` (Plug-and-Play translation of an image to target prompts) and `generate` (text to image).
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use diffmine::translate::{generate, translate, GenerateOptions, TranslateOptions};
use diffmine::Result;

use crate::files::{image_tensor, write_png};
use crate::options::{ModelArgs, PnpArgs};
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct TranslateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image: PNG, JPEG, BMP or DICOM.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The prompt that describes the image.
    #[arg(long)]
    source_prompt: String,
    /// A prompt to translate to; repeat the option for several (`--target A --target B`).
    #[arg(long, required = true)]
    target: Vec<String>,
    /// Writes PREFIX_<i>.png per target, in order, and PREFIX_reconstruction.png.
    #[arg(long, value_name = "PREFIX")]
    out: String,
    /// The prompt of the unconditional rows and of the source branch.
    #[arg(long, default_value_t = TranslateOptions::default().null_prompt)]
    null_prompt: String,
    /// Seed of the posterior sample with --latent sample (nothing else is random).
    #[arg(long, default_value_t = TranslateOptions::default().seed)]
    seed: u64,
    #[command(flatten)]
    pnp: PnpArgs,
}

impl TranslateArgs {
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        let image = image_tensor(&self.image, None)?;
        let targets: Vec<&str> = self.target.iter().map(String::as_str).collect();
        let options = self.pnp.options(&self.null_prompt, self.seed);
        let started = Instant::now();
        let mut progress = Progress::new("steps");
        let result = translate(&model, &image, &self.source_prompt, &targets, &options, &mut progress.callback())?;
        drop(progress);
        println!("{} translations in {:.1} s", targets.len(), started.elapsed().as_secs_f64());
        for (i, target) in targets.iter().enumerate() {
            println!("{i}: {target}");
            write_png(&result.images.f_narrow(0, i as i64, 1)?, &PathBuf::from(format!("{}_{i}.png", self.out)))?;
        }
        write_png(&result.reconstruction, &PathBuf::from(format!("{}_reconstruction.png", self.out)))
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// What the image shows.
    #[arg(long)]
    prompt: String,
    /// The generated image.
    #[arg(long, value_name = "FILE.png")]
    out: PathBuf,
    /// DDIM sampling steps.
    #[arg(long, default_value_t = GenerateOptions::default().steps)]
    steps: usize,
    /// Classifier-free guidance scale (1: none).
    #[arg(long, default_value_t = GenerateOptions::default().guidance)]
    guidance: f64,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = GenerateOptions::default().seed)]
    seed: u64,
    /// Side of the square image, in pixels.
    #[arg(long, default_value_t = GenerateOptions::default().height)]
    size: i64,
    /// The prompt of the unconditional rows.
    #[arg(long, default_value_t = GenerateOptions::default().null_prompt)]
    null_prompt: String,
}

impl GenerateArgs {
    /// Samples one square image for the prompt.
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        let options = GenerateOptions {
            steps: self.steps,
            guidance: self.guidance,
            null_prompt: self.null_prompt.clone(),
            height: self.size,
            width: self.size,
            seed: self.seed,
            ..GenerateOptions::default()
        };
        let mut progress = Progress::new("steps");
        let result = generate(&model, &[self.prompt.as_str()], &options, &mut progress.callback())?;
        drop(progress);
        write_png(&result.images, &self.out)
    }
}
