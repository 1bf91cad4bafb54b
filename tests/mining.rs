//! Mining: DIFT features against Tang et al.'s computation in diffusers (same noise), f32 on CPU.
mod common;

use common::{assert_close, pipeline, Reference};
use diffmine::mining::dift::{dift_features, DiftOptions};
use diffmine::model::{ModelOptions, StableDiffusion};
use diffmine::typicality::LatentMode;

#[test]
fn dift_features_equal_the_up_block_output_of_diffusers_averaged_over_the_ensemble() {
    for config in ["sd15_tiny", "sd2_tiny"] {
        let model = StableDiffusion::open(&pipeline(config), &ModelOptions::default()).unwrap();
        let reference = Reference::load(config);
        let noise = reference.get("dift.noise").shallow_clone();
        let options = DiftOptions { ensemble: noise.size()[0] as usize, latent: LatentMode::Mean, noise: Some(noise), ..DiftOptions::default() };
        let prompt = reference.json["typicality_prompts"][0].as_str().unwrap().to_string();
        let features = dift_features(&model, reference.get("vae.0.image"), &prompt, &options).unwrap();
        assert_close(&features, reference.get("dift.features"), 1e-4, &format!("{config} DIFT"));
    }
}
