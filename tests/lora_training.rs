//! LoRA training against peft + torch (tests/reference/lora_training_reference.py) from the same
//! adapters (A and B both random at the start) and the same batches: loss, gradient norm and every
//! clipped adapter gradient of the first step, and every adapter factor after three AdamW steps
//! (1e-4 relative), also with gradient checkpointing and under bf16 autocast; the base weights stay
//! as they were; the saved `pytorch_lora_weights.safetensors` read by diffusers' `load_lora_weights`
//! predicts what libdiffmine predicts with it; a resumed run ends where an uninterrupted one does; bad
//! options are refused.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{lora_training_fixture_dir, pipeline, relative_error, tiny_labelled_set, Reference};
use diffmine::dataset::LabelledSet;
use diffmine::finetune::{finetune, ComponentSources, FinetuneOptions, LoraOptions, StepCompute, StepReport, TrainOptions, Trainer, LORA_WEIGHTS_FILE};
use diffmine::model::{ModelOptions, StableDiffusion};
use diffmine::rng::SplitMix64;
use tch::{Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

struct LoraReference {
    tensors: HashMap<String, Tensor>,
    json: serde_json::Value,
}

impl LoraReference {
    fn load() -> Self {
        let dir = lora_training_fixture_dir();
        let tensors = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let json = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        LoraReference { tensors, json }
    }

    fn get(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("{name} in the LoRA training reference"))
    }

    fn scalar(&self, name: &str) -> f64 {
        self.get(name).double_value(&[0])
    }

    fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.tensors.iter().filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_string(), t.shallow_clone()))).collect()
    }

    fn lora_options(&self) -> LoraOptions {
        LoraOptions { rank: self.json["rank"].as_u64().unwrap() as usize, alpha: self.json["alpha"].as_f64(), ..LoraOptions::default() }
    }

    fn train_options(&self) -> TrainOptions {
        TrainOptions { max_grad_norm: self.json["max_grad_norm"].as_f64().unwrap(), ..TrainOptions::default() }
    }
}

fn open() -> StableDiffusion {
    StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap()
}

/// A LoRA trainer on the tiny pipeline with the reference's adapters and options.
fn trainer(reference: &LoraReference, compute: StepCompute) -> Trainer {
    let mut trainer = Trainer::with_lora(open(), reference.train_options(), compute, &reference.lora_options(), &mut SplitMix64::new(0)).unwrap();
    trainer.set_lora_parameters(&reference.with_prefix("init.")).unwrap();
    trainer
}

/// A step on the full-finetuning reference's batch `step` (the batches the LoRA reference trained on).
fn run_step(trainer: &mut Trainer, batches: &Reference, step: usize) -> StepReport {
    let get = |what: &str| batches.get(&format!("train.{step}.{what}"));
    trainer.step(get("latents"), get("noise"), get("timesteps"), get("context")).unwrap()
}

fn assert_report(report: StepReport, reference: &LoraReference, prefix: &str) {
    let (loss, norm) = (reference.scalar(&format!("{prefix}loss")), reference.scalar(&format!("{prefix}grad_norm")));
    assert!((report.loss - loss).abs() <= TOLERANCE * loss, "{prefix} loss {} vs peft's {loss}", report.loss);
    assert!((report.grad_norm - norm).abs() <= TOLERANCE * norm, "{prefix} gradient norm {} vs peft's {norm}", report.grad_norm);
}

/// The worst relative error of named tensors against the reference's `prefix<name>`, and its name.
fn worst_error(actual: &[(String, Tensor)], reference: &LoraReference, prefix: &str) -> (f64, String) {
    let errors = actual.iter().map(|(name, t)| (relative_error(t, reference.get(&format!("{prefix}{name}"))), name.clone()));
    errors.fold((0.0, String::new()), |worst, e| if e.0 > worst.0 { e } else { worst })
}

fn three_adamw_steps_equal_peft(compute: StepCompute, change_tolerance: f64) {
    let reference = LoraReference::load();
    let batches = Reference::load("sd15_tiny");
    let mut trainer = trainer(&reference, compute);
    let base_before = trainer.model().unet_parameters().unwrap();
    let expected_count = reference.tensors.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(trainer.lora_parameters().unwrap().len(), expected_count, "the adapters are peft's, no more, no fewer");
    let init = reference.with_prefix("init.");
    assert!(init.values().all(|t| t.abs().min().double_value(&[]) >= 0.0 && t.abs().max().double_value(&[]) > 0.0), "A and B start non-zero");
    let steps = reference.json["steps"].as_u64().unwrap() as usize;
    for step in 0..steps {
        let report = run_step(&mut trainer, &batches, step);
        assert_report(report, &reference, &format!("step.{step}."));
        if step == 0 {
            assert!(report.grad_norm > reference.train_options().max_grad_norm, "the reference exercises clipping");
            let (err, name) = worst_error(&trainer.gradients(), &reference, "grad.");
            assert!(err <= TOLERANCE, "clipped gradient of {name}: relative error {err:.2e}");
        }
    }
    let after = trainer.lora_parameters().unwrap();
    for (name, ours) in &after {
        let theirs = &init[name] + reference.get(&format!("delta.{name}"));
        common::assert_close(ours, &theirs, TOLERANCE, &format!("{name} after {steps} steps"));
    }
    let deltas: Vec<(String, Tensor)> = after.iter().map(|(n, a)| (n.clone(), a - &init[n])).collect();
    let (err, name) = worst_error(&deltas, &reference, "delta.");
    println!("LoRA: worst adapter change after {steps} steps {err:.2e} ({name})");
    assert!(err <= change_tolerance, "change of {name} after {steps} steps: relative error {err:.2e}");
    for ((name, before), (_, now)) in base_before.iter().zip(&trainer.model().unet_parameters().unwrap()) {
        assert!(before.equal(now), "the frozen base weight {name} changed");
    }
}

// The factors themselves are held to 1e-4; their changes (about 1e-4 of them) are a far stricter
// check, where Adam's per-element normalisation brings last-bit gradient differences to full scale:
// measured 1.0e-4 at worst, with and without checkpointing.
#[test]
fn lora_gradients_of_one_step_and_three_adamw_steps_equal_peft() {
    three_adamw_steps_equal_peft(StepCompute::default(), 1e-3);
}

#[test]
fn lora_with_gradient_checkpointing_still_equals_peft() {
    three_adamw_steps_equal_peft(StepCompute { gradient_checkpointing: true, ..StepCompute::default() }, 1e-3);
}

#[test]
fn a_bf16_autocast_lora_step_equals_peft_under_torch_autocast() {
    let reference = LoraReference::load();
    let batches = Reference::load("sd15_tiny");
    let mut trainer = trainer(&reference, StepCompute { autocast: Some(Kind::BFloat16), gradient_checkpointing: false });
    let report = run_step(&mut trainer, &batches, 0);
    assert_report(report, &reference, "bf16.");
    let gradients = trainer.gradients();
    let (from_f32, _) = worst_error(&gradients, &reference, "grad.");
    assert!(from_f32 > 10.0 * TOLERANCE, "the gradients are the f32 step's ({from_f32:.2e}): autocast did not run");
    let (err, name) = worst_error(&gradients, &reference, "bf16.grad.");
    assert!(err <= TOLERANCE, "bf16 clipped gradient of {name}: relative error {err:.2e}");
}

/// UNet predictions of diffusers' pipeline with `load_lora_weights(folder)` on the sd15_tiny
/// reference's first UNet inputs.
fn diffusers_prediction_with_lora(folder: &Path, out: &Path) -> Tensor {
    let script = r#"
import sys, torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file
model, lora, reference, out = sys.argv[1:]
r = load_file(reference)
pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
pipe.load_lora_weights(lora)
with torch.no_grad():
    pred = pipe.unet(r["unet.0.latents"], r["unet.0.timesteps"], r["unet.0.encoder_hidden_states"]).sample
save_file({"pred": pred.contiguous()}, out)
"#;
    let status = Command::new(common::python())
        .args(["-c", script])
        .arg(pipeline("sd15_tiny"))
        .arg(folder)
        .arg(pipeline("sd15_tiny").join("reference.safetensors"))
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "diffusers could not load the saved adapter");
    Tensor::read_safetensors(out).unwrap().remove(0).1
}

#[test]
fn the_saved_adapter_read_by_diffusers_load_lora_weights_predicts_what_libdiffmine_predicts() {
    let reference = LoraReference::load();
    let batches = Reference::load("sd15_tiny");
    let mut trainer = trainer(&reference, StepCompute::default());
    run_step(&mut trainer, &batches, 0);
    let work = tempfile::tempdir().unwrap();
    let saved = work.path().join("lora");
    let sources = ComponentSources::resolve(&pipeline("sd15_tiny"), &Default::default(), &[]).unwrap();
    trainer.save(&sources, &saved).unwrap();
    let file = saved.join(LORA_WEIGHTS_FILE);
    let keys: Vec<String> = Tensor::read_safetensors(&file).unwrap().into_iter().map(|(k, _)| k).collect();
    assert!(keys.iter().all(|k| k.starts_with("unet.") && (k.ends_with(".lora_A.weight") || k.ends_with(".lora_B.weight"))), "diffusers/peft naming: {keys:?}");

    let get = |what: &str| batches.get(&format!("unet.0.{what}"));
    let predict = |model: &StableDiffusion| model.predict_noise(get("latents"), get("timesteps"), get("encoder_hidden_states")).unwrap();
    let on_the_fly = predict(trainer.model());
    let mut model = open();
    let base = predict(&model);
    model.load_lora(&file, 1.0).unwrap();
    let merged = predict(&model);
    common::assert_close(&merged, &on_the_fly, 1e-5, "the saved adapter merged vs applied on the fly while training");

    let theirs = diffusers_prediction_with_lora(&saved, &work.path().join("diffusers.safetensors"));
    common::assert_close(&merged, &theirs, TOLERANCE, "UNet with the saved adapter, libdiffmine vs diffusers' load_lora_weights");
    let change = relative_error(&merged, &base);
    println!("the adapter changes the UNet output by {change:.2e} (relative)");
    assert!(change > 100.0 * TOLERANCE, "the adapter changes the output by only {change:.2e}");
    assert!(!trainer.into_model().has_lora(), "the trainer gives the base model back");
}

fn loop_options(checkpoints: &Path, lora: LoraOptions) -> FinetuneOptions {
    FinetuneOptions {
        steps: 4,
        batch_size: 2,
        resolution: 32,
        seed: 7,
        condition_dropout: 0.5,
        checkpoint_every: 2,
        checkpoint_dir: Some(checkpoints.to_path_buf()),
        lora: Some(lora),
        ..FinetuneOptions::default()
    }
}

fn adapter_file(dir: &Path) -> Vec<(String, Tensor)> {
    common::sorted_tensors(&dir.join(LORA_WEIGHTS_FILE))
}

#[test]
fn a_lora_run_resumed_from_its_checkpoint_ends_with_the_same_adapter_and_leaves_the_base_file_alone() {
    let data = tiny_labelled_set();
    let set = LabelledSet::open(data.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let model_dir = common::scratch_copy("sd15_tiny");
    let weight_file = model_dir.path().join("unet/diffusion_pytorch_model.safetensors");
    let bytes_before = std::fs::read(&weight_file).unwrap();
    let (full, checkpoints) = (work.path().join("full"), work.path().join("checkpoints"));
    let options = loop_options(&checkpoints, LoraOptions { rank: 2, alpha: Some(3.0), targets: vec!["to_k".into(), "to_out.0".into()] });
    let report = finetune(model_dir.path(), &ModelOptions::default(), &set, &options, None, &full, &mut |_, _, _| true).unwrap();
    assert!(report.loss.is_finite());
    let adapter = adapter_file(&full);
    assert!(adapter.iter().all(|(k, _)| k.contains(".to_k.") || k.contains(".to_out.0.")), "only the chosen targets are adapted");
    assert!(adapter.iter().filter(|(k, _)| k.ends_with("lora_A.weight")).all(|(_, t)| t.size()[0] == 2), "rank 2");
    assert!(adapter.iter().filter(|(k, _)| k.ends_with("lora_B.weight")).any(|(_, t)| t.abs().max().double_value(&[]) > 0.0), "B trained away from zero");
    assert!(std::fs::read(&weight_file).unwrap() == bytes_before, "training wrote the base weight file");
    assert!(!full.join("unet").exists(), "a LoRA run writes the adapter, not a model");

    let resumed = work.path().join("resumed");
    finetune(model_dir.path(), &ModelOptions::default(), &set, &options, Some(&checkpoints.join("checkpoint-2")), &resumed, &mut |_, _, _| true).unwrap();
    for ((name, a), (_, b)) in adapter.iter().zip(adapter_file(&resumed).iter()) {
        assert!(a.equal(b), "{name} differs between the uninterrupted and the resumed run");
    }
}

#[test]
fn bad_lora_options_are_refused_with_a_clear_message() {
    let data = tiny_labelled_set();
    let set = LabelledSet::open(data.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cases = [
        (LoraOptions { rank: 0, ..LoraOptions::default() }, "rank must be at least 1"),
        (
            LoraOptions { targets: vec!["to_q".into(), "ff.net.2".into()], ..LoraOptions::default() },
            "unknown LoRA target ff.net.2 (choose from to_q, to_k, to_v, to_out.0)",
        ),
        (LoraOptions { targets: vec![], ..LoraOptions::default() }, "no LoRA targets"),
        (LoraOptions { alpha: Some(-1.0), ..LoraOptions::default() }, "alpha must be positive"),
    ];
    for (lora, message) in cases {
        let options = FinetuneOptions { checkpoint_every: 0, checkpoint_dir: None, ..loop_options(work.path(), lora.clone()) };
        let error =
            finetune(&pipeline("sd15_tiny"), &ModelOptions::default(), &set, &options, None, &work.path().join("out"), &mut |_, _, _| true).unwrap_err();
        assert!(matches!(error, diffmine::Error::InvalidArgument(_)) && error.to_string().contains(message), "{lora:?}: {error}");
        let error = Trainer::with_lora(open(), TrainOptions::default(), StepCompute::default(), &lora, &mut SplitMix64::new(0)).err().unwrap();
        assert!(error.to_string().contains(message), "{error}");
    }
    assert!(!work.path().join("out").exists(), "nothing written");
}
