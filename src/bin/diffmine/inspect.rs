//! Commands that look at a model or a file: `info`, `tokenize`, `roundtrip`, `denoise`, `dicom-info`.
use std::path::PathBuf;

use clap::Args;
use diffmine::dicom::{DicomFile, DicomOptions};
use diffmine::model::{device_name, dtype_name};
use diffmine::typicality::TypicalityOptions;
use diffmine::Result;
use tch::{Kind, Tensor};

use crate::files::{image_tensor, write_png};
use crate::options::ModelArgs;

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
}

impl InfoArgs {
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        let unet = model.unet().config();
        let vae = model.vae().config();
        println!("device: {}, dtype: {}", device_name(model.device()), dtype_name(model.dtype()));
        println!("unet: blocks {:?} {:?}, channels {:?}", unet.down_block_types, unet.up_block_types, unet.block_out_channels);
        println!("vae: channels {:?}, latent channels {}, scaling factor {}", vae.block_out_channels, vae.latent_channels, vae.scaling_factor);
        println!("text encoder: width {}, {} layers", model.text_embedding_dim(), model.text_encoder().config().num_hidden_layers);
        let schedule = model.schedule();
        println!("schedule: {} steps, {} betas, {:?} prediction", schedule.train_steps(), schedule.config().beta_schedule, schedule.prediction_type());
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text, as one argument (commas and all).
    #[arg(long)]
    text: String,
}

impl TokenizeArgs {
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        println!("{:?}", model.tokenize(&self.text));
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct RoundtripArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image: PNG, JPEG, BMP or DICOM.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The decoded image.
    #[arg(long, value_name = "FILE.png")]
    out: PathBuf,
}

impl RoundtripArgs {
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        let latents = model.encode_mean(&image_tensor(&self.image, None)?)?;
        println!("latents {:?}, mean {:.4}, std {:.4}", latents.size(), latents.mean(Kind::Float).double_value(&[]), latents.std(true).double_value(&[]));
        write_png(&model.decode(&latents)?, &self.out)
    }
}

#[derive(Args, Debug)]
pub struct DenoiseArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image: PNG, JPEG, BMP or DICOM.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The prompt the noise is predicted under.
    #[arg(long)]
    prompt: String,
    /// The timestep the image is noised to.
    #[arg(long)]
    t: i64,
    /// The one-step estimate of the clean image.
    #[arg(long, value_name = "FILE.png")]
    out: PathBuf,
    /// Seed of the noise (typicality's default seed).
    #[arg(long, default_value_t = TypicalityOptions::default().seed)]
    seed: u64,
}

impl DenoiseArgs {
    /// Noises the image's latents to step t, predicts the noise under the prompt and decodes the
    /// one-step estimate of the clean latents.
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        let x0 = model.encode_mean(&image_tensor(&self.image, None)?)?;
        tch::manual_seed(self.seed as i64);
        let noise = Tensor::randn(x0.size(), (Kind::Float, tch::Device::Cpu)).to_device(x0.device());
        let timesteps = Tensor::from_slice(&[self.t]);
        let schedule = model.schedule();
        let noisy = schedule.add_noise(&x0, &noise, &timesteps)?;
        let context = model.text_embeddings(&[self.prompt.as_str()])?;
        let output = model.predict_noise(&noisy, &timesteps, &context)?;
        let eps = schedule.to_epsilon(&output, &noisy, &timesteps)?;
        let loss = (&eps - &noise).square().mean(Kind::Float).double_value(&[]);
        println!("t = {}: noise prediction mse {loss:.5}", self.t);
        let estimate = schedule.clean_estimate(&noisy, &eps, &timesteps)?;
        write_png(&model.decode(&estimate)?, &self.out)
    }
}

#[derive(Args, Debug)]
pub struct DicomInfoArgs {
    /// The DICOM file.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The frame whose decoded size is shown.
    #[arg(long, default_value_t = DicomOptions::default().frame)]
    frame: usize,
}

impl DicomInfoArgs {
    /// Prints what a caller needs to file results next to a DICOM image, and the decoded frame's size.
    pub fn run(self) -> Result<()> {
        let file = DicomFile::open(&self.image)?;
        let m = file.metadata()?;
        let show = |name: &str, value: &Option<String>| println!("{name}: {}", value.as_deref().unwrap_or("-"));
        show("patient id", &m.patient_id);
        show("patient name", &m.patient_name);
        show("study instance uid", &m.study_instance_uid);
        show("series instance uid", &m.series_instance_uid);
        show("sop instance uid", &m.sop_instance_uid);
        show("sop class uid", &m.sop_class_uid);
        show("modality", &m.modality);
        show("view position", &m.view_position);
        println!("pixel spacing (mm): {}", m.pixel_spacing.map_or("-".into(), |[r, c]| format!("{r} × {c}")));
        println!("transfer syntax: {}", m.transfer_syntax_uid);
        println!("frames: {}", m.frames);
        let image = file.image(&DicomOptions { frame: self.frame, ..Default::default() })?;
        println!("image: {}×{}, {} channel(s)", image.width, image.height, image.channels);
        Ok(())
    }
}
