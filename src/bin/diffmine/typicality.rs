//! `typicality`: one image's typicality map, as a NumPy array, an overlay PNG and, for a DICOM image, a
//! DICOM instance in the image's study.
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use diffmine::dicom::{DicomFile, MapKind, MapObjectOptions};
use diffmine::image::to_rgb_image;
use diffmine::io::write_image;
use diffmine::mining::miner::MiningOptions;
use diffmine::mining::patches::select_patches;
use diffmine::npy::write_npy;
use diffmine::typicality::{typicality, TypicalityOptions};
use diffmine::Result;
use tch::Tensor;

use crate::files::image_tensor;
use crate::options::{Latent, ModelArgs};
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct TypicalityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image: PNG, JPEG, BMP or DICOM.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The label prompt, as the model was finetuned with it.
    #[arg(long)]
    prompt: String,
    /// The prompt the label prompt is compared with.
    #[arg(long)]
    null_prompt: String,
    /// Writes PREFIX.npy (the map), PREFIX.png (the map over the image) and, with --dicom-out, PREFIX.dcm.
    #[arg(long, value_name = "PREFIX")]
    out: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The image is resized so its shorter side has this many pixels (default: as it is).
    #[arg(long, value_name = "SHORT_SIDE")]
    resize: Option<usize>,
    /// Also prints the most typical non-overlapping K × K patches.
    #[arg(long, value_name = "K")]
    patch: Option<usize>,
    /// For a DICOM image: the map also as a DICOM object of this kind in the image's study, at
    /// PREFIX.dcm, recording the prompts, samples and seed.
    #[arg(long, value_enum, value_name = "KIND")]
    dicom_out: Option<DicomOut>,
    /// With --dicom-out: what the map is the typicality of (the segment's label, the object's
    /// description; default "typicality").
    #[arg(long, value_name = "LABEL", requires = "dicom_out")]
    dicom_label: Option<String>,
}

/// How the typicality samples are drawn.
#[derive(Args, Debug)]
pub struct SamplingArgs {
    /// Number of (noise, timestep) samples.
    #[arg(long, default_value_t = TypicalityOptions::default().samples, help_heading = "Sampling")]
    samples: usize,
    /// Seed of the (noise, timestep) draws.
    #[arg(long, default_value_t = TypicalityOptions::default().seed, help_heading = "Sampling")]
    seed: u64,
    /// Samples per UNet call.
    #[arg(long, default_value_t = TypicalityOptions::default().batch, help_heading = "Sampling")]
    batch: usize,
    /// Lower end of the timestep range, as a fraction of the training steps.
    #[arg(long, default_value_t = TypicalityOptions::default().t_min, help_heading = "Sampling")]
    t_min: f64,
    /// Upper end of the timestep range, as a fraction of the training steps.
    #[arg(long, default_value_t = TypicalityOptions::default().t_max, help_heading = "Sampling")]
    t_max: f64,
    /// Which latent of the VAE posterior is noised.
    #[arg(long, value_enum, default_value_t = TypicalityOptions::default().latent.into(), help_heading = "Sampling")]
    latent: Latent,
    /// Pairs of samples (ε, t) and (−ε, t) instead of independent draws.
    #[arg(long, help_heading = "Sampling")]
    antithetic: bool,
    /// Each timestep drawn in its own stratum of the range instead of over the whole range.
    #[arg(long, help_heading = "Sampling")]
    stratified: bool,
}

impl SamplingArgs {
    pub fn options(&self) -> TypicalityOptions {
        let defaults = TypicalityOptions::default();
        TypicalityOptions {
            samples: self.samples,
            seed: self.seed,
            batch: self.batch,
            t_min: self.t_min,
            t_max: self.t_max,
            latent: self.latent.into(),
            // A flag can only switch these on; absent, they keep the library's choice.
            antithetic: self.antithetic || defaults.antithetic,
            stratified: self.stratified || defaults.stratified,
            ..defaults
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum DicomOut {
    /// Secondary Capture, RGB: the map as a heat colour scale over the image.
    Overlay,
    /// Secondary Capture, 16-bit greyscale: the map's values through Rescale Slope and Intercept.
    Raw,
    /// Fractional Segmentation: the map min–max scaled to a probability, on the image's pixel grid
    /// (what viewers overlay on the image).
    Seg,
    /// Parametric Map: the map's exact float values.
    Parametric,
}

impl From<DicomOut> for MapKind {
    fn from(kind: DicomOut) -> Self {
        match kind {
            DicomOut::Overlay => MapKind::Overlay,
            DicomOut::Raw => MapKind::Raw,
            DicomOut::Seg => MapKind::Segmentation,
            DicomOut::Parametric => MapKind::Parametric,
        }
    }
}

impl TypicalityArgs {
    pub fn run(self) -> Result<()> {
        let model = self.model.open()?;
        let image = image_tensor(&self.image, self.resize)?;
        let options = self.sampling.options();
        let started = Instant::now();
        let mut progress = Progress::new("samples");
        let result = typicality(&model, &image, &self.prompt, &self.null_prompt, &options, &mut progress.callback())?;
        drop(progress);
        let (h, w) = (result.map.size()[0] as usize, result.map.size()[1] as usize);
        let map = Vec::<f32>::try_from(result.map.f_flatten(0, -1)?)?;
        let mean = map.iter().sum::<f32>() / map.len() as f32;
        println!("typicality map {h}×{w} in {:.1} s: mean {mean:.5}", started.elapsed().as_secs_f64());
        let npy = PathBuf::from(format!("{}.npy", self.out));
        write_npy(&npy, &map, &[h, w])?;
        println!("wrote {}", npy.display());
        overlay(&image, &map, &PathBuf::from(format!("{}.png", self.out)))?;
        if let Some(kind) = self.dicom_out {
            let dicom = MapObjectOptions {
                kind: kind.into(),
                label: self.dicom_label.clone().unwrap_or_default(),
                prompt: self.prompt.clone(),
                null_prompt: self.null_prompt.clone(),
                samples: options.samples,
                seed: options.seed,
                ..Default::default()
            };
            write_map_as_dicom(&self.image, &map, [w, h], &dicom, &PathBuf::from(format!("{}.dcm", self.out)))?;
        }
        if let Some(k) = self.patch {
            for (rank, b) in select_patches(&map, h, w, k, MiningOptions::default().per_image)?.iter().enumerate() {
                println!("patch {rank}: x {} y {} size {} typicality {:.5}", b.x, b.y, b.size, b.score);
            }
        }
        Ok(())
    }
}

/// The library's heat map of the typicality blended over the image.
fn overlay(image: &Tensor, map: &[f32], path: &Path) -> Result<()> {
    let buffer = diffmine::heatmap::overlay(&to_rgb_image(image)?, map)?;
    write_image(&buffer, path)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Files a typicality map of a DICOM image back in the image's study.
fn write_map_as_dicom(source: &Path, map: &[f32], size: [usize; 2], options: &MapObjectOptions, path: &Path) -> Result<()> {
    let written = DicomFile::open(source)?.write_map(0, map, size, options, path)?;
    println!("wrote {} (series {}, instance {})", path.display(), written.series_instance_uid, written.sop_instance_uid);
    Ok(())
}
