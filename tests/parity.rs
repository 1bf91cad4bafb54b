//! Numerical parity with the reference implementation: every model component against Python
//! diffusers/transformers on random-weight pipelines (tests/reference/make_fixtures.py), f32 on CPU,
//! relative error max|a-b|/max|b| at most 1e-4.
mod common;

use common::{assert_close, pipeline, Reference};
use diffmine::model::{ComponentOverrides, ModelOptions, StableDiffusion};
use tch::{Kind, Tensor};

const CONFIGS: [&str; 2] = ["sd15_tiny", "sd2_tiny"];
const TOLERANCE: f64 = 1e-4;

fn open(config: &str) -> StableDiffusion {
    StableDiffusion::open(&pipeline(config), &ModelOptions::default()).expect("open fixture pipeline")
}

#[test]
fn token_ids_equal_transformers_for_every_text_in_both_tokenizer_layouts() {
    for config in CONFIGS {
        let model = open(config);
        let reference = Reference::load(config);
        for (i, text) in reference.texts().iter().enumerate() {
            let expected = Vec::<i64>::try_from(reference.get(&format!("tokens.{i}"))).unwrap();
            assert_eq!(model.tokenize(text), expected, "{config}: tokens of {text:?}");
        }
    }
}

#[test]
fn text_embeddings_equal_transformers_last_hidden_state() {
    for config in CONFIGS {
        let model = open(config);
        let reference = Reference::load(config);
        let texts = reference.texts();
        for i in reference.embedded_texts() {
            let actual = model.text_embeddings(&[texts[i].as_str()]).unwrap().get(0);
            assert_close(&actual, reference.get(&format!("text_embeddings.{i}")), TOLERANCE, &format!("{config} text {i}"));
        }
    }
}

#[test]
fn vae_posterior_mean_times_scaling_factor_equals_diffusers() {
    for config in CONFIGS {
        let model = open(config);
        let reference = Reference::load(config);
        for j in 0..reference.count("vae_images") {
            let image = reference.get(&format!("vae.{j}.image"));
            let actual = model.encode_mean(image).unwrap();
            assert_close(&actual, reference.get(&format!("vae.{j}.latent_mean")), TOLERANCE, &format!("{config} encode {j}"));
        }
    }
}

#[test]
fn vae_decode_equals_diffusers() {
    for config in CONFIGS {
        let model = open(config);
        let reference = Reference::load(config);
        for j in 0..reference.count("vae_images") {
            let actual = model.decode(reference.get(&format!("vae.{j}.decode_in"))).unwrap();
            assert_close(&actual, reference.get(&format!("vae.{j}.decoded")), TOLERANCE, &format!("{config} decode {j}"));
        }
    }
}

fn unet_case(model: &StableDiffusion, reference: &Reference, k: usize) -> Tensor {
    let get = |what: &str| reference.get(&format!("unet.{k}.{what}"));
    model.predict_noise(get("latents"), get("timesteps"), get("encoder_hidden_states")).unwrap()
}

#[test]
fn unet_prediction_equals_diffusers_for_several_timesteps_batch_sizes_and_odd_latent_sizes() {
    for config in CONFIGS {
        let model = open(config);
        let reference = Reference::load(config);
        for k in 0..reference.count("unet_cases") {
            let actual = unet_case(&model, &reference, k);
            assert_close(&actual, reference.get(&format!("unet.{k}.noise_pred")), TOLERANCE, &format!("{config} unet case {k}"));
        }
    }
}

#[test]
fn fp16_variant_files_load_into_f32_compute_and_equal_diffusers() {
    let options = ModelOptions { variant: Some("fp16".into()), ..ModelOptions::default() };
    let model = StableDiffusion::open(&pipeline("sd15_tiny"), &options).unwrap();
    let reference = Reference::load("sd15_tiny");
    let actual = unet_case(&model, &reference, 0);
    let expected = reference.get("unet.fp16variant.noise_pred");
    assert_close(&actual, expected, TOLERANCE, "fp16 variant");
    // The variant's rounding is visible against the f32 files' output: proof the fp16 files were read.
    assert!(common::relative_error(&actual, reference.get("unet.0.noise_pred")) > 1e-6);
}

#[test]
fn components_can_come_from_another_folder() {
    // The sd2 pipeline with sd15's tokenizer and text encoder: embeddings are sd15's.
    let sd15 = pipeline("sd15_tiny");
    let overrides =
        ComponentOverrides { text_encoder: Some(sd15.join("text_encoder")), tokenizer: Some(sd15.join("tokenizer")), ..ComponentOverrides::default() };
    let model = StableDiffusion::open(&pipeline("sd2_tiny"), &ModelOptions { overrides, ..ModelOptions::default() }).unwrap();
    let reference = Reference::load("sd15_tiny");
    let texts = reference.texts();
    let i = reference.embedded_texts()[0];
    let actual = model.text_embeddings(&[texts[i].as_str()]).unwrap().get(0);
    assert_close(&actual, reference.get(&format!("text_embeddings.{i}")), TOLERANCE, "overridden text encoder");
}

#[test]
fn bf16_on_cpu_stays_close_to_f32() {
    let options = ModelOptions { dtype: Kind::BFloat16, ..ModelOptions::default() };
    let model = StableDiffusion::open(&pipeline("sd15_tiny"), &options).unwrap();
    let reference = Reference::load("sd15_tiny");
    let actual = unet_case(&model, &reference, 1);
    assert_eq!(actual.kind(), Kind::Float, "outputs come back in f32");
    // bf16 keeps 8 bits of mantissa: a few percent after a whole UNet is expected.
    assert_close(&actual, reference.get("unet.1.noise_pred"), 5e-2, "bf16 unet");
}

#[test]
fn one_model_used_from_several_threads_gives_the_serial_results() {
    let model = open("sd15_tiny");
    let reference = Reference::load("sd15_tiny");
    let inputs: Vec<[Tensor; 3]> =
        (0..4).map(|k| ["latents", "timesteps", "encoder_hidden_states"].map(|w| reference.get(&format!("unet.{k}.{w}")).copy())).collect();
    let serial: Vec<Tensor> = inputs.iter().map(|[x, t, c]| model.predict_noise(x, t, c).unwrap()).collect();
    std::thread::scope(|scope| {
        let model = &model;
        let handles: Vec<_> = inputs.into_iter().map(|[x, t, c]| scope.spawn(move || model.predict_noise(&x, &t, &c).unwrap())).collect();
        for (k, handle) in handles.into_iter().enumerate() {
            let parallel = handle.join().expect("thread");
            assert!(parallel.equal(&serial[k]), "case {k} differs between threads and serial");
        }
    });
}
