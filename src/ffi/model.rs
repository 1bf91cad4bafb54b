//! `dm_model`: a loaded Stable Diffusion model and its primitive operations on caller-owned buffers.
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::ptr::null;

use tch::{Kind, Tensor};

use super::args::{input_slice, optional_str, read_options, required_str, write_array, write_output, write_sized, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::handle;
use super::image::{borrow_view, dm_image_view};
use super::status::dm_status;
use crate::model::scheduler::PredictionType;
use crate::model::single_file::{SdVersion, SingleFileOptions};
use crate::model::{parse_device, ComponentOverrides, ModelOptions, StableDiffusion};

/// A loaded model. May be used from several threads at once: every operation but
/// `dm_model_load_lora` / `dm_model_unload_lora` only reads it, and results do not depend on which
/// thread runs them. Those two change the weights and are refused while anything else uses the model.
#[allow(non_camel_case_types)]
pub struct dm_model {
    _opaque: [u8; 0],
}

pub const DM_DTYPE_FLOAT32: u32 = 0;
pub const DM_DTYPE_FLOAT16: u32 = 1;
pub const DM_DTYPE_BFLOAT16: u32 = 2;

/// The dtype a `DM_DTYPE_*` value names.
pub(crate) fn dtype_from_c(value: u32, what: &str) -> FfiResult<Kind> {
    match value {
        DM_DTYPE_FLOAT32 => Ok(Kind::Float),
        DM_DTYPE_FLOAT16 => Ok(Kind::Half),
        DM_DTYPE_BFLOAT16 => Ok(Kind::BFloat16),
        other => Err(FfiError::Invalid(format!("`{what}` = {other} is not a DM_DTYPE_* value"))),
    }
}

/// How to load a model. Fill with `dm_model_options_default`, then change fields.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_model_options {
    /// `sizeof(dm_model_options)` as the caller was compiled with.
    pub struct_size: usize,
    /// "cpu" (default when NULL), "cuda" or "cuda:N".
    pub device: *const c_char,
    /// Compute dtype, one of `DM_DTYPE_*` (float16 is CUDA-only).
    pub dtype: u32,
    /// Weight file variant, e.g. "fp16" for `*.fp16.safetensors`; NULL for the plain files.
    pub variant: *const c_char,
    /// Component folders to use instead of the model folder's own; NULL keeps the model's.
    pub unet_path: *const c_char,
    pub vae_path: *const c_char,
    pub text_encoder_path: *const c_char,
    pub tokenizer_path: *const c_char,
    pub scheduler_path: *const c_char,
    /// For a single-file checkpoint: a diffusers folder whose component configs (and tokenizer,
    /// scheduler) describe it; NULL uses the original SD 1.x/2.x configs.
    pub config_path: *const c_char,
    /// For a single-file checkpoint: one of `DM_SD_VERSION_*` (default: detected from the weights).
    pub sd_version: u32,
    /// For a single-file checkpoint: `DM_PREDICTION_EPSILON` or `DM_PREDICTION_V` to override the
    /// scheduler's prediction type, `DM_PREDICTION_FROM_MODEL` (default) to keep it.
    pub prediction_type: u32,
    /// For a single-file checkpoint: non-zero reads the UNet's EMA weights instead of the plain ones.
    pub use_ema: u32,
}

/// The size of the struct's first version, before the single-file fields were appended: callers built
/// against that header pass it, and the appended fields keep their defaults.
pub(crate) const MODEL_OPTIONS_V1_SIZE: usize = std::mem::offset_of!(dm_model_options, config_path);

impl Default for dm_model_options {
    fn default() -> Self {
        dm_model_options {
            struct_size: std::mem::size_of::<dm_model_options>(),
            device: null(),
            dtype: DM_DTYPE_FLOAT32,
            variant: null(),
            unet_path: null(),
            vae_path: null(),
            text_encoder_path: null(),
            tokenizer_path: null(),
            scheduler_path: null(),
            config_path: null(),
            sd_version: DM_SD_VERSION_DETECT,
            prediction_type: DM_PREDICTION_FROM_MODEL,
            use_ema: 0,
        }
    }
}

pub const DM_PREDICTION_EPSILON: u32 = 0;
pub const DM_PREDICTION_V: u32 = 1;
/// Options only: keep the prediction type the model's scheduler (or version) gives.
pub const DM_PREDICTION_FROM_MODEL: u32 = 2;

/// A single-file checkpoint's model family: detected from its weights, SD 1.x, or SD 2.x.
pub const DM_SD_VERSION_DETECT: u32 = 0;
pub const DM_SD_VERSION_1: u32 = 1;
pub const DM_SD_VERSION_2: u32 = 2;

fn single_file_options(o: &dm_model_options, config: Option<PathBuf>) -> FfiResult<SingleFileOptions> {
    let version = match o.sd_version {
        DM_SD_VERSION_DETECT => None,
        DM_SD_VERSION_1 => Some(SdVersion::V1),
        DM_SD_VERSION_2 => Some(SdVersion::V2),
        other => return Err(FfiError::Invalid(format!("`options.sd_version` = {other} is not a DM_SD_VERSION_* value"))),
    };
    let prediction = match o.prediction_type {
        DM_PREDICTION_FROM_MODEL => None,
        DM_PREDICTION_EPSILON => Some(PredictionType::Epsilon),
        DM_PREDICTION_V => Some(PredictionType::VPrediction),
        other => return Err(FfiError::Invalid(format!("`options.prediction_type` = {other} is not a DM_PREDICTION_* value"))),
    };
    Ok(SingleFileOptions { config, version, prediction, ema: o.use_ema != 0 })
}

/// What a caller needs to size buffers for a model's operations.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_model_info {
    pub struct_size: usize,
    /// Channels of a latent (4 for SD 1.5).
    pub latent_channels: u32,
    /// Image pixels per latent cell along each side (8 for SD 1.5).
    pub vae_scale_factor: u32,
    /// Tokens per prompt (77).
    pub max_tokens: u32,
    /// Width of a text embedding (768 for SD 1.5).
    pub text_embedding_dim: u32,
    /// Training timesteps T (1000); valid timesteps are 0..T-1.
    pub train_steps: u32,
    /// `DM_PREDICTION_EPSILON` or `DM_PREDICTION_V`.
    pub prediction_type: u32,
    /// The VAE's latent scaling factor (0.18215 for SD 1.5).
    pub scaling_factor: f64,
}

/// Fills `options` with the defaults: CPU, float32, plain weight files, no component overrides.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_model_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_model_options_default(options: *mut dm_model_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_model_options::default(), options, "options") })
}

/// Reads the C options into the safe API's options.
///
/// # Safety
/// Every non-NULL string in `o` must be NUL-terminated.
pub(crate) unsafe fn model_options(o: &dm_model_options) -> FfiResult<ModelOptions> {
    // SAFETY: the caller guarantees every non-NULL string is NUL-terminated.
    let path = |p: *const c_char, what| -> FfiResult<Option<PathBuf>> { Ok(unsafe { optional_str(p, what) }?.map(PathBuf::from)) };
    // SAFETY: as above.
    let device = parse_device(unsafe { optional_str(o.device, "options.device") }?.unwrap_or("cpu"))?;
    let dtype = dtype_from_c(o.dtype, "options.dtype")?;
    Ok(ModelOptions {
        device,
        dtype,
        // SAFETY: as above.
        variant: unsafe { optional_str(o.variant, "options.variant") }?.map(String::from),
        overrides: ComponentOverrides {
            unet: path(o.unet_path, "options.unet_path")?,
            vae: path(o.vae_path, "options.vae_path")?,
            text_encoder: path(o.text_encoder_path, "options.text_encoder_path")?,
            tokenizer: path(o.tokenizer_path, "options.tokenizer_path")?,
            scheduler: path(o.scheduler_path, "options.scheduler_path")?,
        },
        single_file: single_file_options(o, path(o.config_path, "options.config_path")?)?,
    })
}

/// Loads the diffusers folder, or the single-file checkpoint (`.safetensors` in the original SD
/// layout; a tokenizer folder is then required), at `path` (UTF-8). `options` may be NULL for the defaults. On success
/// `*out_model` owns a new model, released with `dm_model_free`.
///
/// # Safety
/// `path` must be a NUL-terminated string; `options` NULL or a valid options struct whose strings are
/// NUL-terminated; `out_model` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_model_open(path: *const c_char, options: *const dm_model_options, out_model: *mut *mut dm_model) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers each pointer.
        let path = unsafe { required_str(path, "path") }?;
        if out_model.is_null() {
            return Err(FfiError::Null("out_model"));
        }
        // SAFETY: as above.
        let c_options = unsafe { read_options(options, dm_model_options::default(), MODEL_OPTIONS_V1_SIZE, "options") }?;
        // SAFETY: as above.
        let options = unsafe { model_options(&c_options) }?;
        let model = StableDiffusion::open(Path::new(path), &options)?;
        // SAFETY: checked non-NULL above; writable by the caller's contract.
        unsafe { write_value(handle::register::<StableDiffusion, dm_model>(model), out_model, "out_model") }
    })
}

/// Releases a model. NULL is accepted; a handle that is not a live model gives
/// `DM_ERR_INVALID_HANDLE`. Calls still running on other threads finish first.
#[no_mangle]
pub extern "C" fn dm_model_free(model: *mut dm_model) -> dm_status {
    guard(|| handle::release::<StableDiffusion, dm_model>(model, "model"))
}

/// Merges the LoRA adapter at `path` (UTF-8; a `.safetensors` file in diffusers/peft or kohya naming,
/// for the UNet and/or the text encoder) into the model's weights at `scale` (1.0: as trained). A
/// second adapter stacks on the first. An adapter naming layers the model lacks, or whose shapes do
/// not fit, gives `DM_ERR_INVALID_ARGUMENT` with their names and leaves the model unchanged. The model
/// must not be in use meanwhile: a call running on it on another thread, or a miner made from it,
/// gives `DM_ERR_INVALID_ARGUMENT` (free the miner first).
///
/// # Safety
/// `path` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dm_model_load_lora(model: *mut dm_model, path: *const c_char, scale: f32) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let path = unsafe { required_str(path, "path") }?;
        handle::with_exclusive::<StableDiffusion, dm_model, _>(model, "model", |model| Ok(model.load_lora(Path::new(path), f64::from(scale))?))
    })
}

/// Removes every LoRA adapter loaded into the model: its weights are the base model's again, bit for
/// bit. Without adapters it does nothing. The model must not be in use meanwhile (see
/// `dm_model_load_lora`).
#[no_mangle]
pub extern "C" fn dm_model_unload_lora(model: *mut dm_model) -> dm_status {
    guard(|| {
        handle::with_exclusive::<StableDiffusion, dm_model, _>(model, "model", |model| {
            model.unload_lora();
            Ok(())
        })
    })
}

pub(crate) fn model_ref(model: *const dm_model) -> FfiResult<std::sync::Arc<StableDiffusion>> {
    handle::get::<StableDiffusion, dm_model>(model, "model")
}

/// Writes the model's sizes and constants into `*out_info`, whose `struct_size` the caller sets
/// (`sizeof(dm_model_info)`); only that many bytes are written.
///
/// # Safety
/// `out_info` must be NULL or point to a writable struct of `out_info->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn dm_model_get_info(model: *const dm_model, out_info: *mut dm_model_info) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        let info = dm_model_info {
            struct_size: std::mem::size_of::<dm_model_info>(),
            latent_channels: m.latent_channels() as u32,
            vae_scale_factor: m.image_size(1, 1).0 as u32,
            max_tokens: m.tokenizer().max_length() as u32,
            text_embedding_dim: m.text_embedding_dim() as u32,
            train_steps: m.schedule().train_steps() as u32,
            prediction_type: match m.schedule().prediction_type() {
                PredictionType::Epsilon => DM_PREDICTION_EPSILON,
                PredictionType::VPrediction => DM_PREDICTION_V,
            },
            scaling_factor: m.vae().config().scaling_factor,
        };
        // This is the struct's first version: every caller knows all of it.
        let min_size = std::mem::size_of::<dm_model_info>();
        // SAFETY: forwarded to the caller's contract.
        unsafe { write_sized(info, out_info, min_size, "out_info") }
    })
}

/// The latent height and width `dm_model_encode` produces for an image of `height` × `width`.
///
/// # Safety
/// `out_height` and `out_width` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_model_latent_size(model: *const dm_model, height: u32, width: u32, out_height: *mut u32, out_width: *mut u32) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        if height == 0 || width == 0 {
            return Err(FfiError::Invalid(format!("image size {height}×{width} has a zero side")));
        }
        let (h, w) = m.latent_size(height as i64, width as i64)?;
        if out_height.is_null() || out_width.is_null() {
            return Err(FfiError::Null(if out_height.is_null() { "out_height" } else { "out_width" }));
        }
        // SAFETY: both checked non-NULL; writable by the caller's contract.
        unsafe {
            write_value(h as u32, out_height, "out_height")?;
            write_value(w as u32, out_width, "out_width")
        }
    })
}

/// Token ids of `text` (UTF-8), padded to `max_tokens`: writes `max_tokens` ids to `out_ids` (room for
/// `out_len`) and their count to `*out_count`.
///
/// # Safety
/// `text` NUL-terminated; `out_ids` NULL or `out_len` writable elements; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_model_tokenize(model: *const dm_model, text: *const c_char, out_ids: *mut i64, out_len: usize, out_count: *mut usize) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        // SAFETY: the caller's contract covers each pointer.
        let text = unsafe { required_str(text, "text") }?;
        let ids = m.tokenize(text);
        // SAFETY: as above.
        unsafe { write_array(&ids, out_ids, out_len, out_count, "out_ids") }
    })
}

/// The text encoder's last hidden state for `text`: `max_tokens` × `text_embedding_dim` floats,
/// row-major, into `out` (room for `out_len`).
///
/// # Safety
/// `text` NUL-terminated; `out` NULL or `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn dm_model_text_embeddings(model: *const dm_model, text: *const c_char, out: *mut f32, out_len: usize) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        // SAFETY: the caller's contract covers each pointer.
        let text = unsafe { required_str(text, "text") }?;
        let embeddings = m.text_embeddings(&[text])?;
        // SAFETY: as above.
        unsafe { write_tensor(&embeddings, out, out_len, "out") }
    })
}

/// Encodes an image to latents: the VAE posterior mean × scaling factor, `latent_channels` × h × w
/// floats (h, w from `dm_model_latent_size`) into `out` (room for `out_len`).
///
/// # Safety
/// `image` NULL or a valid view whose buffer holds `data_len` bytes; `out` NULL or `out_len` writable
/// floats.
#[no_mangle]
pub unsafe extern "C" fn dm_model_encode(model: *const dm_model, image: *const dm_image_view, out: *mut f32, out_len: usize) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        // SAFETY: the caller's contract covers `image`.
        let view = unsafe { borrow_view(image) }?;
        let latents = m.encode_mean(&view.to_model_input()?)?;
        // SAFETY: as above.
        unsafe { write_tensor(&latents, out, out_len, "out") }
    })
}

/// Decodes latents (`latent_channels` × `height` × `width` floats, scaled as `dm_model_encode` makes
/// them) to an RGB image of (height·f) × (width·f) × 3 bytes, f = `vae_scale_factor`, into `out_rgb`.
///
/// # Safety
/// `latents` NULL or `latents_len` readable floats; `out_rgb` NULL or `out_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dm_model_decode(
    model: *const dm_model,
    latents: *const f32,
    latents_len: usize,
    height: u32,
    width: u32,
    out_rgb: *mut u8,
    out_len: usize,
) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        let shape = [1, m.latent_channels(), height as i64, width as i64];
        // SAFETY: the caller's contract covers `latents`.
        let z = unsafe { tensor_from(latents, latents_len, &shape, "latents") }?;
        let rgb = crate::image::to_rgb8(&m.decode(&z)?)?;
        // SAFETY: the caller's contract covers `out_rgb`.
        unsafe { write_output(&rgb, out_rgb, out_len, "out_rgb") }
    })
}

/// The UNet's output (noise, or v for v-prediction models) for `batch` latents of
/// `latent_channels` × `height` × `width`, at `timesteps` (`batch` values, or 1 for all), conditioned on
/// text embeddings of `batch` × `text_tokens` × `text_embedding_dim` floats (from
/// `dm_model_text_embeddings`). Writes as many floats as `latents` holds into `out`.
///
/// # Safety
/// Each input pointer NULL or readable for its stated length; `out` NULL or `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn dm_model_predict_noise(
    model: *const dm_model,
    latents: *const f32,
    latents_len: usize,
    batch: u32,
    height: u32,
    width: u32,
    timesteps: *const i64,
    timesteps_len: usize,
    text_embeddings: *const f32,
    text_embeddings_len: usize,
    text_tokens: u32,
    out: *mut f32,
    out_len: usize,
) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        let b = batch as i64;
        let latent_shape = [b, m.latent_channels(), height as i64, width as i64];
        let context_shape = [b, text_tokens as i64, m.text_embedding_dim()];
        // SAFETY: the caller's contract covers each input pointer and length.
        let (x, context, t) = unsafe {
            (
                tensor_from(latents, latents_len, &latent_shape, "latents")?,
                tensor_from(text_embeddings, text_embeddings_len, &context_shape, "text_embeddings")?,
                Tensor::from_slice(input_slice(timesteps, timesteps_len, "timesteps")?),
            )
        };
        let prediction = m.predict_noise(&x, &t, &context)?;
        // SAFETY: the caller's contract covers `out`.
        unsafe { write_tensor(&prediction, out, out_len, "out") }
    })
}

/// A tensor of `shape` from a caller's float array, which must hold exactly that many values.
///
/// # Safety
/// `ptr` NULL or `len` readable floats.
unsafe fn tensor_from(ptr: *const f32, len: usize, shape: &[i64], what: &'static str) -> FfiResult<Tensor> {
    let expected = shape.iter().try_fold(1i64, |acc, &d| if d > 0 { acc.checked_mul(d) } else { None });
    if expected != Some(len as i64) {
        let needed = expected.map_or("more than can be addressed, or a zero side".to_string(), |n| n.to_string());
        return Err(FfiError::Invalid(format!("`{what}` holds {len} floats, but its stated shape {shape:?} needs {needed}")));
    }
    // SAFETY: forwarded to the caller's contract.
    let values = unsafe { input_slice(ptr, len, what) }?;
    Ok(Tensor::from_slice(values).f_reshape(shape)?)
}

/// Copies a result tensor (any dtype/device) as f32 into a caller buffer.
///
/// # Safety
/// `out` NULL or `out_len` writable floats.
pub(crate) unsafe fn write_tensor(t: &Tensor, out: *mut f32, out_len: usize, what: &'static str) -> FfiResult<()> {
    let values = Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?;
    // SAFETY: forwarded to the caller's contract.
    unsafe { write_output(&values, out, out_len, what) }
}
