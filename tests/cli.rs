//! The `diffmine` command line as a user meets it: help and defaults, exit statuses by class of failure,
//! lists given as repeated options (so a prompt may hold a comma), Ctrl-C, and the outputs' formats
//! read back by their peers (numpy for .npy, transformers' CLIP tokenizer for token ids). Runs the
//! built binary on the demo models (models/demo) and a small generated set.
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use diffmine::autoencoder::AutoencoderOptions;
use diffmine::cxr8::EvaluationOptions;
use diffmine::finetune::FinetuneOptions;
use diffmine::mining::cotypicality::report::ParallelReportOptions;
use diffmine::mining::cotypicality::ParallelMiningOptions;
use diffmine::mining::miner::MiningOptions;
use diffmine::translate::{GenerateOptions, TranslateOptions};
use diffmine::typicality::TypicalityOptions;

const SUBCOMMANDS: [&str; 15] = [
    "info",
    "tokenize",
    "roundtrip",
    "denoise",
    "typicality",
    "finetune",
    "train-vae",
    "synth",
    "mine",
    "dicom-info",
    "cxr8-eval",
    "translate",
    "generate",
    "parallel-mine",
    "completions",
];

fn diffmine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diffmine")).args(args).output().expect("run diffmine")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "exit status; stdout:\n{}\nstderr:\n{}", stdout(output), stderr(output));
}

fn demo(name: &str) -> String {
    common::repo_root().join("models/demo").join(name).display().to_string()
}

/// The finetuned demo model (its UNet) with the pretrained one's other components.
fn model_args() -> Vec<String> {
    vec!["--model".into(), demo("finetuned"), "--base".into(), demo("pretrained")]
}

fn with_model<'a>(model: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(model.iter().map(String::as_str)).collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = common::repo_root().join("target/cli-test").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 64 px held-out set of the demo models' generator, one image per label, made by `diffmine synth`.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("data").join("set");
        let out = diffmine(&["synth", "--out", dir.to_str().unwrap(), "--seed", "1", "--split", "held-out", "--per-label", "1", "--size", "64"]);
        assert_exit(&out, 0);
        dir
    })
}

fn an_image() -> String {
    let label = std::fs::read_dir(data_dir()).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.is_dir()).expect("a label folder");
    let image = std::fs::read_dir(label).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "png"));
    image.expect("an image").display().to_string()
}

#[test]
fn every_command_answers_help() {
    for command in SUBCOMMANDS {
        let out = diffmine(&[command, "--help"]);
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("Usage: diffmine"), "{command} --help:\n{}", stdout(&out));
    }
    let out = diffmine(&["--help"]);
    assert_exit(&out, 0);
    for command in SUBCOMMANDS {
        assert!(stdout(&out).contains(command), "diffmine --help lists {command}");
    }
}

/// The entry of `option` in `command --help`: its name line, description and default, trimmed.
fn help_entry(command: &str, option: &str) -> String {
    let help = help_text(command);
    let names = |line: &str| line.trim_start().split("  ").next().unwrap_or_default().split([' ', ',']).any(|word| word == option);
    let mut lines = help.lines().skip_while(|line| !(starts_entry(line) && names(line)));
    let first = lines.next().unwrap_or_else(|| panic!("`{command} --help` lists {option}:\n{help}"));
    let rest = lines.take_while(|line| !starts_entry(line));
    std::iter::once(first).chain(rest).map(str::trim).collect::<Vec<_>>().join("\n")
}

/// `command --help`, run once per command (each run loads libtorch).
fn help_text(command: &str) -> String {
    static TEXTS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let mut texts = TEXTS.lock().unwrap();
    texts.entry(command.to_string()).or_insert_with(|| stdout(&diffmine(&[command, "--help"]))).clone()
}

/// Whether a help line starts an option's entry or a heading.
fn starts_entry(line: &str) -> bool {
    let text = line.trim_start();
    let indent = line.len() - text.len();
    (indent <= 6 && text.starts_with('-')) || (indent == 0 && !text.is_empty())
}

fn assert_default(command: &str, option: &str, default: impl std::fmt::Display) {
    let entry = help_entry(command, option);
    // clap quotes a default that holds spaces.
    let shown = [format!("[default: {default}]"), format!("[default: \"{default}\"]")];
    assert!(shown.iter().any(|s| entry.contains(s)), "`{command} --help` shows {option}'s default {default}:\n{entry}");
}

#[test]
fn help_shows_the_librarys_defaults() {
    let t = TypicalityOptions::default();
    assert_default("typicality", "--samples", t.samples);
    assert_default("typicality", "--batch", t.batch);
    assert_default("typicality", "--t-min", t.t_min);
    assert_default("typicality", "--t-max", t.t_max);
    assert_default("typicality", "--seed", t.seed);
    assert_default("typicality", "--latent", "sample");
    assert_default("typicality", "--device", "cpu");
    assert_default("typicality", "--dtype", "float32");
    let m = MiningOptions::default();
    assert_default("mine", "--prompt", &m.prompt_template);
    assert_default("mine", "--patch", m.patch_size);
    assert_default("mine", "--per-image", m.per_image);
    assert_default("mine", "--top", m.top);
    assert_default("mine", "--ensemble", m.dift.ensemble);
    assert_default("mine", "--clusters", m.cluster.clusters);
    assert_default("mine", "--restarts", m.cluster.restarts);
    let tr = TranslateOptions::default();
    assert_default("translate", "--steps", tr.steps);
    assert_default("translate", "--inversion-steps", tr.inversion_steps);
    assert_default("translate", "--guidance", tr.guidance);
    assert_default("translate", "--resnet-injection", tr.resnet_injection);
    assert_default("translate", "--attention-injection", tr.attention_injection);
    assert_default("translate", "--latent", "mean");
    let f = FinetuneOptions::default();
    assert_default("finetune", "--steps", f.steps);
    assert_default("finetune", "--batch", f.batch_size);
    assert_default("finetune", "--lr", f.train.learning_rate);
    assert_default("finetune", "--dropout", f.condition_dropout);
    assert_default("finetune", "--caption", &f.caption_template);
    assert_default("finetune", "--resolution", f.resolution);
    let a = AutoencoderOptions::default();
    assert_default("train-vae", "--kl-weight", a.kl_weight);
    assert_default("train-vae", "--resolution", a.resolution);
    let g = GenerateOptions::default();
    assert_default("generate", "--size", g.height);
    assert_default("generate", "--steps", g.steps);
    let p = ParallelMiningOptions::default();
    assert_default("parallel-mine", "--top", p.top);
    assert_default("parallel-mine", "--per-set", p.per_set);
    assert_default("parallel-mine", "--projection", "umap");
    assert_default("parallel-mine", "--strips", ParallelReportOptions::default().strips);
    let e = EvaluationOptions::default();
    assert_default("cxr8-eval", "--size", e.working_size);
    assert_default("cxr8-eval", "--disease", e.diseases.join(" "));
    // Flags take no value.
    let antithetic = help_entry("typicality", "--antithetic");
    assert_eq!(antithetic.lines().next().and_then(|line| line.split("  ").next()), Some("--antithetic"), "{antithetic}");
}

#[test]
fn version_is_the_crates() {
    let out = diffmine(&["--version"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), format!("diffmine {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = diffmine(&["completions", shell]);
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("parallel-mine") && stdout(&out).contains("null-prompt"), "{shell} completions");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_exit(&diffmine(&["synth", "--out", "target/cli-test/never", "--electrode-rate", "0"]), 2);
    assert!(!Path::new("target/cli-test/never").exists());
    assert_exit(&diffmine(&["mien"]), 2);
    assert_exit(&diffmine(&["typicality", "--model", "m"]), 2); // required options missing
    assert_exit(&diffmine(&["typicality", "--samples", "many"]), 2);
    assert_exit(&diffmine(&[]), 2);
}

#[test]
fn a_missing_image_is_an_io_failure() {
    // The library reports a file it cannot read as I/O (5): the remedy is the path or the disk, as
    // for an output it cannot write. Content it cannot decode is bad input (3).
    let model = model_args();
    let out = diffmine(&with_model(&model, &["roundtrip", "--image", "target/cli-test/no-such-image.png", "--out", "target/cli-test/never.png"]));
    assert_exit(&out, 5);
    assert!(stderr(&out).contains("no-such-image.png"), "{}", stderr(&out));
}

#[test]
fn an_undecodable_image_is_bad_input() {
    let dir = scratch("undecodable");
    let image = dir.join("text.png");
    std::fs::write(&image, "not an image").unwrap();
    let model = model_args();
    let out = diffmine(&with_model(&model, &["roundtrip", "--image", image.to_str().unwrap(), "--out", dir.join("out.png").to_str().unwrap()]));
    assert_exit(&out, 3);
    assert!(!dir.join("out.png").exists());
}

#[test]
fn a_bad_model_folder_exits_4() {
    let dir = scratch("bad-model");
    let out = diffmine(&["info", "--model", dir.to_str().unwrap()]);
    assert_exit(&out, 4);
    std::fs::create_dir_all(dir.join("unet")).unwrap();
    std::fs::write(dir.join("unet/config.json"), "{ not json").unwrap();
    assert_exit(&diffmine(&["info", "--model", dir.to_str().unwrap(), "--base", &demo("pretrained")]), 4);
}

#[test]
fn an_unwritable_output_exits_5() {
    let model = model_args();
    let out = diffmine(&with_model(&model, &["roundtrip", "--image", &an_image(), "--out", "target/cli-test/no-such-folder/out.png"]));
    assert_exit(&out, 5);
}

#[test]
fn a_bad_device_is_bad_input() {
    let model = model_args();
    assert_exit(&diffmine(&with_model(&model, &["info", "--device", "tpu"])), 3);
}

#[test]
fn a_text_with_a_comma_is_tokenized_whole_as_transformers_does() {
    let text = "Chest X-Ray with Nodule, left lung.";
    let out = diffmine(&["tokenize", "--model", &demo("pretrained"), "--text", text]);
    assert_exit(&out, 0);
    let ids: Vec<i64> = stdout(&out).trim().trim_matches(['[', ']']).split(", ").map(|s| s.parse().unwrap()).collect();
    let script = "import sys\nfrom transformers import CLIPTokenizer\n\
        t = CLIPTokenizer.from_pretrained(sys.argv[1])\n\
        print(t(sys.argv[2], padding='max_length', max_length=t.model_max_length, truncation=True).input_ids)";
    let tokenizer = common::repo_root().join("models/demo/pretrained/tokenizer");
    let reference = Command::new(common::python()).args(["-c", script]).arg(&tokenizer).arg(text).output().expect("python");
    assert!(reference.status.success(), "{}", stderr(&reference));
    let expected: Vec<i64> = stdout(&reference).trim().trim_matches(['[', ']']).split(", ").map(|s| s.parse().unwrap()).collect();
    assert_eq!(ids, expected);
}

#[test]
fn repeated_targets_give_one_translation_each_and_keep_their_commas() {
    let dir = scratch("translate");
    let prefix = dir.join("t").display().to_string();
    // The demo UNet is too small for the Plug-and-Play injection sites; the reference's test pipeline has them.
    let model = vec!["--model".to_string(), common::translate_fixture_dir().display().to_string()];
    let args = [
        "translate",
        "--image",
        &an_image(),
        "--source-prompt",
        "Chest X-Ray with Nodule.",
        "--target",
        "Chest X-Ray with Effusion, large.",
        "--target",
        "Chest X-Ray.",
        "--steps",
        "2",
        "--inversion-steps",
        "2",
        "--out",
        &prefix,
    ];
    let out = diffmine(&with_model(&model, &args));
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("2 translations in"), "{text}");
    assert!(text.contains("0: Chest X-Ray with Effusion, large.\n") && text.contains("1: Chest X-Ray.\n"), "{text}");
    for name in ["t_0.png", "t_1.png", "t_reconstruction.png"] {
        assert!(dir.join(name).exists(), "{name}");
    }
    assert!(!dir.join("t_2.png").exists());
}

#[test]
fn typicality_writes_a_map_numpy_reads() {
    let dir = scratch("typicality");
    let prefix = dir.join("map").display().to_string();
    let model = model_args();
    let args = [
        "typicality",
        "--image",
        &an_image(),
        "--prompt",
        "Chest X-Ray with Nodule.",
        "--null-prompt",
        "Chest X-Ray.",
        "--samples",
        "4",
        "--antithetic",
        "--out",
        &prefix,
    ];
    let out = diffmine(&with_model(&model, &args));
    assert_exit(&out, 0);
    let text = stdout(&out);
    let mean: f64 = text.split("mean ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{text}"));
    let script = "import sys, numpy as np\nm = np.load(sys.argv[1])\nprint(m.dtype, m.shape, float(m.astype(np.float64).mean()))";
    let reference = Command::new(common::python()).args(["-c", script, &format!("{prefix}.npy")]).output().expect("python");
    assert!(reference.status.success(), "{}", stderr(&reference));
    let read = stdout(&reference);
    assert!(read.starts_with("float32 (64, 64) "), "{read}");
    let numpy_mean: f64 = read.split_whitespace().last().unwrap().parse().unwrap();
    assert!((numpy_mean - mean).abs() <= 1e-5 + 1e-4 * mean.abs(), "numpy's mean {numpy_mean}, the CLI's {mean}");
    assert!(dir.join("map.png").exists());
}

/// `--dicom-out seg` files the map of a DICOM image as a fractional Segmentation of its study: pydicom
/// reads the segment's probabilities as the map of PREFIX.npy min–max scaled (same grid: no
/// resampling), within half a step of 255, and the options the map was computed with.
#[test]
fn typicality_files_a_segmentation_of_a_dicom_image() {
    let dir = scratch("typicality-seg");
    let dicom = dir.join("dicom");
    let out =
        diffmine(&["synth", "--out", dir.join("png").to_str().unwrap(), "--dicom", dicom.to_str().unwrap(), "--seed", "1", "--per-label", "1", "--size", "64"]);
    assert_exit(&out, 0);
    let image = std::fs::read_dir(dicom.join("Nodule")).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).next().expect("a DICOM image");
    let prefix = dir.join("map").display().to_string();
    let model = model_args();
    let args = [
        "typicality",
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "Chest X-Ray with Nodule.",
        "--null-prompt",
        "Chest X-Ray.",
        "--samples",
        "2",
        "--seed",
        "9",
        "--out",
        &prefix,
        "--dicom-out",
        "seg",
        "--dicom-label",
        "Nodule",
    ];
    let out = diffmine(&with_model(&model, &args));
    assert_exit(&out, 0);
    let script = "import sys, json, numpy as np, pydicom\n\
        m = np.load(sys.argv[1]).astype(np.float64)\n\
        ds = pydicom.dcmread(sys.argv[2])\n\
        p = ds.pixel_array / float(ds.MaximumFractionalValue)\n\
        expected = (m - m.min()) / (m.max() - m.min())\n\
        c = json.loads(ds.ImageComments)\n\
        print(ds.SOPClassUID, ds.SegmentSequence[0].SegmentLabel, c['prompt'], c['samples'], c['seed'], float(np.abs(p - expected).max()))";
    let reference = Command::new(common::python()).args(["-c", script, &format!("{prefix}.npy"), &format!("{prefix}.dcm")]).output().expect("python");
    assert!(reference.status.success(), "{}", stderr(&reference));
    let read = stdout(&reference);
    let (head, worst) = read.trim().rsplit_once(' ').unwrap();
    assert_eq!(head, "1.2.840.10008.5.1.4.1.1.66.4 Nodule Chest X-Ray with Nodule. 2 9");
    assert!(worst.parse::<f64>().unwrap() <= 0.5 / 255.0 + 1e-6, "{read}");
}

#[test]
fn ctrl_c_cancels_typicality_with_130_and_no_output() {
    let dir = scratch("cancel");
    let prefix = dir.join("map").display().to_string();
    let model = model_args();
    let args = [
        "typicality",
        "--image",
        &an_image(),
        "--prompt",
        "Chest X-Ray with Nodule.",
        "--null-prompt",
        "Chest X-Ray.",
        "--samples",
        "1000",
        "--batch",
        "1",
        "--out",
        &prefix,
    ];
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_diffmine")).arg("-v").args(with_model(&model, &args)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Interrupted once the model is loaded (its log line) and the sampling has had a moment to start.
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("model loaded") {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "diffmine ended before loading the model:\n{seen}");
        seen.push_str(&line);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "typicality finished before it could be interrupted");
    // SAFETY: kill(2) with the child's own process id and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // A bound against a hang, not a timing check: a cancelled run stops after its current UNet batch.
        if signalled.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("typicality did not stop within a minute of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("stopped {:.2} s after SIGINT", signalled.elapsed().as_secs_f64());
    log.read_to_string(&mut seen).unwrap();
    assert_eq!(status.code(), Some(130), "stderr:\n{seen}");
    assert!(seen.contains("cancelled"), "{seen}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "a cancelled run left {left:?}");
}
