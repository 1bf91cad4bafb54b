//! The `diffmine` command line: thin wrappers over the library for people who do not write code.
//!
//! diffmine info      --model DIR [--device D] [--dtype T] [--variant V]
//! diffmine tokenize  --model DIR --text TEXT
//! diffmine roundtrip --model DIR --image FILE --out FILE.png   (VAE encode then decode)
//! diffmine denoise   --model DIR --image FILE --prompt TEXT --t STEP --out FILE.png
//! diffmine typicality --model DIR --image FILE --prompt TEXT --null-prompt TEXT --out PREFIX
//!                    [--samples N] [--seed S] [--batch B] [--resize SHORT_SIDE] [--patch K]
//! diffmine train-vae --model DIR --data DIR_OR_CSV --out DIR   (the VAE as an autoencoder, for new models)
//! diffmine synth     --out DIR [--seed S] [--per-label N] [--size PX] [--split train|held-out]
//!                    (a labelled radiograph-like set with planted, boxed elements)
//! diffmine dicom-info --image FILE   (a DICOM file's metadata and decoded size)
//! diffmine cxr8-eval --model FT --baseline PT --images DIR --bbox CSV --data-entry CSV --out DIR
//!                    (ChestX-ray8 AUC-PR of typicality maps against the boxes, per disease)
//! diffmine translate --model DIR --image FILE --source-prompt TEXT --target TEXT[,TEXT...] --out PREFIX
//!                    (Plug-and-Play: PREFIX_<i>.png per target and PREFIX_reconstruction.png)
//! diffmine generate  --model DIR --prompt TEXT --out FILE.png   (text-to-image DDIM sampling)
//! diffmine parallel-mine --model DIR --data DIR_OR_CSV --out DIR
//!                    (co-typical elements: every image translated to every other label; a CSV of the
//!                    elements, one strip figure per cluster and index.html)
//!
//! Images may be PNG, JPEG or DICOM wherever a command reads one.
//!
//! Log detail follows RUST_LOG (e.g. RUST_LOG=diffmine=debug shows a span per model part).
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use diffmine::autoencoder::{train_autoencoder, AutoencoderOptions};
use diffmine::cxr8::{evaluate_files, EvaluationFiles, EvaluationOptions};
use diffmine::dataset::LabelledSet;
use diffmine::dicom::{open_image, DicomFile, DicomOptions, MapKind};
use diffmine::finetune::{finetune, FinetuneOptions, StepCompute, TrainOptions};
use diffmine::image::{to_rgb8, to_rgb_image};
use diffmine::mining::cluster::ClusterOptions;
use diffmine::mining::cotypicality::report::{write_parallel_report, ParallelReportOptions, ReportSource, VersionStore};
use diffmine::mining::cotypicality::{mine_parallel_sets, ParallelMiningOptions, ParallelSource, Projection};
use diffmine::mining::dift::DiftOptions;
use diffmine::mining::miner::{mine, MiningOptions, StageTimes};
use diffmine::mining::patches::select_patches;
use diffmine::mining::report::{write_comparison, write_report, ReportOptions};
use diffmine::model::{parse_device, parse_dtype, ComponentOverrides, ModelOptions, StableDiffusion};
#[cfg(feature = "synthetic")]
use diffmine::synthetic::{write_dataset, write_dicom_copies, SyntheticOptions};
use diffmine::translate::{generate, translate, GenerateOptions, TranslateOptions};
use diffmine::typicality::{typicality, LatentMode, TypicalityOptions};
use diffmine::{Error, Result};
use tch::{Kind, Tensor};

const USAGE: &str = "usage:
  diffmine info      --model DIR [--device cpu|cuda[:N]] [--dtype float32|bfloat16|float16] [--variant fp16]
                     [--base DIR]   (every command: components the model folder lacks come from DIR)
  diffmine tokenize  --model DIR --text TEXT
  diffmine roundtrip --model DIR --image FILE --out FILE.png
  diffmine denoise   --model DIR --image FILE --prompt TEXT --t STEP --out FILE.png [--seed N]
  diffmine typicality --model DIR --image FILE --prompt TEXT --null-prompt TEXT --out PREFIX
                     [--samples 100] [--seed 42] [--batch 10] [--t-min 0.1] [--t-max 0.7]
                     [--latent sample|mean] [--resize SHORT_SIDE] [--patch K] [--dicom-out overlay|raw]
                     [--antithetic false|true] [--stratified false|true]
  diffmine finetune  --model DIR --data DIR_OR_CSV --out DIR [--steps 1000] [--batch 8] [--resolution 512]
                     [--caption \"Image of {label}.\"] [--null-prompt \"\"] [--dropout 0.05] [--lr 1e-4]
                     [--seed 0] [--checkpoint-every N] [--resume CHECKPOINT_DIR]
                     [--autocast float32|bfloat16] [--gradient-checkpointing false|true]
  diffmine train-vae --model DIR --data DIR_OR_CSV --out DIR [--steps 1000] [--batch 8] [--resolution 64]
                     [--lr 1e-3] [--kl-weight 1e-4] [--seed 0]   (the VAE as an autoencoder, for new models)
  diffmine synth     --out DIR [--seed 0] [--per-label 200] [--size 64] [--split train|held-out]
                     [--dicom DIR]   (the same images also as DICOM files, DIR/<label>/<name>.dcm)
  diffmine mine      --model DIR --data DIR_OR_CSV --prompt \"Image of {label}.\" --null-prompt TEXT --out DIR
                     [--samples 100] [--seed 42] [--batch 10] [--resize SHORT_SIDE] [--patch 64] [--per-image 5]
                     [--top 1000] [--ensemble 8] [--clusters 32] [--restarts 10] [--cache DIR]
                     [--baseline DIR [--baseline-base DIR]]   (both models side by side in one report)
  diffmine dicom-info --image FILE [--frame 0]
  diffmine cxr8-eval --model FT --images DIR --bbox BBox_List_2017.csv --out DIR [--baseline PT]
                     [--data-entry Data_Entry_2017.csv] [--limit PAIRS] [--diseases A,B] [--size 512]
                     [--samples 100] [--t-min 0] [--t-max 1] [--seed 42] [--batch 10] [--baseline-base DIR]
  diffmine translate --model DIR --image FILE --source-prompt TEXT --target TEXT[,TEXT...] --out PREFIX
                     [--steps 50] [--inversion-steps 999] [--guidance 7.5] [--resnet-injection 0.8]
                     [--attention-injection 0.5] [--null-prompt \"\"] [--latent mean|sample] [--seed 42]
                     (writes PREFIX_<i>.png per target, in order, and PREFIX_reconstruction.png)
  diffmine generate  --model DIR --prompt TEXT --out FILE.png [--steps 50] [--guidance 7.5] [--seed 42]
                     [--size 512] [--null-prompt \"\"]
  diffmine parallel-mine --model DIR --data DIR_OR_CSV --out DIR [--prompt \"Image of {label}.\"]
                     [--null-prompt \"\"] [--steps 50] [--inversion-steps 999] [--guidance 7.5]
                     [--resize SHORT_SIDE] [--samples 100] [--ensemble 8] [--patch 64] [--per-set 5]
                     [--top 10000] [--clusters 32] [--restarts 10] [--strips 32] [--per-strip 8]
                     [--resnet-injection 0.8] [--attention-injection 0.5] [--latent mean|sample] [--seed 42]
                     [--projection umap|pca] [--neighbors 15]   (UMAP as the authors, or PCA)
                     (images with one label each; writes elements.csv, versions/, strip_<rank>.png, index.html)
  Images (--image, --images) may be PNG, JPEG or DICOM; typicality of a DICOM image can go back as
  DICOM with --dicom-out overlay|raw (a Secondary Capture in the source's study, at PREFIX.dcm).";

/// The options every command that opens a model takes besides the ones its usage block lists.
const MODEL_OPTIONS: [&str; 4] = ["device", "dtype", "variant", "base"];

/// The options `command` takes, read from its block in [`USAGE`] (the line that starts with
/// `diffmine <command>` and the indented lines under it), so the help text is the one list of them.
fn accepted_options(command: &str) -> Vec<&'static str> {
    let mut accepted = Vec::new();
    let mut in_block = false;
    for line in USAGE.lines().skip(1) {
        if let Some(rest) = line.strip_prefix("  diffmine ") {
            in_block = rest.split_whitespace().next() == Some(command);
        } else if !line.starts_with("   ") {
            in_block = false;
        }
        if in_block {
            accepted.extend(line.split_whitespace().filter_map(option_name));
        }
    }
    if accepted.contains(&"model") {
        accepted.extend(MODEL_OPTIONS);
    }
    accepted
}

/// `name` of a usage token such as `[--seed`, `--model` or `--data-entry`.
fn option_name(token: &str) -> Option<&str> {
    let name = token.trim_start_matches('[').strip_prefix("--")?;
    let end = name.find(|c: char| !(c.is_ascii_lowercase() || c == '-')).unwrap_or(name.len());
    Some(&name[..end]).filter(|n| !n.is_empty())
}

/// `--key value` pairs after the subcommand.
struct Args(HashMap<String, String>);

impl Args {
    /// Rejects an option the command does not take, before any work starts: a mistyped or
    /// misplaced option would otherwise be ignored and the command run with its default.
    fn parse(command: &str, rest: &[String]) -> Result<Self> {
        let accepted = accepted_options(command);
        let mut map = HashMap::new();
        let mut items = rest.iter();
        while let Some(key) = items.next() {
            let name = key.strip_prefix("--").ok_or_else(|| Error::InvalidArgument(format!("unexpected argument `{key}`")))?;
            if !accepted.contains(&name) {
                let list = accepted.iter().map(|a| format!("--{a}")).collect::<Vec<_>>().join(" ");
                return Err(Error::InvalidArgument(format!("`diffmine {command}` has no option `{key}`; it takes {list}")));
            }
            let value = items.next().ok_or_else(|| Error::InvalidArgument(format!("`{key}` needs a value")))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Args(map))
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.0.get(name).map(String::as_str).ok_or_else(|| Error::InvalidArgument(format!("--{name} is required")))
    }

    fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An optional value parsed as `T`, or `default` when absent.
    fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.optional(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| Error::InvalidArgument(format!("--{name}: cannot read `{text}`"))),
        }
    }
}

/// Model options from `--device`, `--dtype`, `--variant` and `--base DIR` (the components a folder
/// lacks — a finetuned folder may hold only its UNet — come from DIR).
fn model_options(args: &Args) -> Result<ModelOptions> {
    let model = Path::new(args.required("model")?);
    let base = args.optional("base").map(PathBuf::from);
    let from_base = |name: &str| base.as_ref().filter(|_| !model.join(name).exists()).map(|b| b.join(name));
    Ok(ModelOptions {
        device: parse_device(args.optional("device").unwrap_or("cpu"))?,
        dtype: parse_dtype(args.optional("dtype").unwrap_or("float32"))?,
        variant: args.optional("variant").map(String::from),
        overrides: ComponentOverrides {
            unet: from_base("unet"),
            vae: from_base("vae"),
            text_encoder: from_base("text_encoder"),
            tokenizer: from_base("tokenizer"),
            scheduler: from_base("scheduler"),
        },
    })
}

fn open_model(args: &Args) -> Result<StableDiffusion> {
    StableDiffusion::open(Path::new(args.required("model")?), &model_options(args)?)
}

/// The model of `--baseline DIR` (components it lacks from `--baseline-base DIR`), on the same
/// device and dtype as `--model`.
fn open_baseline(args: &Args) -> Result<StableDiffusion> {
    let mut baseline_args = Args(args.0.clone());
    baseline_args.0.insert("model".into(), args.required("baseline")?.into());
    match args.optional("baseline-base") {
        Some(base) => baseline_args.0.insert("base".into(), base.into()),
        None => baseline_args.0.remove("base"),
    };
    open_model(&baseline_args)
}

/// A PNG, JPEG or DICOM file (DICOM frame 0 through its own window) as the model's input.
fn image_tensor(path: &Path, short_side: Option<usize>) -> Result<Tensor> {
    open_image(path, &DicomOptions::default())?.view().to_model_input_resized(short_side)
}

fn write_png(images: &Tensor, path: &Path) -> Result<()> {
    to_rgb_image(images)?.save(path).map_err(|e| Error::io(path, e))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn info(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let unet = model.unet().config();
    let vae = model.vae().config();
    println!("device: {:?}, dtype: {:?}", model.device(), model.dtype());
    println!("unet: blocks {:?} {:?}, channels {:?}", unet.down_block_types, unet.up_block_types, unet.block_out_channels);
    println!("vae: channels {:?}, latent channels {}, scaling factor {}", vae.block_out_channels, vae.latent_channels, vae.scaling_factor);
    println!("text encoder: width {}, {} layers", model.text_embedding_dim(), model.text_encoder().config().num_hidden_layers);
    let schedule = model.schedule();
    println!("schedule: {} steps, {} betas, {:?} prediction", schedule.train_steps(), schedule.config().beta_schedule, schedule.prediction_type());
    Ok(())
}

fn tokenize(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    println!("{:?}", model.tokenize(args.required("text")?));
    Ok(())
}

fn roundtrip(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let latents = model.encode_mean(&image_tensor(Path::new(args.required("image")?), None)?)?;
    println!("latents {:?}, mean {:.4}, std {:.4}", latents.size(), latents.mean(Kind::Float).double_value(&[]), latents.std(true).double_value(&[]));
    write_png(&model.decode(&latents)?, &PathBuf::from(args.required("out")?))
}

/// Noises an image's latents to step t, predicts the noise under a prompt, and decodes the one-step
/// estimate of the clean latents: a quick look at what the model has learnt.
fn denoise(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let t: i64 = args.required("t")?.parse().map_err(|_| Error::InvalidArgument("--t must be an integer timestep".into()))?;
    let seed: i64 = args.optional("seed").unwrap_or("42").parse().map_err(|_| Error::InvalidArgument("--seed must be an integer".into()))?;
    let x0 = model.encode_mean(&image_tensor(Path::new(args.required("image")?), None)?)?;
    tch::manual_seed(seed);
    let noise = Tensor::randn(x0.size(), (Kind::Float, tch::Device::Cpu)).to_device(x0.device());
    let timesteps = Tensor::from_slice(&[t]);
    let schedule = model.schedule();
    let noisy = schedule.add_noise(&x0, &noise, &timesteps)?;
    let context = model.text_embeddings(&[args.required("prompt")?])?;
    let output = model.predict_noise(&noisy, &timesteps, &context)?;
    let eps = schedule.to_epsilon(&output, &noisy, &timesteps)?;
    let loss = (&eps - &noise).square().mean(Kind::Float).double_value(&[]);
    println!("t = {t}: noise prediction mse {loss:.5}");
    let abar = schedule.alphas_cumprod().double_value(&[t]);
    let estimate = (&noisy - eps * (1.0 - abar).sqrt()) / abar.sqrt();
    write_png(&model.decode(&estimate)?, &PathBuf::from(args.required("out")?))
}

/// A one-line progress bar with the time left (and the loss, where there is one), redrawn in place
/// when stderr is a terminal; elsewhere a line every 30 s.
fn progress_bar() -> impl FnMut(u64, u64, f64) -> bool {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    // A log file gets a line every half minute instead of a redrawn bar, so long jobs show progress there.
    let mut last_line = started;
    move |done, total, value| {
        let fraction = done as f64 / total.max(1) as f64;
        let left = started.elapsed().as_secs_f64() * (1.0 - fraction) / fraction.max(1e-9);
        let loss = if value.is_nan() { String::new() } else { format!(", loss {value:.4}") };
        if terminal {
            let filled = (fraction * 30.0).round() as usize;
            eprint!("\r[{}{}] {done}/{total}{loss}, {left:.0} s left ", "#".repeat(filled), " ".repeat(30 - filled));
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        } else if done == total || last_line.elapsed().as_secs() >= 30 {
            last_line = Instant::now();
            eprintln!("{done}/{total}{loss}, {left:.0} s left");
        }
        true
    }
}

/// Writes a float32 array in NumPy's .npy format (version 1.0, little-endian, C order).
fn write_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // The header, with the 10-byte preamble and a final newline, pads to a multiple of 64 bytes.
    let padding = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(padding % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Blends a diverging colour map of the typicality (red: typical of the label, blue: atypical,
/// scaled by the largest magnitude) over the image.
fn overlay(image: &Tensor, map: &[f32], path: &Path) -> Result<()> {
    let (_, _, h, w) = image.size4()?;
    let rgb = to_rgb8(image)?;
    let scale = map.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let mut out = Vec::with_capacity(rgb.len());
    for (i, v) in map.iter().enumerate() {
        let s = (v / scale).clamp(-1.0, 1.0);
        let heat = if s >= 0.0 { [255.0, 255.0 * (1.0 - s), 255.0 * (1.0 - s)] } else { [255.0 * (1.0 + s), 255.0 * (1.0 + s), 255.0] };
        for c in 0..3 {
            out.push((0.5 * rgb[3 * i + c] as f32 + 0.5 * heat[c]).round() as u8);
        }
    }
    let buffer = image::RgbImage::from_raw(w as u32, h as u32, out).ok_or_else(|| Error::InvalidArgument("overlay size".into()))?;
    buffer.save(path).map_err(|e| Error::io(path, e))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn typicality_command(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let resize = args.optional("resize").map(|_| args.parsed("resize", 0usize)).transpose()?;
    let image = image_tensor(Path::new(args.required("image")?), resize)?;
    let latent = latent_mode(args, "sample")?;
    let defaults = TypicalityOptions::default();
    let options = TypicalityOptions {
        samples: args.parsed("samples", defaults.samples)?,
        seed: args.parsed("seed", defaults.seed)?,
        batch: args.parsed("batch", defaults.batch)?,
        t_min: args.parsed("t-min", defaults.t_min)?,
        t_max: args.parsed("t-max", defaults.t_max)?,
        latent,
        antithetic: args.parsed("antithetic", defaults.antithetic)?,
        stratified: args.parsed("stratified", defaults.stratified)?,
        ..defaults
    };
    let started = Instant::now();
    let result = typicality(&model, &image, args.required("prompt")?, args.required("null-prompt")?, &options, &mut {
        let mut bar = progress_bar();
        move |done, total| bar(done, total, f64::NAN)
    })?;
    let (h, w) = (result.map.size()[0] as usize, result.map.size()[1] as usize);
    let map = Vec::<f32>::try_from(result.map.f_flatten(0, -1)?)?;
    let mean = map.iter().sum::<f32>() / map.len() as f32;
    println!("typicality map {h}×{w} in {:.1} s: mean {mean:.5}", started.elapsed().as_secs_f64());
    let prefix = args.required("out")?;
    write_npy(&PathBuf::from(format!("{prefix}.npy")), &map, &[h, w])?;
    overlay(&image, &map, &PathBuf::from(format!("{prefix}.png")))?;
    if let Some(kind) = args.optional("dicom-out") {
        write_map_as_dicom(Path::new(args.required("image")?), &map, [w, h], kind, &PathBuf::from(format!("{prefix}.dcm")))?;
    }
    if let Some(k) = args.optional("patch").map(|_| args.parsed("patch", 64usize)).transpose()? {
        for (rank, b) in select_patches(&map, h, w, k, 5)?.iter().enumerate() {
            println!("patch {rank}: x {} y {} size {} typicality {:.5}", b.x, b.y, b.size, b.score);
        }
    }
    Ok(())
}

/// Files a typicality map of a DICOM image back in the image's study (`kind`: overlay or raw).
fn write_map_as_dicom(source: &Path, map: &[f32], size: [usize; 2], kind: &str, path: &Path) -> Result<()> {
    let kind = match kind {
        "overlay" => MapKind::Overlay,
        "raw" => MapKind::Raw,
        other => return Err(Error::InvalidArgument(format!("--dicom-out must be overlay or raw, not `{other}`"))),
    };
    let written = DicomFile::open(source)?.write_map(0, map, size, kind, None, path)?;
    println!("wrote {} (series {}, instance {})", path.display(), written.series_instance_uid, written.sop_instance_uid);
    Ok(())
}

/// Prints what a caller needs to file results next to a DICOM image, and the decoded frame's size.
fn dicom_info_command(args: &Args) -> Result<()> {
    let file = DicomFile::open(Path::new(args.required("image")?))?;
    let m = file.metadata()?;
    let show = |name: &str, value: &Option<String>| println!("{name}: {}", value.as_deref().unwrap_or("-"));
    show("patient id", &m.patient_id);
    show("patient name", &m.patient_name);
    show("study instance uid", &m.study_instance_uid);
    show("series instance uid", &m.series_instance_uid);
    show("sop instance uid", &m.sop_instance_uid);
    show("sop class uid", &m.sop_class_uid);
    show("modality", &m.modality);
    show("view position", &m.view_position);
    println!("pixel spacing (mm): {}", m.pixel_spacing.map_or("-".into(), |[r, c]| format!("{r} × {c}")));
    println!("transfer syntax: {}", m.transfer_syntax_uid);
    println!("frames: {}", m.frames);
    let image = file.image(&DicomOptions { frame: args.parsed("frame", 0)?, ..Default::default() })?;
    println!("image: {}×{}, {} channel(s)", image.width, image.height, image.channels);
    Ok(())
}

/// ChestX-ray8 evaluation: AUC-PR of the finetuned (and baseline) typicality maps against the boxes.
fn cxr8_eval_command(args: &Args) -> Result<()> {
    let finetuned = open_model(args)?;
    let baseline = args.optional("baseline").map(|_| open_baseline(args)).transpose()?;
    let d = EvaluationOptions::default();
    let options = EvaluationOptions {
        working_size: args.parsed("size", d.working_size)?,
        diseases: args.optional("diseases").map_or(d.diseases.clone(), |list| list.split(',').map(|s| s.trim().to_string()).collect()),
        limit: args.optional("limit").map(|_| args.parsed("limit", 0usize)).transpose()?,
        samples: args.parsed("samples", d.samples)?,
        t_min: args.parsed("t-min", d.t_min)?,
        t_max: args.parsed("t-max", d.t_max)?,
        seed: args.parsed("seed", d.seed)?,
        batch: args.parsed("batch", d.batch)?,
    };
    let out = PathBuf::from(args.required("out")?);
    let files = EvaluationFiles {
        images: Path::new(args.required("images")?),
        bbox_list: Path::new(args.required("bbox")?),
        data_entry: args.optional("data-entry").map(Path::new),
        out: &out,
    };
    let started = Instant::now();
    let mut bar = progress_bar();
    let run = evaluate_files(&finetuned, baseline.as_ref(), &files, &options, &mut |done, total| bar(done, total, f64::NAN))?;
    print!("{}", run.report.markdown());
    if run.unconfirmed_boxes > 0 {
        println!("{} boxes left out: the data entry does not list their image with that finding", run.unconfirmed_boxes);
    }
    println!(
        "{} image–disease pairs in {:.0} s; wrote {} (report.md, .csv, .json) and {} overlays",
        run.results.len(),
        started.elapsed().as_secs_f64(),
        out.display(),
        run.overlays.len()
    );
    Ok(())
}

fn finetune_command(args: &Args) -> Result<()> {
    let model_dir = PathBuf::from(args.required("model")?);
    let model_options = model_options(args)?;
    let set = LabelledSet::open(Path::new(args.required("data")?))?;
    let out = PathBuf::from(args.required("out")?);
    let defaults = FinetuneOptions::default();
    let options = FinetuneOptions {
        train: TrainOptions { learning_rate: args.parsed("lr", defaults.train.learning_rate)?, ..TrainOptions::default() },
        caption_template: args.optional("caption").unwrap_or(&defaults.caption_template).to_string(),
        null_prompt: args.optional("null-prompt").unwrap_or("").to_string(),
        condition_dropout: args.parsed("dropout", defaults.condition_dropout)?,
        batch_size: args.parsed("batch", defaults.batch_size)?,
        steps: args.parsed("steps", defaults.steps)?,
        seed: args.parsed("seed", defaults.seed)?,
        resolution: args.parsed("resolution", defaults.resolution)?,
        checkpoint_every: args.parsed("checkpoint-every", 0)?,
        checkpoint_dir: Some(out.join("checkpoints")),
        compute: StepCompute::new(parse_dtype(args.optional("autocast").unwrap_or("float32"))?, args.parsed("gradient-checkpointing", false)?),
        ..defaults
    };
    println!("finetuning on {} images of {} labels: {:?}", set.items.len(), set.labels().len(), set.labels());
    let started = Instant::now();
    let resume = args.optional("resume").map(PathBuf::from);
    // The steps after this run's first, timed apart from loading, encoding and warm-up (benches/training.sh).
    let mut first_step: Option<(Instant, u64)> = None;
    let mut last_step = (Instant::now(), 0);
    let mut bar = progress_bar();
    let mut progress = |done, total, loss| {
        first_step.get_or_insert((Instant::now(), done));
        last_step = (Instant::now(), done);
        bar(done, total, loss)
    };
    let report = finetune(&model_dir, &model_options, &set, &options, resume.as_deref(), &out, &mut progress)?;
    println!("{} steps in {:.0} s, last loss {:.4}; wrote {}", options.steps, started.elapsed().as_secs_f64(), report.loss, out.display());
    if let Some((first_at, first)) = first_step.filter(|&(_, first)| last_step.1 > first) {
        let (last_at, last) = last_step;
        println!("steps after the first: {:.3} s each", (last_at - first_at).as_secs_f64() / (last - first) as f64);
    }
    Ok(())
}

#[cfg(not(feature = "synthetic"))]
fn synth_command(_: &Args) -> Result<()> {
    Err(Error::InvalidArgument(
        "this diffmine was built without the synthetic data generator: build it with `cargo build --release --features synthetic`".into(),
    ))
}

/// Writes the synthetic radiograph set with its planted boxes; `--split held-out` gives the held-out
/// set of the same options (another seed, patient IDs after the training set's).
#[cfg(feature = "synthetic")]
fn synth_command(args: &Args) -> Result<()> {
    let defaults = SyntheticOptions::default();
    let train = SyntheticOptions {
        seed: args.parsed("seed", defaults.seed)?,
        images_per_label: args.parsed("per-label", defaults.images_per_label)?,
        size: args.parsed("size", defaults.size)?,
        ..defaults
    };
    let options = match args.optional("split").unwrap_or("train") {
        "train" => train,
        "held-out" => train.held_out(),
        other => return Err(Error::InvalidArgument(format!("--split must be train or held-out, not `{other}`"))),
    };
    let out = PathBuf::from(args.required("out")?);
    let started = Instant::now();
    let summary = write_dataset(&options, &out)?;
    println!(
        "wrote {} images of {} px ({} labels: {}) with their boxes to {} in {:.2} s",
        summary.entries.len(),
        summary.size,
        options.labels.len(),
        options.labels.join(", "),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    if let Some(dicom) = args.optional("dicom") {
        let count = write_dicom_copies(&options, Path::new(dicom))?;
        println!("wrote the same {count} images as DICOM to {dicom}");
    }
    Ok(())
}

/// Mines every label of a labelled set and writes the visual summary.
fn mine_command(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let set = LabelledSet::open(Path::new(args.required("data")?))?;
    let out = PathBuf::from(args.required("out")?);
    let resize = args.optional("resize").map(|_| args.parsed("resize", 0usize)).transpose()?;
    let (t, d, c) = (TypicalityOptions::default(), DiftOptions::default(), ClusterOptions::default());
    let options = MiningOptions {
        prompt_template: args.required("prompt")?.to_string(),
        null_prompt: args.required("null-prompt")?.to_string(),
        typicality: TypicalityOptions {
            samples: args.parsed("samples", t.samples)?,
            seed: args.parsed("seed", t.seed)?,
            batch: args.parsed("batch", t.batch)?,
            ..t
        },
        resize,
        patch_size: args.parsed("patch", 64)?,
        per_image: args.parsed("per-image", 5)?,
        top: args.parsed("top", 1000)?,
        dift: DiftOptions { ensemble: args.parsed("ensemble", d.ensemble)?, ..d },
        cluster: ClusterOptions { clusters: args.parsed("clusters", c.clusters)?, restarts: args.parsed("restarts", c.restarts)?, ..c },
        cache_dir: Some(args.optional("cache").map(PathBuf::from).unwrap_or_else(|| out.join("cache"))),
    };
    let started = Instant::now();
    let mut bar = progress_bar();
    let results = mine(&model, &set, &options, &mut |done, total| bar(done, total, f64::NAN))?;
    let baseline_results = match args.optional("baseline") {
        None => None,
        // The caches are keyed by model, so both models can share the cache folder.
        Some(_) => Some(mine(&open_baseline(args)?, &set, &options, &mut |done, total| bar(done, total, f64::NAN))?),
    };
    let report_started = Instant::now();
    let report_options = ReportOptions { resize, ..ReportOptions::default() };
    match &baseline_results {
        None => write_report(&results, &report_options, &out)?,
        Some(baseline) => write_comparison(&[("model", &results), ("baseline", baseline)], &report_options, &out)?,
    }
    let report_time = report_started.elapsed();
    for r in &results {
        println!("{}: {} patches, {} clusters", r.label, r.patches.len(), r.clusters.len());
    }
    let times = results.iter().chain(baseline_results.iter().flatten()).map(|r| r.times).sum();
    print_stage_times(&times, report_time);
    println!("mined {} images in {:.0} s; report: {}", set.items.len(), started.elapsed().as_secs_f64(), out.join("index.html").display());
    Ok(())
}

/// One line of where the mining's time went (both models' together with `--baseline`); benches/mining.sh
/// reads it.
fn print_stage_times(times: &StageTimes, report: Duration) {
    println!(
        "stage times: typicality {:.4} s, patches {:.4} s, DIFT {:.4} s, clustering {:.4} s, report {:.4} s",
        times.typicality.as_secs_f64(),
        times.patches.as_secs_f64(),
        times.dift.as_secs_f64(),
        times.clustering.as_secs_f64(),
        report.as_secs_f64()
    );
}

/// Trains a model's VAE as an autoencoder (for models built from scratch) and measures its scaling factor.
fn train_vae_command(args: &Args) -> Result<()> {
    let set = LabelledSet::open(Path::new(args.required("data")?))?;
    let d = AutoencoderOptions::default();
    let options = AutoencoderOptions {
        train: TrainOptions { learning_rate: args.parsed("lr", d.train.learning_rate)?, ..d.train.clone() },
        kl_weight: args.parsed("kl-weight", d.kl_weight)?,
        batch_size: args.parsed("batch", d.batch_size)?,
        steps: args.parsed("steps", d.steps)?,
        seed: args.parsed("seed", d.seed)?,
        resolution: args.parsed("resolution", d.resolution)?,
    };
    let out = PathBuf::from(args.required("out")?);
    let started = Instant::now();
    let scaling = train_autoencoder(Path::new(args.required("model")?), &set, &options, &out, &mut progress_bar())?;
    println!("{} steps in {:.0} s; scaling factor {scaling:.5}; wrote {}", options.steps, started.elapsed().as_secs_f64(), out.display());
    Ok(())
}

fn latent_mode(args: &Args, default: &str) -> Result<LatentMode> {
    match args.optional("latent").unwrap_or(default) {
        "sample" => Ok(LatentMode::Sample),
        "mean" => Ok(LatentMode::Mean),
        other => Err(Error::InvalidArgument(format!("--latent must be sample or mean, not `{other}`"))),
    }
}

/// Plug-and-Play settings from `--steps`, `--inversion-steps`, `--guidance`, the injection fractions,
/// `--null-prompt`, `--latent` and `--seed`.
fn translate_options(args: &Args) -> Result<TranslateOptions> {
    let d = TranslateOptions::default();
    Ok(TranslateOptions {
        steps: args.parsed("steps", d.steps)?,
        inversion_steps: args.parsed("inversion-steps", d.inversion_steps)?,
        guidance: args.parsed("guidance", d.guidance)?,
        resnet_injection: args.parsed("resnet-injection", d.resnet_injection)?,
        attention_injection: args.parsed("attention-injection", d.attention_injection)?,
        null_prompt: args.optional("null-prompt").unwrap_or("").to_string(),
        latent: latent_mode(args, "mean")?,
        seed: args.parsed("seed", d.seed)?,
        ..d
    })
}

/// Translates one image to each `--target` (comma-separated) and writes them with the reconstruction.
fn translate_command(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let image = image_tensor(Path::new(args.required("image")?), None)?;
    let targets: Vec<&str> = args.required("target")?.split(',').map(str::trim).collect();
    let options = translate_options(args)?;
    let started = Instant::now();
    let mut bar = progress_bar();
    let result = translate(&model, &image, args.required("source-prompt")?, &targets, &options, &mut |done, total| bar(done, total, f64::NAN))?;
    println!("{} translations in {:.1} s", targets.len(), started.elapsed().as_secs_f64());
    let prefix = args.required("out")?;
    for (i, target) in targets.iter().enumerate() {
        println!("{i}: {target}");
        write_png(&result.images.f_narrow(0, i as i64, 1)?, &PathBuf::from(format!("{prefix}_{i}.png")))?;
    }
    write_png(&result.reconstruction, &PathBuf::from(format!("{prefix}_reconstruction.png")))
}

/// Samples one square image for `--prompt`.
fn generate_command(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let d = GenerateOptions::default();
    let size: i64 = args.parsed("size", d.height)?;
    let options = GenerateOptions {
        steps: args.parsed("steps", d.steps)?,
        guidance: args.parsed("guidance", d.guidance)?,
        null_prompt: args.optional("null-prompt").unwrap_or("").to_string(),
        height: size,
        width: size,
        seed: args.parsed("seed", d.seed)?,
        noise: None,
    };
    let mut bar = progress_bar();
    let result = generate(&model, &[args.required("prompt")?], &options, &mut |done, total| bar(done, total, f64::NAN))?;
    write_png(&result.images, &PathBuf::from(args.required("out")?))
}

fn parallel_mining_options(args: &Args) -> Result<ParallelMiningOptions> {
    let d = ParallelMiningOptions::default();
    let (t, dift, c) = (TypicalityOptions::default(), DiftOptions::default(), ClusterOptions::default());
    Ok(ParallelMiningOptions {
        prompt_template: args.optional("prompt").unwrap_or(&d.prompt_template).to_string(),
        null_prompt: args.optional("null-prompt").unwrap_or("").to_string(),
        translate: translate_options(args)?,
        typicality: TypicalityOptions { samples: args.parsed("samples", t.samples)?, seed: args.parsed("seed", t.seed)?, ..t },
        dift: DiftOptions { ensemble: args.parsed("ensemble", dift.ensemble)?, ..dift },
        cluster: ClusterOptions { clusters: args.parsed("clusters", c.clusters)?, restarts: args.parsed("restarts", c.restarts)?, ..c },
        patch_size: args.parsed("patch", d.patch_size)?,
        per_set: args.parsed("per-set", d.per_set)?,
        top: args.parsed("top", d.top)?,
        projection: projection(args)?,
        resize: args.optional("resize").map(|_| args.parsed("resize", 0usize)).transpose()?,
        ..d
    })
}

/// `--projection umap|pca` and UMAP's `--neighbors`; UMAP is seeded like typicality (`--seed`).
fn projection(args: &Args) -> Result<Projection> {
    match args.optional("projection").unwrap_or("umap") {
        "umap" => Ok(Projection::Umap { neighbors: args.parsed("neighbors", 15)?, seed: args.parsed("seed", 42)? }),
        "pca" => Ok(Projection::Pca),
        other => Err(Error::InvalidArgument(format!("--projection must be umap or pca, got `{other}`"))),
    }
}

/// Mines co-typical elements over the parallel sets of every image that has exactly one label.
fn parallel_mine_command(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let data = LabelledSet::open(Path::new(args.required("data")?))?;
    let labels = data.labels();
    let out = PathBuf::from(args.required("out")?);
    let versions = VersionStore::create(out.join("versions"))?;
    let options = parallel_mining_options(args)?;
    let d = ParallelReportOptions::default();
    let report_options = ParallelReportOptions { strips: args.parsed("strips", d.strips)?, per_strip: args.parsed("per-strip", d.per_strip)? };
    let (sources, left_out) = ParallelSource::from_set(&data, &labels);
    if left_out > 0 {
        eprintln!("{left_out} images with several labels left out");
    }
    let started = Instant::now();
    let mut bar = progress_bar();
    let result = mine_parallel_sets(&model, &labels, &sources, &options, &versions, &mut |done, total| bar(done, total, f64::NAN))?;
    let report_sources: Vec<ReportSource> = sources.iter().map(ParallelSource::report_source).collect();
    let strips = write_parallel_report(&result, &report_sources, &labels, &versions, &report_options, &out)?;
    println!(
        "{} parallel sets in {:.0} s: {} elements in {} clusters; wrote {strips} strip figures; report: {}",
        sources.len(),
        started.elapsed().as_secs_f64(),
        result.elements.len(),
        result.clusters.len(),
        out.join("index.html").display()
    );
    Ok(())
}

fn run(argv: &[String]) -> Result<()> {
    let Some((command, rest)) = argv.split_first() else { return Err(Error::InvalidArgument(USAGE.into())) };
    if accepted_options(command).is_empty() {
        return Err(Error::InvalidArgument(format!("unknown command `{command}`\n{USAGE}")));
    }
    let args = Args::parse(command, rest)?;
    match command.as_str() {
        "info" => info(&args),
        "tokenize" => tokenize(&args),
        "roundtrip" => roundtrip(&args),
        "denoise" => denoise(&args),
        "typicality" => typicality_command(&args),
        "finetune" => finetune_command(&args),
        "train-vae" => train_vae_command(&args),
        "mine" => mine_command(&args),
        "synth" => synth_command(&args),
        "dicom-info" => dicom_info_command(&args),
        "cxr8-eval" => cxr8_eval_command(&args),
        "translate" => translate_command(&args),
        "generate" => generate_command(&args),
        "parallel-mine" => parallel_mine_command(&args),
        other => Err(Error::InvalidArgument(format!("unknown command `{other}`\n{USAGE}"))),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("diffmine: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_command_takes_the_options_its_usage_block_lists() {
        assert_eq!(accepted_options("synth"), ["out", "seed", "per-label", "size", "split", "dicom"]);
        let finetune = accepted_options("finetune");
        assert!(finetune.contains(&"checkpoint-every") && finetune.contains(&"resume"));
        assert!(MODEL_OPTIONS.iter().all(|o| finetune.contains(o)), "a command with --model takes the model options");
        assert!(!accepted_options("dicom-info").contains(&"device"), "no model, no device");
        assert!(accepted_options("no-such-command").is_empty());
    }

    #[test]
    fn an_option_the_command_does_not_take_is_an_error_before_any_work() {
        let err = run(&strings(&["synth", "--out", "/nonexistent/never-written", "--electrode-rate", "0"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`diffmine synth` has no option `--electrode-rate`"), "{text}");
        assert!(text.contains("--per-label"), "the message lists what the command takes: {text}");
        assert!(!Path::new("/nonexistent/never-written").exists());
    }

    #[test]
    fn an_unknown_command_says_so_with_the_usage() {
        let text = run(&strings(&["mien", "--model", "m"])).unwrap_err().to_string();
        assert!(text.contains("unknown command `mien`"), "{text}");
        assert!(text.contains("diffmine mine"), "{text}");
    }
}
