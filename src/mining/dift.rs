//! DIFT features (Tang et al. 2023) as the mining step uses them: for each member of an ensemble, a
//! posterior sample of the image's latent noised to t = 161, run through the UNet under the label
//! prompt; the output of `up_blocks[1]` (1280 channels at 1/16 of the image for SD 1.5) is averaged
//! over the members. A box's feature is the mean of the feature cells it overlaps, L2-normalised.
//!
//! Randomness: one generator per image seeded with `seed`; for each member in turn, the posterior
//! sample's noise (C·h·w normals) and then ε (C·h·w normals).
use tch::{Kind, Tensor};

use super::patches::PatchBox;
use crate::error::{Error, Result};
use crate::memory;
use crate::model::StableDiffusion;
use crate::rng::SplitMix64;
use crate::typicality::LatentMode;

#[derive(Debug)]
pub struct DiftOptions {
    /// Ensemble members averaged (8).
    pub ensemble: usize,
    /// Noise level (161).
    pub timestep: i64,
    /// Which up block's output (1).
    pub up_block: usize,
    pub seed: u64,
    pub latent: LatentMode,
    /// Explicit ε per member (E × C × h × w), replacing the generator's, so another implementation's
    /// features can be reproduced (with `latent` = `Mean`).
    pub noise: Option<Tensor>,
}

impl Default for DiftOptions {
    fn default() -> Self {
        DiftOptions { ensemble: 8, timestep: 161, up_block: 1, seed: 42, latent: LatentMode::Sample, noise: None }
    }
}

/// The DIFT feature map (C, h', w') of one image (1, 3, H, W) in [-1, 1] under `prompt`, f32 on the CPU.
pub fn dift_features(model: &StableDiffusion, image: &Tensor, prompt: &str, options: &DiftOptions) -> Result<Tensor> {
    let _span = tracing::info_span!("dift", ensemble = options.ensemble).entered();
    let e = options.ensemble as i64;
    if e == 0 {
        return Err(Error::InvalidArgument("the DIFT ensemble must have at least 1 member".into()));
    }
    let posterior = model.encode(image)?;
    let shape = posterior.mean.size();
    // The members run as one UNet batch: their latents, noise and noised rows at least.
    memory::check_fits(options.ensemble as u128 * 3, shape.iter().product::<i64>() as u128 * 4, "the DIFT ensemble's batch")?;
    let mut rng = SplitMix64::new(options.seed);
    let mut latents = memory::vec_with_capacity(options.ensemble, "the DIFT ensemble's latents")?;
    let mut noises = memory::vec_with_capacity(options.ensemble, "the DIFT ensemble's noise")?;
    for _ in 0..options.ensemble {
        latents.push(match options.latent {
            LatentMode::Mean => posterior.mean.shallow_clone(),
            LatentMode::Sample => posterior.sample_with(&rng.normal_tensor(&shape).f_to_device(model.device())?)?,
        });
        noises.push(rng.normal_tensor(&shape));
    }
    let noise = match &options.noise {
        Some(given) if given.size()[0] == e && given.size()[1..] == shape[1..] => given.f_to_kind(Kind::Float)?,
        Some(given) => return Err(Error::InvalidArgument(format!("DIFT noise must be ({e}, {:?}), got {:?}", &shape[1..], given.size()))),
        None => Tensor::f_cat(&noises, 0)?,
    };
    let x0 = Tensor::f_cat(&latents, 0)?.f_mul_scalar(model.vae().config().scaling_factor)?;
    let t = Tensor::from_slice(&vec![options.timestep; options.ensemble]);
    let noisy = model.schedule().add_noise(&x0, &noise.f_to_device(model.device())?, &t)?;
    let context = model.text_embeddings(&[prompt])?.f_expand([e, -1, -1], false)?;
    let features = tch::no_grad(|| {
        let x = noisy.f_to_kind(model.dtype())?;
        model.unet().up_block_output(&x, &t.f_to_device(model.device())?, &context, options.up_block)
    })?;
    Ok(features.f_to_kind(Kind::Float)?.f_mean_dim(0, false, Kind::Float)?.f_to_device(tch::Device::Cpu)?)
}

/// The channels of `model`'s DIFT features read after `up_blocks[up_block]`: that block's output
/// channels, the UNet's block channels in reverse (1280 for SD 1.5's block 1).
pub fn feature_channels(model: &StableDiffusion, up_block: usize) -> Result<usize> {
    let channels = &model.unet().config().block_out_channels;
    let n = channels.len();
    if up_block >= n {
        return Err(Error::InvalidArgument(format!("up block {up_block} requested, the UNet has {n}")));
    }
    Ok(channels[n - 1 - up_block] as usize)
}

/// The feature of a box of an image of `height` × `width` pixels: the mean over the cells of the
/// (C, h, w) feature map that the box overlaps — rows floor(y0·h/H) up to ceil(y1·h/H), at least one,
/// columns likewise — L2-normalised.
pub fn box_feature(features: &Tensor, patch: &PatchBox, height: usize, width: usize) -> Result<Tensor> {
    let (_, h, w) = features.size3()?;
    let (rows, cols) = (cell_span(patch.y, patch.size, height, h), cell_span(patch.x, patch.size, width, w));
    let region = features.f_narrow(1, rows.0, rows.1 - rows.0)?.f_narrow(2, cols.0, cols.1 - cols.0)?;
    let mean = region.f_mean_dim(&[1i64, 2][..], false, Kind::Float)?;
    let norm = mean.f_norm()?.f_clamp_min(1e-12)?;
    Ok(mean.f_div(&norm)?)
}

/// Cells [first, last) of a feature axis of `cells` covering pixels [start, start+size) of `pixels`.
fn cell_span(start: usize, size: usize, pixels: usize, cells: i64) -> (i64, i64) {
    let first = ((start as i64 * cells) as f64 / pixels as f64).floor() as i64;
    let last = (((start + size) as i64 * cells) as f64 / pixels as f64).ceil() as i64;
    let first = first.clamp(0, cells - 1);
    (first, last.clamp(first + 1, cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_covers_the_cells_it_overlaps_and_at_least_one() {
        // 64 px image, 4 cells of 16 px: pixels 10..30 overlap cells 0 and 1.
        assert_eq!(cell_span(10, 20, 64, 4), (0, 2));
        // Exactly aligned: pixels 16..32 are cell 1 only.
        assert_eq!(cell_span(16, 16, 64, 4), (1, 2));
        // A box inside one cell still takes that cell.
        assert_eq!(cell_span(17, 2, 64, 4), (1, 2));
    }

    #[test]
    fn box_features_are_unit_length_means_of_their_cells() {
        let features = Tensor::from_slice(&[1f32, 3., 0., 0., 0., 0., 3., 0.]).reshape([2, 2, 2]);
        let f = box_feature(&features, &PatchBox { x: 0, y: 0, size: 8, score: 0.0 }, 16, 16).unwrap();
        // Cell (0, 0): channels (1, 0) → normalised (1, 0).
        assert_eq!(Vec::<f32>::try_from(&f).unwrap(), vec![1.0, 0.0]);
        let f = box_feature(&features, &PatchBox { x: 0, y: 0, size: 16, score: 0.0 }, 16, 16).unwrap();
        let v = Vec::<f32>::try_from(&f).unwrap();
        assert!((v[0] - 0.8).abs() < 1e-6 && (v[1] - 0.6).abs() < 1e-6, "{v:?}");
    }
}
