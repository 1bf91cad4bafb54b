//! Typicality maps (paper Eq. 3) against the authors' loop in diffusers, with the same noise and
//! timesteps; independence from the batch size; bad input.
mod common;

use common::{assert_close, pipeline, Reference};
use diffmine::model::{ModelOptions, StableDiffusion};
use diffmine::typicality::{typicality, typicality_streamed, LatentMode, TypicalityOptions};
use diffmine::Error;
use tch::Tensor;

fn open(config: &str) -> StableDiffusion {
    StableDiffusion::open(&pipeline(config), &ModelOptions::default()).unwrap()
}

fn prompts(reference: &Reference) -> (String, String) {
    let p = reference.json["typicality_prompts"].as_array().unwrap();
    (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string())
}

fn no_progress() -> impl FnMut(u64, u64) -> bool {
    |_, _| true
}

#[test]
fn map_and_sample_losses_equal_the_diffusers_loop_with_the_same_noise_and_timesteps() {
    for config in ["sd15_tiny", "sd2_tiny"] {
        let model = open(config);
        let reference = Reference::load(config);
        let (prompt, null) = prompts(&reference);
        let timesteps = Vec::<i64>::try_from(reference.get("typicality.timesteps")).unwrap();
        let options = TypicalityOptions {
            samples: timesteps.len(),
            batch: 4,
            latent: LatentMode::Mean,
            noise: Some(reference.get("typicality.noise").shallow_clone()),
            timesteps: Some(timesteps),
            keep_sample_losses: true,
            ..TypicalityOptions::default()
        };
        let result = typicality(&model, reference.get("vae.0.image"), &prompt, &null, &options, &mut no_progress()).unwrap();
        let sample_losses = result.sample_losses.as_ref().expect("the losses were asked for");
        assert_close(sample_losses, reference.get("typicality.sample_losses"), 1e-4, &format!("{config} sample losses"));
        assert_close(&result.map, reference.get("typicality.map"), 1e-4, &format!("{config} map"));
    }
}

fn drawn_map(model: &StableDiffusion, image: &Tensor, batch: usize, seed: u64) -> Tensor {
    let options = TypicalityOptions { samples: 10, batch, seed, ..TypicalityOptions::default() };
    typicality(model, image, "Chest X-Ray with Effusion.", "Chest X-Ray.", &options, &mut no_progress()).unwrap().map
}

#[test]
fn the_per_sample_losses_are_kept_only_when_asked_for_and_streamed_batch_by_batch() {
    let model = open("sd15_tiny");
    let image = Reference::load("sd15_tiny").get("vae.0.image").shallow_clone();
    let options = |keep_sample_losses| TypicalityOptions { samples: 5, batch: 2, keep_sample_losses, ..TypicalityOptions::default() };
    let plain = typicality(&model, &image, "a", "", &options(false), &mut no_progress()).unwrap();
    assert!(plain.sample_losses.is_none());
    let kept = typicality(&model, &image, "a", "", &options(true), &mut no_progress()).unwrap();
    let kept_losses = kept.sample_losses.expect("asked for");
    assert_eq!(kept_losses.size()[..2], [5, 2]);
    assert!(kept.map.equal(&plain.map), "keeping the losses does not change the map");
    let mut batches = Vec::new();
    let map = typicality_streamed(&model, &image, "a", "", &options(false), &mut no_progress(), &mut |first, losses| {
        batches.push((first, losses.copy()));
        Ok(())
    })
    .unwrap();
    assert!(map.equal(&plain.map));
    assert_eq!(batches.iter().map(|(first, l)| (*first, l.size()[0])).collect::<Vec<_>>(), vec![(0, 2), (2, 2), (4, 1)]);
    assert!(Tensor::cat(&batches.iter().map(|(_, l)| l).collect::<Vec<_>>(), 0).equal(&kept_losses));
}

#[test]
fn batch_sizes_1_3_and_10_give_the_same_map() {
    let model = open("sd15_tiny");
    let image = Reference::load("sd15_tiny").get("vae.1.image").shallow_clone();
    let full = drawn_map(&model, &image, 10, 42);
    assert_eq!(full.size(), vec![24, 40], "the map has the image's size");
    for batch in [1, 3] {
        // The map is a small difference of two large losses, so batching's float rounding shows at ~1e-5.
        assert_close(&drawn_map(&model, &image, batch, 42), &full, 1e-4, &format!("batch {batch}"));
    }
    let other_seed = drawn_map(&model, &image, 10, 43);
    assert!(common::relative_error(&other_seed, &full) > 1e-3, "another seed draws other noise");
}

#[test]
fn progress_reports_each_batch_and_a_false_return_cancels() {
    let model = open("sd15_tiny");
    let image = Reference::load("sd15_tiny").get("vae.0.image").shallow_clone();
    let mut seen = Vec::new();
    let options = TypicalityOptions { samples: 5, batch: 2, ..TypicalityOptions::default() };
    typicality(&model, &image, "a", "", &options, &mut |done, total| {
        seen.push((done, total));
        true
    })
    .unwrap();
    assert_eq!(seen, vec![(2, 5), (4, 5), (5, 5)]);
    let cancelled = typicality(&model, &image, "a", "", &options, &mut |_, _| false);
    assert!(matches!(cancelled, Err(Error::Cancelled)));
}

#[test]
fn bad_options_are_invalid_arguments_that_say_what_is_wrong() {
    let model = open("sd15_tiny");
    let image = Reference::load("sd15_tiny").get("vae.0.image").shallow_clone();
    let run = |options: TypicalityOptions, prompt: &str| -> String {
        match typicality(&model, &image, prompt, "", &options, &mut no_progress()) {
            Err(Error::InvalidArgument(message)) => message,
            Err(other) => panic!("expected an invalid argument, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    };
    assert!(run(TypicalityOptions { samples: 0, ..TypicalityOptions::default() }, "a").contains("at least 1"));
    assert!(run(TypicalityOptions { samples: diffmine::typicality::MAX_SAMPLES + 1, ..TypicalityOptions::default() }, "a").contains("at most 1048576"));
    assert!(run(TypicalityOptions { t_min: 0.7, t_max: 0.1, ..TypicalityOptions::default() }, "a").contains("t_min < t_max"));
    assert!(run(TypicalityOptions { t_max: 1.5, ..TypicalityOptions::default() }, "a").contains("t_max <= 1"));
    assert!(run(TypicalityOptions { t_min: 0.1, t_max: 0.1005, ..TypicalityOptions::default() }, "a").contains("no integer timestep"));
    assert!(run(TypicalityOptions::default(), "").contains("label prompt is empty"));
    let half = TypicalityOptions { samples: 2, timesteps: Some(vec![1, 2]), ..TypicalityOptions::default() };
    assert!(run(half, "a").contains("together"));
    let wrong_noise = TypicalityOptions {
        samples: 2,
        timesteps: Some(vec![1, 2]),
        noise: Some(Tensor::zeros([2, 4, 8, 8], (tch::Kind::Float, tch::Device::Cpu))),
        ..TypicalityOptions::default()
    };
    assert!(run(wrong_noise, "a").contains("noise must be [2, 4, 16, 16]"));
}
