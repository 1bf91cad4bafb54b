//! The `diffmine` command line: thin wrappers over the library for people who do not write code.
//!
//! diffmine info      --model DIR [--device D] [--dtype T] [--variant V]
//! diffmine tokenize  --model DIR --text TEXT
//! diffmine roundtrip --model DIR --image FILE --out FILE.png   (VAE encode then decode)
//! diffmine denoise   --model DIR --image FILE --prompt TEXT --t STEP --out FILE.png
//!
//! Log detail follows RUST_LOG (e.g. RUST_LOG=diffmine=debug shows a span per model part).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use diffmine::image::{to_rgb8, ImageView, PixelType};
use diffmine::model::{parse_device, parse_dtype, ModelOptions, StableDiffusion};
use diffmine::{Error, Result};
use tch::{Kind, Tensor};

const USAGE: &str = "usage:
  diffmine info      --model DIR [--device cpu|cuda[:N]] [--dtype float32|bfloat16|float16] [--variant fp16]
  diffmine tokenize  --model DIR --text TEXT
  diffmine roundtrip --model DIR --image FILE --out FILE.png
  diffmine denoise   --model DIR --image FILE --prompt TEXT --t STEP --out FILE.png [--seed N]";

/// `--key value` pairs after the subcommand.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut items = rest.iter();
        while let Some(key) = items.next() {
            let name = key.strip_prefix("--").ok_or_else(|| Error::InvalidArgument(format!("unexpected argument `{key}`")))?;
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
}

fn open_model(args: &Args) -> Result<StableDiffusion> {
    let options = ModelOptions {
        device: parse_device(args.optional("device").unwrap_or("cpu"))?,
        dtype: parse_dtype(args.optional("dtype").unwrap_or("float32"))?,
        variant: args.optional("variant").map(String::from),
        ..ModelOptions::default()
    };
    StableDiffusion::open(Path::new(args.required("model")?), &options)
}

fn read_image(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let image = image::open(path).map_err(|e| Error::io(path, e))?.to_rgb8();
    let (w, h) = (image.width() as usize, image.height() as usize);
    Ok((image.into_raw(), w, h))
}

fn image_tensor(path: &Path) -> Result<Tensor> {
    let (data, width, height) = read_image(path)?;
    ImageView { data: &data, width, height, channels: 3, stride: width * 3, pixel: PixelType::U8 }.to_model_input()
}

fn write_png(images: &Tensor, path: &Path) -> Result<()> {
    let (_, _, h, w) = images.size4()?;
    let rgb = to_rgb8(images)?;
    let buffer = image::RgbImage::from_raw(w as u32, h as u32, rgb).ok_or_else(|| Error::InvalidArgument("image buffer size".into()))?;
    buffer.save(path).map_err(|e| Error::io(path, e))?;
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
    let latents = model.encode_mean(&image_tensor(Path::new(args.required("image")?))?)?;
    println!("latents {:?}, mean {:.4}, std {:.4}", latents.size(), latents.mean(Kind::Float).double_value(&[]), latents.std(true).double_value(&[]));
    write_png(&model.decode(&latents)?, &PathBuf::from(args.required("out")?))
}

/// Noises an image's latents to step t, predicts the noise under a prompt, and decodes the one-step
/// estimate of the clean latents: a quick look at what the model has learnt.
fn denoise(args: &Args) -> Result<()> {
    let model = open_model(args)?;
    let t: i64 = args.required("t")?.parse().map_err(|_| Error::InvalidArgument("--t must be an integer timestep".into()))?;
    let seed: i64 = args.optional("seed").unwrap_or("42").parse().map_err(|_| Error::InvalidArgument("--seed must be an integer".into()))?;
    let x0 = model.encode_mean(&image_tensor(Path::new(args.required("image")?))?)?;
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

fn run(argv: &[String]) -> Result<()> {
    let Some((command, rest)) = argv.split_first() else { return Err(Error::InvalidArgument(USAGE.into())) };
    let args = Args::parse(rest)?;
    match command.as_str() {
        "info" => info(&args),
        "tokenize" => tokenize(&args),
        "roundtrip" => roundtrip(&args),
        "denoise" => denoise(&args),
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
