//! Mining: DIFT features against Tang et al.'s computation in diffusers (same noise), f32 on CPU.
mod common;

use common::{assert_close, pipeline, Reference};
use diffmine::mining::cluster::{kmeans, ClusterOptions};
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

#[test]
fn kmeans_inertia_is_within_one_percent_of_scikit_learns_with_ten_restarts() {
    let reference = Reference::load("sd15_tiny");
    let data = reference.get("kmeans.data");
    let (n, d) = data.size2().unwrap();
    let values = Vec::<f32>::try_from(&data.flatten(0, -1)).unwrap();
    let features = ndarray::Array2::from_shape_vec((n as usize, d as usize), values).unwrap();
    let options = ClusterOptions { clusters: 8, restarts: 10, ..ClusterOptions::default() };
    let ours = kmeans(&features, &options).unwrap().inertia;
    let theirs = reference.get("kmeans.inertia").double_value(&[0]);
    assert!((ours - theirs).abs() <= 0.01 * theirs, "inertia {ours:.4} vs scikit-learn {theirs:.4}");
}
