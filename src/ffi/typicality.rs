//! Typicality maps and typical patches through the C ABI.
use std::ffi::{c_char, c_void};
use std::ptr::null;

use tch::{Device, Kind, Tensor};

use super::args::{input_slice, read_options, required_str, write_array, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::image::{borrow_view, dm_image_view};
use super::model::{dm_model, model_ref, write_tensor};
use super::status::dm_status;
use crate::image::resized_size;
use crate::memory;
use crate::mining::patches::select_patches;
use crate::typicality::{typicality_streamed, LatentMode, TypicalityOptions};

/// Progress of long work: `done` of `total` units, `value` the current loss or NaN where there is none.
/// Returning non-zero cancels the work, which then fails with `DM_ERR_CANCELLED` and leaves every
/// handle usable.
#[allow(non_camel_case_types)]
pub type dm_progress_fn = Option<unsafe extern "C" fn(done: u64, total: u64, value: f64, user_data: *mut c_void) -> i32>;

/// The C progress callback as the safe API's `(done, total) -> continue`, with NaN as the value (for
/// work without a loss to report).
pub(crate) fn progress_adapter(progress: dm_progress_fn, user_data: *mut c_void) -> impl FnMut(u64, u64) -> bool {
    move |done, total| match progress {
        // SAFETY: the caller registered this callback for this call with this user_data.
        Some(callback) => (unsafe { callback(done, total, f64::NAN, user_data) }) == 0,
        None => true,
    }
}

/// The most samples (`options.samples`) one map may draw; more is `DM_ERR_INVALID_ARGUMENT`.
pub const DM_TYPICALITY_MAX_SAMPLES: u32 = 1048576;
const _: () = assert!(DM_TYPICALITY_MAX_SAMPLES as usize == crate::typicality::MAX_SAMPLES);

/// Noise a sample of the VAE posterior (the authors' choice).
pub const DM_LATENT_SAMPLE: u32 = 0;
/// Noise the posterior mean.
pub const DM_LATENT_MEAN: u32 = 1;

/// How to compute a typicality map. Fill with `dm_typicality_options_default`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_typicality_options {
    pub struct_size: usize,
    /// Number N of (noise, t) samples (100; at most `DM_TYPICALITY_MAX_SAMPLES`).
    pub samples: u32,
    /// Samples per UNet call, each call running both prompts (10).
    pub batch: u32,
    /// t range as fractions of the training steps (0.1, 0.7: t in [100, 699]).
    pub t_min: f64,
    pub t_max: f64,
    /// Seed of the image's random stream (42); see the library docs for the draw order.
    pub seed: u64,
    /// `DM_LATENT_SAMPLE` (default) or `DM_LATENT_MEAN`.
    pub latent: u32,
    /// Resize the image so its shorter side has this many pixels first (Lanczos); 0 keeps its size.
    pub resize_short_side: u32,
    /// Optional explicit draws, both or neither: N timesteps, and N × C × h × w noise floats.
    pub timesteps: *const i64,
    pub timesteps_len: usize,
    pub noise: *const f32,
    pub noise_len: usize,
    // Second version of the struct: variance reduction of the draws.
    /// Non-zero: samples in pairs (noise, t) and (−noise, t) (0: independent draws, the authors').
    pub antithetic: u32,
    /// Non-zero: each drawn t uniform within its own stratum of the t range (0: over the whole range).
    pub stratified: u32,
}

impl Default for dm_typicality_options {
    fn default() -> Self {
        let d = TypicalityOptions::default();
        dm_typicality_options {
            struct_size: std::mem::size_of::<dm_typicality_options>(),
            samples: d.samples as u32,
            batch: d.batch as u32,
            t_min: d.t_min,
            t_max: d.t_max,
            seed: d.seed,
            latent: c_latent(d.latent),
            resize_short_side: 0,
            timesteps: null(),
            timesteps_len: 0,
            noise: null(),
            noise_len: 0,
            antithetic: d.antithetic as u32,
            stratified: d.stratified as u32,
        }
    }
}

/// Fills `options` with the authors' defaults.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_typicality_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_typicality_options_default(options: *mut dm_typicality_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_typicality_options::default(), options, "options") })
}

/// # Safety
/// `ptr` NULL or a valid options struct.
unsafe fn c_options(ptr: *const dm_typicality_options) -> FfiResult<dm_typicality_options> {
    // A caller built against the first version, which ended before `antithetic`, gets the defaults
    // of the later fields.
    let min = std::mem::offset_of!(dm_typicality_options, antithetic);
    // SAFETY: forwarded to the caller's contract.
    unsafe { read_options(ptr, dm_typicality_options::default(), min, "options") }
}

/// The latent a C `latent` field names.
pub(crate) fn latent_mode(latent: u32) -> FfiResult<LatentMode> {
    match latent {
        DM_LATENT_SAMPLE => Ok(LatentMode::Sample),
        DM_LATENT_MEAN => Ok(LatentMode::Mean),
        other => Err(FfiError::Invalid(format!("`options.latent` = {other} is not a DM_LATENT_* value"))),
    }
}

/// The C `latent` field's value for `mode`.
pub(crate) fn c_latent(mode: LatentMode) -> u32 {
    match mode {
        LatentMode::Sample => DM_LATENT_SAMPLE,
        LatentMode::Mean => DM_LATENT_MEAN,
    }
}

/// The safe options, with the explicit draws borrowed from the caller's arrays.
///
/// # Safety
/// The options' `timesteps` and `noise` NULL or readable for their stated lengths.
unsafe fn typicality_options(o: &dm_typicality_options, latent_shape: [i64; 3]) -> FfiResult<TypicalityOptions> {
    let latent = latent_mode(o.latent)?;
    let (timesteps, noise) = match (o.timesteps.is_null(), o.noise.is_null()) {
        (true, true) => (None, None),
        (false, false) => {
            let n = o.timesteps_len as u128;
            let [c, h, w] = latent_shape.map(|side| side as u128);
            if o.noise_len as u128 != n * c * h * w {
                return Err(FfiError::Invalid(format!(
                    "`options.noise` holds {} floats; {n} samples of a {c} × {h} × {w} latent need {}",
                    o.noise_len,
                    n * c * h * w
                )));
            }
            // The library's copy of the caller's arrays.
            memory::check_fits(o.noise_len as u128 + o.timesteps_len as u128 * 2, 4, "a copy of the explicit draws")?;
            // SAFETY: the caller's contract covers both arrays and their lengths.
            let (t, e) = unsafe { (input_slice(o.timesteps, o.timesteps_len, "options.timesteps")?, input_slice(o.noise, o.noise_len, "options.noise")?) };
            let [c, h, w] = latent_shape;
            (Some(t.to_vec()), Some(Tensor::from_slice(e).f_reshape([o.timesteps_len as i64, c, h, w])?))
        }
        _ => return Err(FfiError::Invalid("`options.timesteps` and `options.noise` must be given together".into())),
    };
    Ok(TypicalityOptions {
        samples: o.samples as usize,
        batch: o.batch as usize,
        t_min: o.t_min,
        t_max: o.t_max,
        seed: o.seed,
        latent,
        timesteps,
        noise,
        antithetic: o.antithetic != 0,
        stratified: o.stratified != 0,
        keep_sample_losses: false,
    })
}

/// The map's height and width for `image` under `options` (NULL for defaults): the image's size after
/// any resize.
///
/// # Safety
/// `image` NULL or a valid view; `options` NULL or valid; `out_height`, `out_width` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_typicality_map_size(
    image: *const dm_image_view,
    options: *const dm_typicality_options,
    out_height: *mut u32,
    out_width: *mut u32,
) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers each pointer.
        let (view, o) = unsafe { (borrow_view(image)?, c_options(options)?) };
        let (h, w) = map_size(view.height, view.width, o.resize_short_side)?;
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

fn map_size(height: usize, width: usize, resize_short_side: u32) -> Result<(usize, usize), crate::Error> {
    match resize_short_side {
        0 => Ok((height, width)),
        side => resized_size(height, width, side as usize),
    }
}

/// Computes the typicality map of `image` for `prompt` against `null_prompt` (both UTF-8; the null
/// prompt may be ""), writing H × W floats (`dm_typicality_map_size`) into `out_map`. When
/// `out_sample_losses` is not NULL it also receives the N × 2 × h × w per-sample losses at latent
/// resolution (index 0: label prompt, 1: null prompt), written batch by batch (after a failure its
/// contents are unspecified). `progress` (may be NULL) is called after each UNet batch with (samples
/// done, N, NaN). N is at most `DM_TYPICALITY_MAX_SAMPLES`; memory does not grow with it. An image,
/// model or explicit noise that makes a value NaN or infinite is `DM_ERR_INVALID_DATA`, with the
/// message naming where.
///
/// # Safety
/// Strings NUL-terminated; `image` and `options` valid or NULL (options); output buffers NULL or
/// writable for their lengths; `progress` safe to call with `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_typicality_map(
    model: *const dm_model,
    image: *const dm_image_view,
    prompt: *const c_char,
    null_prompt: *const c_char,
    options: *const dm_typicality_options,
    progress: dm_progress_fn,
    user_data: *mut c_void,
    out_map: *mut f32,
    out_map_len: usize,
    out_sample_losses: *mut f32,
    out_sample_losses_len: usize,
) -> dm_status {
    guard(|| {
        let m = model_ref(model)?;
        // SAFETY: the caller's contract covers each pointer.
        let (view, prompt, null_prompt, o) =
            unsafe { (borrow_view(image)?, required_str(prompt, "prompt")?, required_str(null_prompt, "null_prompt")?, c_options(options)?) };
        // The counts, then every output, are checked before the work starts, so a wrong one fails at once.
        TypicalityOptions { samples: o.samples as usize, batch: o.batch as usize, ..TypicalityOptions::default() }.check()?;
        let (h, w) = map_size(view.height, view.width, o.resize_short_side)?;
        if out_map.is_null() {
            return Err(FfiError::Null("out_map"));
        }
        if out_map_len < h * w {
            return Err(FfiError::BufferTooSmall { what: "out_map", needed: h * w, given: out_map_len });
        }
        let (lh, lw) = m.latent_size(h as i64, w as i64)?;
        let losses_per_sample = 2 * (lh * lw) as usize;
        let losses_needed = o.samples as usize * losses_per_sample;
        if !out_sample_losses.is_null() && out_sample_losses_len < losses_needed {
            return Err(FfiError::BufferTooSmall { what: "out_sample_losses", needed: losses_needed, given: out_sample_losses_len });
        }
        let input = view.to_model_input_resized((o.resize_short_side > 0).then_some(o.resize_short_side as usize))?;
        // SAFETY: the caller's contract covers the explicit draws.
        let options = unsafe { typicality_options(&o, [m.latent_channels(), lh, lw]) }?;
        let mut write_losses = |first: usize, losses: &Tensor| -> crate::Result<()> {
            if out_sample_losses.is_null() {
                return Ok(());
            }
            let values = Vec::<f32>::try_from(losses.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
            let offset = first * losses_per_sample;
            assert!(offset + values.len() <= losses_needed, "a batch of losses beyond the N samples");
            // SAFETY: the buffer holds N samples' losses (checked above) and this batch lies within
            // them (asserted); writable by the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out_sample_losses.add(offset), values.len()) };
            Ok(())
        };
        let map = typicality_streamed(&m, &input, prompt, null_prompt, &options, &mut progress_adapter(progress, user_data), &mut write_losses)?;
        // SAFETY: the caller's contract covers `out_map`.
        unsafe { write_tensor(&map, out_map, out_map_len, "out_map") }
    })
}

/// A square box of an image: columns `x .. x+size`, rows `y .. y+size`, with its mean typicality.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_box {
    pub x: u32,
    pub y: u32,
    pub size: u32,
    pub score: f32,
}

/// The image's typical patches: every `patch_size` square window of the `height` × `width` map is scored
/// by its mean, then up to `max_boxes` are taken best first, each dropping the windows that intersect or
/// touch it (ties: lowest row, then column). Writes them to `out_boxes` and their count to `*out_count`.
///
/// # Safety
/// `map` NULL or `map_len` readable floats; `out_boxes` NULL or `out_len` writable boxes; `out_count`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dm_patches_select(
    map: *const f32,
    map_len: usize,
    height: u32,
    width: u32,
    patch_size: u32,
    max_boxes: u32,
    out_boxes: *mut dm_box,
    out_len: usize,
    out_count: *mut usize,
) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers `map`.
        let values = unsafe { input_slice(map, map_len, "map") }?;
        let boxes = select_patches(values, height as usize, width as usize, patch_size as usize, max_boxes as usize)?;
        let c_boxes: Vec<dm_box> = boxes.iter().map(|b| dm_box { x: b.x as u32, y: b.y as u32, size: b.size as u32, score: b.score }).collect();
        // SAFETY: the caller's contract covers the outputs.
        unsafe { write_array(&c_boxes, out_boxes, out_len, out_count, "out_boxes") }
    })
}
