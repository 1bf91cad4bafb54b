//! libdiffmine's half of the SD 1.5 benchmark (`benches/run.sh` runs it against
//! `benches/bench_diffusers.py`, each measurement in a fresh process).
//!
//! Usage: sd15 MODEL_DIR f32|bf16 load|unet|parity REPEATS [PARITY_FILE]
//!
//! MODEL_DIR may be a single file MODEL.safetensors in the original layout instead; its configs and
//! tokenizer come from the folder MODEL beside it.
//!
//! - `load`: times `StableDiffusion::open` (UNet, VAE, text encoder, tokenizer, schedule) and reports
//!   the process's peak RSS (VmHWM) right after it, `REPEATS` is ignored (a second load in the same
//!   process would not be a cold-process load).
//! - `unet`: one UNet pass (`predict_noise`) at batch 2, 4×32×32 latents, context (2, 77, 768), after
//!   one warm-up pass; `REPEATS` timed passes, the median reported. Also reports load + warm-up pass
//!   (the time to the first UNet output in a fresh process) and VmHWM after the warm-up pass.
//! - `parity`: reads `latents`, `timesteps`, `context` and diffusers' `noise_pred` from PARITY_FILE
//!   (written by `bench_diffusers.py parity`), runs the UNet on the same inputs and reports
//!   max|ours − diffusers| / max|diffusers|.
//!
//! With `RUST_LOG` set, the library's tracing spans are printed to stderr with their durations.
//!
//! Everything runs on the CPU with libtorch's intra-op threads set to 2; results are JSON lines on
//! stdout.
use std::path::{Path, PathBuf};
use std::time::Instant;

use diffmine::model::parse_dtype;
use diffmine::{ModelOptions, StableDiffusion};
use tch::{Device, Kind, Tensor};

const THREADS: i32 = 2;

fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Seconds this process's threads have spent runnable but waiting for a CPU (`/proc/self/task/*/schedstat`):
/// how much other processes on the machine delayed a measurement.
fn run_delay() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let nanos: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    nanos as f64 * 1e-9
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Opens the folder `dir`, or the single file `dir` (`NAME.safetensors`, in the original layout) with
/// its configs and tokenizer from the folder `NAME` beside it.
fn open(dir: &Path, dtype: Kind) -> StableDiffusion {
    let mut options = ModelOptions { device: Device::Cpu, dtype, ..ModelOptions::default() };
    if dir.is_file() {
        options.single_file.config = Some(dir.with_extension(""));
    }
    StableDiffusion::open(dir, &options).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

fn main() {
    // `cargo bench` appends `--bench`; only positional arguments count.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.len() < 4 {
        eprintln!("usage: sd15 MODEL_DIR f32|bf16 load|unet|parity REPEATS [PARITY_FILE]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let dtype_name = args[1].as_str();
    let dtype = parse_dtype(dtype_name).expect("dtype");
    let what = args[2].as_str();
    let repeats: usize = args[3].parse().expect("REPEATS must be a number");
    tch::set_num_threads(THREADS);
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .init();
    }
    let line = |fields: serde_json::Value| {
        let mut object = serde_json::json!({ "impl": "libdiffmine", "what": what, "dtype": dtype_name, "threads": THREADS });
        object.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        println!("{object}");
    };

    match what {
        "load" => {
            let rss_before = status_bytes("VmRSS:");
            let delay = run_delay();
            let started = Instant::now();
            let model = open(&dir, dtype);
            let seconds = started.elapsed().as_secs_f64();
            let delay = run_delay() - delay;
            let hwm = status_bytes("VmHWM:");
            let rss_after = status_bytes("VmRSS:");
            line(serde_json::json!({
                "seconds": seconds, "vmhwm_bytes": hwm, "vmrss_before_bytes": rss_before, "vmrss_after_bytes": rss_after,
                "region_seconds": seconds, "run_delay_seconds": delay,
            }));
            drop(model);
        }
        "unet" => {
            let started = Instant::now();
            let model = open(&dir, dtype);
            let load_seconds = started.elapsed().as_secs_f64();
            tch::manual_seed(0);
            let latents = Tensor::randn([2, 4, 32, 32], (Kind::Float, Device::Cpu));
            let context = Tensor::randn([2, 77, 768], (Kind::Float, Device::Cpu));
            let timesteps = Tensor::from_slice(&[10i64, 500]);
            let pass = || {
                let started = Instant::now();
                let out = model.predict_noise(&latents, &timesteps, &context).expect("UNet pass");
                assert_eq!(out.size(), [2, 4, 32, 32]);
                started.elapsed().as_secs_f64()
            };
            let warmup = pass();
            let hwm_first = status_bytes("VmHWM:");
            let delay = run_delay();
            let mut times: Vec<f64> = (0..repeats.max(1)).map(|_| pass()).collect();
            let delay = run_delay() - delay;
            let all = times.clone();
            line(serde_json::json!({
                "seconds": median(&mut times), "all": all, "warmup_seconds": warmup, "load_seconds": load_seconds,
                "load_and_first_pass_seconds": load_seconds + warmup, "vmhwm_after_first_pass_bytes": hwm_first,
                "region_seconds": times.iter().sum::<f64>(), "run_delay_seconds": delay,
            }));
        }
        "parity" => {
            let file = args.get(4).expect("parity needs PARITY_FILE");
            let tensors = Tensor::read_safetensors(file).expect("reading the parity file");
            let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap_or_else(|| panic!("{file} has no `{name}`"));
            let model = open(&dir, dtype);
            let ours = model.predict_noise(&get("latents"), &get("timesteps"), &get("context")).expect("UNet pass");
            let theirs = get("noise_pred").to_kind(Kind::Float);
            let max_diff = (&ours - &theirs).abs().max().double_value(&[]);
            let max_ref = theirs.abs().max().double_value(&[]);
            let mean_diff = (&ours - &theirs).abs().mean(Kind::Float).double_value(&[]);
            line(serde_json::json!({
                "max_abs_diff": max_diff, "max_abs_ref": max_ref, "relative": max_diff / max_ref, "mean_abs_diff": mean_diff,
                "shape": ours.size(),
            }));
        }
        other => {
            eprintln!("unknown measurement `{other}` (use load, unet or parity)");
            std::process::exit(2);
        }
    }
}
