//! Plug-and-Play translation and text-to-image sampling through the C ABI. Images come back as packed
//! RGB8 (rows of width × 3 bytes, images one after another) in caller-owned buffers whose sizes follow
//! from the arguments alone, so no size query is needed.
use std::ffi::{c_char, c_void};
use std::ptr::null;

use tch::Tensor;

use super::args::{input_slice, optional_str, read_options, required_str, write_output, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::image::{borrow_view, dm_image_view};
use super::model::{dm_model, model_ref};
use super::status::dm_status;
use super::typicality::{dm_progress_fn, progress_adapter, DM_LATENT_MEAN, DM_LATENT_SAMPLE};
use crate::image::to_rgb8;
use crate::translate::{generate, translate, GenerateOptions, TranslateOptions};
use crate::typicality::LatentMode;

/// How to translate. Fill with `dm_translate_options_default` (the Plug-and-Play authors' settings).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_translate_options {
    pub struct_size: usize,
    /// DDIM sampling steps (50).
    pub steps: u32,
    /// DDIM inversion steps (999). Every sampling timestep must be one of the inversion's: 999, or
    /// equal to `steps`, always works.
    pub inversion_steps: u32,
    /// Classifier-free guidance scale (7.5), finite and >= 0; 1 means no guidance.
    pub guidance: f64,
    /// Fractions in [0, 1] of the sampling steps, from the first, that inject the source branch's
    /// residual hidden state (0.8) and its self-attention queries and keys (0.5).
    pub resnet_injection: f64,
    pub attention_injection: f64,
    /// Which latent of the VAE posterior is inverted: `DM_LATENT_MEAN` (default, the authors' choice)
    /// or `DM_LATENT_SAMPLE`.
    pub latent: u32,
    /// Seed of the posterior sample with `DM_LATENT_SAMPLE` (42); nothing else is random.
    pub seed: u64,
    /// Prompt of the unconditional rows and of the source branch (NULL: "").
    pub null_prompt: *const c_char,
}

impl Default for dm_translate_options {
    fn default() -> Self {
        let d = TranslateOptions::default();
        dm_translate_options {
            struct_size: std::mem::size_of::<dm_translate_options>(),
            steps: d.steps as u32,
            inversion_steps: d.inversion_steps as u32,
            guidance: d.guidance,
            resnet_injection: d.resnet_injection,
            attention_injection: d.attention_injection,
            latent: DM_LATENT_MEAN,
            seed: d.seed,
            null_prompt: null(),
        }
    }
}

/// Fills `options` with the defaults.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_translate_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_translate_options_default(options: *mut dm_translate_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_translate_options::default(), options, "options") })
}

/// # Safety
/// `o.null_prompt` NULL or NUL-terminated.
pub(crate) unsafe fn translate_options(o: &dm_translate_options) -> FfiResult<TranslateOptions> {
    let latent = match o.latent {
        DM_LATENT_SAMPLE => LatentMode::Sample,
        DM_LATENT_MEAN => LatentMode::Mean,
        other => return Err(FfiError::Invalid(format!("`options.latent` = {other} is not a DM_LATENT_* value"))),
    };
    Ok(TranslateOptions {
        steps: o.steps as usize,
        inversion_steps: o.inversion_steps as usize,
        guidance: o.guidance,
        resnet_injection: o.resnet_injection,
        attention_injection: o.attention_injection,
        // SAFETY: forwarded to the caller's contract.
        null_prompt: unsafe { optional_str(o.null_prompt, "options.null_prompt") }?.unwrap_or("").to_string(),
        latent,
        seed: o.seed,
        ..TranslateOptions::default()
    })
}

/// How to sample images from prompts. Fill with `dm_generate_options_default`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_generate_options {
    pub struct_size: usize,
    /// DDIM steps (50).
    pub steps: u32,
    /// Classifier-free guidance scale (7.5), finite and >= 0; 1 means no guidance.
    pub guidance: f64,
    /// Image size in pixels (512 × 512).
    pub width: u32,
    pub height: u32,
    /// Seed of the initial noise (42): the library's own generator, so results are the same on every
    /// machine.
    pub seed: u64,
    /// Prompt of the unconditional rows (NULL: "").
    pub null_prompt: *const c_char,
}

impl Default for dm_generate_options {
    fn default() -> Self {
        let d = GenerateOptions::default();
        dm_generate_options {
            struct_size: std::mem::size_of::<dm_generate_options>(),
            steps: d.steps as u32,
            guidance: d.guidance,
            width: d.width as u32,
            height: d.height as u32,
            seed: d.seed,
            null_prompt: null(),
        }
    }
}

/// Fills `options` with the defaults.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_generate_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_generate_options_default(options: *mut dm_generate_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_generate_options::default(), options, "options") })
}

/// # Safety
/// `o.null_prompt` NULL or NUL-terminated.
unsafe fn generate_options(o: &dm_generate_options) -> FfiResult<GenerateOptions> {
    Ok(GenerateOptions {
        steps: o.steps as usize,
        guidance: o.guidance,
        // SAFETY: forwarded to the caller's contract.
        null_prompt: unsafe { optional_str(o.null_prompt, "options.null_prompt") }?.unwrap_or("").to_string(),
        height: o.height as i64,
        width: o.width as i64,
        seed: o.seed,
        noise: None,
    })
}

/// The `len` prompts of a C array of strings. An empty list is left to the safe API, whose message
/// says what a caller needs to know ("no target prompts given").
///
/// # Safety
/// `ptr` NULL or `len` readable pointers, each NULL or NUL-terminated.
pub(crate) unsafe fn prompt_list<'a>(ptr: *const *const c_char, len: usize, what: &'static str) -> FfiResult<Vec<&'a str>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: forwarded to the caller's contract.
    let pointers = unsafe { input_slice(ptr, len, what) }?;
    pointers
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            // An element is data inside an argument, not an argument, so the message names its index.
            // SAFETY: forwarded to the caller's contract.
            unsafe { optional_str(p, what) }?.ok_or_else(|| FfiError::Invalid(format!("`{what}[{i}]` is NULL")))
        })
        .collect()
}

/// Bytes of `count` packed RGB8 images of `height` × `width`, or an error when that overflows.
fn rgb_len(count: usize, height: usize, width: usize) -> FfiResult<usize> {
    [height, width, 3]
        .iter()
        .try_fold(count, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| FfiError::Invalid(format!("{count} images of {height}×{width} do not fit in memory")))
}

/// Checks a caller's output buffer before the work starts, so a wrong buffer fails at once.
fn check_buffer(ptr: *const u8, len: usize, needed: usize, what: &'static str) -> FfiResult<()> {
    if ptr.is_null() {
        return Err(FfiError::Null(what));
    }
    if len < needed {
        return Err(FfiError::BufferTooSmall { what, needed, given: len });
    }
    Ok(())
}

/// Images (N, 3, H, W) about [-1, 1] as N packed RGB8 images, one after another.
fn rgb8_images(images: &Tensor) -> FfiResult<Vec<u8>> {
    let mut bytes = Vec::new();
    for i in 0..images.size()[0] {
        bytes.extend(to_rgb8(&images.f_narrow(0, i, 1)?)?);
    }
    Ok(bytes)
}

/// Translates `image` (described by `source_prompt`) to each of the `targets_len` prompts in
/// `target_prompts` with Plug-and-Play (all strings UTF-8). Writes `targets_len` × height × width × 3
/// bytes into `out_images`: one RGB8 image per target, at the source image's size, in the targets'
/// order. When `out_reconstruction` is not NULL it receives height × width × 3 bytes: the source
/// decoded without edits, what the translations are to be compared with. `options` may be NULL for
/// the defaults. `progress` (may be NULL) is called after each UNet call with (calls done,
/// inversion steps + sampling steps, NaN); non-zero cancels with `DM_ERR_CANCELLED`.
///
/// # Safety
/// Strings NUL-terminated; `target_prompts` NULL or `targets_len` readable pointers; `image` and
/// `options` NULL or valid; output buffers NULL or writable for their lengths; `progress` safe to call
/// with `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_model_translate(
    model: *const dm_model,
    image: *const dm_image_view,
    source_prompt: *const c_char,
    target_prompts: *const *const c_char,
    targets_len: usize,
    options: *const dm_translate_options,
    progress: dm_progress_fn,
    user_data: *mut c_void,
    out_images: *mut u8,
    out_images_len: usize,
    out_reconstruction: *mut u8,
    out_reconstruction_len: usize,
) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        let min_size = std::mem::size_of::<dm_translate_options>();
        // SAFETY: the caller's contract covers each pointer.
        let (view, source_prompt, targets, options) = unsafe {
            let c_options = read_options(options, dm_translate_options::default(), min_size, "options")?;
            (
                borrow_view(image)?,
                required_str(source_prompt, "source_prompt")?,
                prompt_list(target_prompts, targets_len, "target_prompts")?,
                translate_options(&c_options)?,
            )
        };
        check_buffer(out_images, out_images_len, rgb_len(targets.len(), view.height, view.width)?, "out_images")?;
        if !out_reconstruction.is_null() {
            check_buffer(out_reconstruction, out_reconstruction_len, rgb_len(1, view.height, view.width)?, "out_reconstruction")?;
        }
        let input = view.to_model_input()?;
        let result = translate(&m, &input, source_prompt, &targets, &options, &mut progress_adapter(progress, user_data))?;
        let (images, reconstruction) = (rgb8_images(&result.images)?, rgb8_images(&result.reconstruction)?);
        // SAFETY: both buffers checked non-NULL (where written) and large enough; writable by the
        // caller's contract. Nothing is written before the work has succeeded.
        unsafe {
            write_output(&images, out_images, out_images_len, "out_images")?;
            if !out_reconstruction.is_null() {
                write_output(&reconstruction, out_reconstruction, out_reconstruction_len, "out_reconstruction")?;
            }
        }
        Ok(())
    })
}

/// Samples one image per prompt of the `prompts_len` UTF-8 strings in `prompts` (DDIM with
/// classifier-free guidance): writes `prompts_len` × height × width × 3 bytes of RGB8 (the options'
/// size) into `out_images`. `options` may be NULL for the defaults (512 × 512). `progress` (may be
/// NULL) is called after each step with (steps done, steps, NaN); non-zero cancels with
/// `DM_ERR_CANCELLED`.
///
/// # Safety
/// `prompts` NULL or `prompts_len` readable pointers to NUL-terminated strings; `options` NULL or
/// valid; `out_images` NULL or `out_images_len` writable bytes; `progress` safe to call with
/// `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_model_generate(
    model: *const dm_model,
    prompts: *const *const c_char,
    prompts_len: usize,
    options: *const dm_generate_options,
    progress: dm_progress_fn,
    user_data: *mut c_void,
    out_images: *mut u8,
    out_images_len: usize,
) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        let min_size = std::mem::size_of::<dm_generate_options>();
        // SAFETY: the caller's contract covers each pointer.
        let (prompts, options) = unsafe {
            let c_options = read_options(options, dm_generate_options::default(), min_size, "options")?;
            (prompt_list(prompts, prompts_len, "prompts")?, generate_options(&c_options)?)
        };
        check_buffer(out_images, out_images_len, rgb_len(prompts.len(), options.height as usize, options.width as usize)?, "out_images")?;
        let result = generate(&m, &prompts, &options, &mut progress_adapter(progress, user_data))?;
        // SAFETY: checked non-NULL and large enough; writable by the caller's contract.
        unsafe { write_output(&rgb8_images(&result.images)?, out_images, out_images_len, "out_images") }
    })
}
