//! Models as users hold them: single-file checkpoints in the original SD layout (written from the
//! fixture pipelines by tests/reference/models_reference.py, and read back by diffusers' own
//! `from_single_file` there) load equal to their diffusers folders; bad files are refused by name.
mod common;

use std::path::{Path, PathBuf};

use common::{models_fixture_dir, pipeline, Reference};
use diffmine::error::Error;
use diffmine::model::single_file::{Layout, SdVersion, SingleFileOptions};
use diffmine::model::{ComponentOverrides, ModelOptions, StableDiffusion};
use tch::Tensor;

const CONFIGS: [&str; 2] = ["sd15_tiny", "sd2_tiny"];
/// Both load the same bytes into the same layers: the outputs agree to rounding, if not bit for bit.
const TOLERANCE: f64 = 1e-6;

fn single_file(config: &str) -> PathBuf {
    models_fixture_dir().join("single").join(format!("{config}.safetensors"))
}

fn single_file_options(config: &str) -> ModelOptions {
    ModelOptions { single_file: SingleFileOptions { config: Some(pipeline(config)), ..SingleFileOptions::default() }, ..ModelOptions::default() }
}

fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn single_files_load_equal_to_their_folders() {
    for config in CONFIGS {
        let folder = StableDiffusion::open(&pipeline(config), &ModelOptions::default()).unwrap();
        let single = StableDiffusion::open(&single_file(config), &single_file_options(config)).unwrap();
        let reference = Reference::load(config);
        for k in 0..reference.count("unet_cases") {
            let get = |what: &str| reference.get(&format!("unet.{k}.{what}"));
            let (x, t, c) = (get("latents"), get("timesteps"), get("encoder_hidden_states"));
            let difference = max_difference(&single.predict_noise(x, t, c).unwrap(), &folder.predict_noise(x, t, c).unwrap());
            assert!(difference <= TOLERANCE, "{config} UNet case {k}: {difference}");
        }
        for j in 0..reference.count("vae_images") {
            let image = reference.get(&format!("vae.{j}.image"));
            let difference = max_difference(&single.encode_mean(image).unwrap(), &folder.encode_mean(image).unwrap());
            assert!(difference <= TOLERANCE, "{config} VAE encode {j}: {difference}");
            let latent = reference.get(&format!("vae.{j}.decode_in"));
            let difference = max_difference(&single.decode(latent).unwrap(), &folder.decode(latent).unwrap());
            assert!(difference <= TOLERANCE, "{config} VAE decode {j}: {difference}");
        }
        let texts = reference.texts();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let difference = max_difference(&single.text_embeddings(&texts).unwrap(), &folder.text_embeddings(&texts).unwrap());
        assert!(difference <= TOLERANCE, "{config} text encoder: {difference}");
        assert_eq!(single.schedule().prediction_type(), folder.schedule().prediction_type(), "{config}");
        assert_eq!(single.unet_weights().parameters.len(), folder.unet_weights().parameters.len(), "{config}");
    }
}

#[test]
fn the_model_family_is_detected_from_the_weights() {
    assert_eq!(Layout::detect(&single_file("sd15_tiny"), None).unwrap().version, SdVersion::V1);
    assert_eq!(Layout::detect(&single_file("sd2_tiny"), None).unwrap().version, SdVersion::V2);
    assert_eq!(Layout::detect(&single_file("sd2_tiny"), Some(SdVersion::V1)).unwrap().version, SdVersion::V1);
}

#[test]
fn ema_weights_are_read_only_when_asked_for() {
    // The writer stored the UNet's weights halved as its EMA.
    let name = "down_blocks.0.resnets.0.conv1.weight";
    let parameter = |model: &StableDiffusion| model.unet_weights().parameters.iter().find(|(n, _)| n == name).unwrap().1.copy();
    let plain = StableDiffusion::open(&single_file("sd15_tiny"), &single_file_options("sd15_tiny")).unwrap();
    let mut options = single_file_options("sd15_tiny");
    options.single_file.ema = true;
    let ema = StableDiffusion::open(&single_file("sd15_tiny"), &options).unwrap();
    assert_eq!(max_difference(&parameter(&ema), &(parameter(&plain) * 0.5)), 0.0);
    // sd2_tiny's file has none.
    let mut options = single_file_options("sd2_tiny");
    options.single_file.ema = true;
    let err = StableDiffusion::open(&single_file("sd2_tiny"), &options).err().expect("no EMA weights");
    assert!(err.to_string().contains("no EMA weights"), "{err}");
}

#[test]
fn a_single_file_without_config_uses_the_original_configs_and_names_the_misshapen_key() {
    // The tiny file against SD 1.5's real shapes: the first tensor read is the first mismatch.
    let tokenizer = ComponentOverrides { tokenizer: Some(pipeline("sd15_tiny").join("tokenizer")), ..ComponentOverrides::default() };
    let err = StableDiffusion::open(&single_file("sd15_tiny"), &ModelOptions { overrides: tokenizer, ..ModelOptions::default() }).err().expect("shapes differ");
    match &err {
        Error::ShapeMismatch { name, expected, found } => {
            assert!(name.contains("model.diffusion_model.") && name.contains("(for "), "{err}");
            assert_ne!(expected, found);
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
}

fn write_without(source: &Path, missing: &str, target: &Path) {
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(source).unwrap().into_iter().filter(|(name, _)| name != missing).collect();
    Tensor::write_safetensors(&tensors, target).unwrap();
}

#[test]
fn bad_single_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pickle = dir.path().join("model.ckpt");
    std::fs::write(&pickle, b"not opened").unwrap();
    let err = StableDiffusion::open(&pickle, &single_file_options("sd15_tiny")).err().expect("pickles are refused");
    assert!(matches!(err, Error::Unsupported(_)) && err.to_string().contains("safetensors.torch.save_file"), "{err}");

    let key = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight";
    let truncated = dir.path().join("missing.safetensors");
    write_without(&single_file("sd2_tiny"), key, &truncated);
    let err = StableDiffusion::open(&truncated, &single_file_options("sd2_tiny")).err().expect("a key is missing");
    assert!(matches!(err, Error::MissingTensor { .. }) && err.to_string().contains(key), "{err}");

    let no_tokenizer = ModelOptions::default();
    let err = StableDiffusion::open(&single_file("sd15_tiny"), &no_tokenizer).err().expect("no tokenizer");
    assert!(err.to_string().contains("tokenizer"), "{err}");
}
