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
        assert_eq!(single.unet_parameters().unwrap().len(), folder.unet_parameters().unwrap().len(), "{config}");
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
    let parameter = |model: &StableDiffusion| model.unet_parameters().unwrap().into_iter().find(|(n, _)| n == name).unwrap().1;
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

// LoRA: a random adapter made with peft (both factors random) on sd15_tiny's UNet and text encoder,
// saved by diffusers, and a kohya-named copy of it; diffusers' outputs with it fused at the same scale.

/// Float32 merging against diffusers' fused float32 weights: rounding only.
const LORA_TOLERANCE: f64 = 1e-4;

struct LoraReference {
    tensors: std::collections::HashMap<String, Tensor>,
    scale: f64,
    prompt: String,
}

impl LoraReference {
    fn load() -> Self {
        let dir = models_fixture_dir().join("lora");
        let tensors = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        LoraReference { tensors, scale: json["scale"].as_f64().unwrap(), prompt: json["prompt"].as_str().unwrap().to_string() }
    }

    fn get(&self, name: &str) -> &Tensor {
        &self.tensors[name]
    }

    /// The model's UNet output and text embeddings on the reference inputs.
    fn outputs(&self, model: &StableDiffusion) -> (Tensor, Tensor) {
        let unet = model.predict_noise(self.get("latents"), self.get("timesteps"), self.get("context")).unwrap();
        (unet, model.text_embeddings(&[self.prompt.as_str()]).unwrap())
    }
}

fn peft_lora() -> PathBuf {
    models_fixture_dir().join("lora/peft/pytorch_lora_weights.safetensors")
}

fn kohya_lora() -> PathBuf {
    models_fixture_dir().join("lora/kohya.safetensors")
}

/// Every UNet and text-encoder weight's values, to compare bit for bit.
fn snapshot(model: &StableDiffusion) -> Vec<Tensor> {
    let unet = model.unet_parameters().unwrap().into_iter().map(|(_, t)| t);
    let text = model.text_encoder_parameters().unwrap().into_iter().map(|(_, t)| t);
    unet.chain(text).collect()
}

fn assert_identical(before: &[Tensor], after: &[Tensor], what: &str) {
    assert_eq!(before.len(), after.len());
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        assert!(a.equal(b), "{what}: weight {i} changed");
    }
}

#[test]
fn lora_in_peft_and_kohya_naming_equals_diffusers_load_lora_weights_and_unloads_exactly() {
    let reference = LoraReference::load();
    let mut model = StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap();
    let before = snapshot(&model);
    let (base_unet, base_text) = reference.outputs(&model);
    assert!(max_difference(&base_unet, reference.get("base.unet_output")) <= LORA_TOLERANCE);
    for file in [peft_lora(), kohya_lora()] {
        model.load_lora(&file, reference.scale).unwrap();
        assert!(model.has_lora());
        let (unet, text) = reference.outputs(&model);
        let (unet_error, text_error) =
            (max_difference(&unet, reference.get("adapted.unet_output")), max_difference(&text, reference.get("adapted.text_embeddings")));
        let (unet_change, text_change) = (max_difference(&unet, &base_unet), max_difference(&text, &base_text));
        println!(
            "{}: UNet {unet_error:.2e} from diffusers (adapter changes it by {unet_change:.3}), text {text_error:.2e} (by {text_change:.3})",
            file.display()
        );
        assert!(unet_error <= LORA_TOLERANCE && text_error <= LORA_TOLERANCE, "{}", file.display());
        assert!(unet_change > 1000.0 * LORA_TOLERANCE && text_change > 1000.0 * LORA_TOLERANCE, "the adapter must change the outputs");
        model.unload_lora();
        assert!(!model.has_lora());
        assert_identical(&before, &snapshot(&model), "after unloading");
    }
}

#[test]
fn a_second_lora_stacks_on_the_first() {
    let reference = LoraReference::load();
    let mut twice = StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap();
    twice.load_lora(&peft_lora(), reference.scale).unwrap();
    twice.load_lora(&kohya_lora(), reference.scale).unwrap();
    let mut double = StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap();
    double.load_lora(&peft_lora(), 2.0 * reference.scale).unwrap();
    let (a, b) = (reference.outputs(&twice).0, reference.outputs(&double).0);
    assert!(max_difference(&a, &b) <= LORA_TOLERANCE, "{}", max_difference(&a, &b));
    let before = snapshot(&StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap());
    twice.unload_lora();
    assert_identical(&before, &snapshot(&twice), "after unloading two adapters");
}

#[test]
fn a_lora_for_another_model_is_refused_by_name_and_changes_nothing() {
    // sd15_tiny's adapter on sd2_tiny: other layers, other shapes.
    let mut model = StableDiffusion::open(&pipeline("sd2_tiny"), &ModelOptions::default()).unwrap();
    let before = snapshot(&model);
    let err = model.load_lora(&peft_lora(), 1.0).expect_err("another base");
    assert!(err.to_string().contains("unet.") && err.to_string().contains("another base model"), "{err}");
    assert_identical(&before, &snapshot(&model), "after a refused adapter");
    assert!(!model.has_lora());

    // One unknown module among known ones: refused as a whole.
    let mut model = StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap();
    let before = snapshot(&model);
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("renamed.safetensors");
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(peft_lora())
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name.replace("unet.mid_block.attentions.0.proj_in", "unet.mid_block.attentions.0.proj_sideways"), t))
        .collect();
    Tensor::write_safetensors(&tensors, &renamed).unwrap();
    let err = model.load_lora(&renamed, 1.0).expect_err("unknown module");
    assert!(err.to_string().contains("unet.mid_block.attentions.0.proj_sideways"), "{err}");
    assert_identical(&before, &snapshot(&model), "after a refused adapter");

    // Misshapen factors for a known module.
    let misshapen = dir.path().join("misshapen.safetensors");
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(peft_lora())
        .unwrap()
        .into_iter()
        .map(
            |(name, t)| {
                if name.ends_with("attn1.to_q.lora_A.weight") {
                    (name, Tensor::zeros([4, 7], (tch::Kind::Float, tch::Device::Cpu)))
                } else {
                    (name, t)
                }
            },
        )
        .collect();
    Tensor::write_safetensors(&tensors, &misshapen).unwrap();
    let err = model.load_lora(&misshapen, 1.0).expect_err("misshapen factors");
    assert!(err.to_string().contains("to_q") && err.to_string().contains("[4, 7]"), "{err}");
    assert_identical(&before, &snapshot(&model), "after a refused adapter");
}

// The C API: a single file opened with options, a LoRA loaded and unloaded through the handle.

fn c_text_embeddings(model: *const diffmine::ffi::dm_model, prompt: &str) -> Vec<f32> {
    let text = std::ffi::CString::new(prompt).unwrap();
    let mut out = vec![0f32; 77 * 32];
    // SAFETY: NUL-terminated text, `out` holds `out.len()` floats.
    let status = unsafe { diffmine::ffi::dm_model_text_embeddings(model, text.as_ptr(), out.as_mut_ptr(), out.len()) };
    assert_eq!(status, diffmine::ffi::dm_status::DM_OK, "{}", common::c_last_error());
    out
}

#[test]
fn the_c_api_opens_single_files_and_loads_and_unloads_lora() {
    use diffmine::ffi::{dm_model_load_lora, dm_model_open, dm_model_options, dm_model_options_default, dm_model_unload_lora, dm_status};
    let reference = LoraReference::load();
    let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (file, config) = (c(&single_file("sd15_tiny")), c(&pipeline("sd15_tiny")));
    // SAFETY: a zeroed options struct is filled by dm_model_options_default before use.
    let mut options: dm_model_options = unsafe { std::mem::zeroed() };
    // SAFETY: a writable options struct.
    assert_eq!(unsafe { dm_model_options_default(&mut options) }, dm_status::DM_OK);
    options.config_path = config.as_ptr();
    let mut model = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings that outlive the call, a valid out pointer.
    assert_eq!(unsafe { dm_model_open(file.as_ptr(), &options, &mut model) }, dm_status::DM_OK, "{}", common::c_last_error());
    let model = common::CModel(model);

    let base = c_text_embeddings(model.0, &reference.prompt);
    let lora = c(&kohya_lora());
    // SAFETY: a live model and a NUL-terminated path.
    assert_eq!(unsafe { dm_model_load_lora(model.0, lora.as_ptr(), reference.scale as f32) }, dm_status::DM_OK, "{}", common::c_last_error());
    let adapted = Tensor::from_slice(&c_text_embeddings(model.0, &reference.prompt)).reshape([1, 77, 32]);
    assert!(max_difference(&adapted, reference.get("adapted.text_embeddings")) <= LORA_TOLERANCE);
    assert_eq!(dm_model_unload_lora(model.0), dm_status::DM_OK);
    assert_eq!(c_text_embeddings(model.0, &reference.prompt), base, "unloading restores the base exactly");

    let other = c(&models_fixture_dir().join("single/sd2_tiny.safetensors"));
    // SAFETY: as above.
    assert_eq!(unsafe { dm_model_load_lora(model.0, other.as_ptr(), 1.0) }, dm_status::DM_ERR_INVALID_ARGUMENT, "a whole model is no LoRA");
    // SAFETY: NULL model, valid path.
    assert_eq!(unsafe { dm_model_load_lora(std::ptr::null_mut(), lora.as_ptr(), 1.0) }, dm_status::DM_ERR_NULL_ARGUMENT);
    // SAFETY: valid model, NULL path.
    assert_eq!(unsafe { dm_model_load_lora(model.0, std::ptr::null(), 1.0) }, dm_status::DM_ERR_NULL_ARGUMENT);
    let pickle = c(Path::new("/nonexistent/model.ckpt"));
    let mut other_model = std::ptr::null_mut();
    // SAFETY: as above.
    assert_eq!(unsafe { dm_model_open(pickle.as_ptr(), &options, &mut other_model) }, dm_status::DM_ERR_UNSUPPORTED, "refused by its name");
}
