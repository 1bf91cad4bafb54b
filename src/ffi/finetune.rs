//! Finetuning through the C ABI: one call that trains a model folder's UNet (or LoRA adapters on it)
//! on a labelled set and writes a diffusers folder (or the adapter file), with progress (step, steps,
//! loss) and cancellation.
use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::ptr::null;

use super::args::{optional_str, read_options, required_str, write_value};
use super::error::{guard, FfiError, FfiResult};
use super::model::{dm_model_options, dtype_from_c, model_options as safe_model_options, DM_DTYPE_FLOAT32, MODEL_OPTIONS_V1_SIZE};
use super::status::dm_status;
use super::typicality::dm_progress_fn;
use crate::dataset::LabelledSet;
use crate::finetune::{finetune, FinetuneOptions, LoraOptions, StepCompute, TrainOptions};

/// How to finetune. Fill with `dm_finetune_options_default` (the paper's recipe), then set `steps`,
/// `batch_size` and `resolution` for the data at hand.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct dm_finetune_options {
    pub struct_size: usize,
    pub steps: u32,
    pub batch_size: u32,
    /// Images are resized (shorter side) and centre-cropped to this size.
    pub resolution: u32,
    pub seed: u64,
    /// AdamW: learning rate (constant), betas, weight decay, epsilon; gradient clipping norm (0: off).
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
    pub max_grad_norm: f64,
    /// Probability that a caption is replaced by the null prompt.
    pub condition_dropout: f64,
    /// Caption template with `{label}` (NULL: "Image of {label}."), the separator of several labels
    /// (NULL: ", ") and the null prompt (NULL: "").
    pub caption_template: *const c_char,
    pub label_separator: *const c_char,
    pub null_prompt: *const c_char,
    /// Write a resumable checkpoint every this many steps into `checkpoint_dir` (0 or NULL: never).
    pub checkpoint_every: u32,
    pub checkpoint_dir: *const c_char,
    /// Since version 2. Mixed precision: `DM_DTYPE_BFLOAT16` runs the UNet under autocast in bfloat16
    /// with float32 weights; `DM_DTYPE_FLOAT32` (default) runs all in float32; `DM_DTYPE_FLOAT16` is
    /// refused (it would need loss scaling).
    pub autocast_dtype: u32,
    /// Since version 2. Non-zero: recompute each UNet block in the backward pass instead of keeping
    /// its activations (less memory, about one more forward pass per step).
    pub gradient_checkpointing: u32,
    /// Since version 3. Non-zero: train LoRA adapters of this rank on the UNet's attention
    /// projections instead of the whole UNet, the base weights frozen; the result is then
    /// `out_path/pytorch_lora_weights.safetensors` (diffusers/peft naming). 0 (default): the whole UNet.
    pub lora_rank: u32,
    /// Since version 3. The adapters' alpha (their output is scaled by alpha / rank); 0: the rank.
    pub lora_alpha: f64,
    /// Since version 3. Comma-separated projections to adapt, from to_q, to_k, to_v, to_out.0 (NULL:
    /// all four).
    pub lora_targets: *const c_char,
}

impl Default for dm_finetune_options {
    fn default() -> Self {
        let d = FinetuneOptions::default();
        dm_finetune_options {
            struct_size: std::mem::size_of::<dm_finetune_options>(),
            steps: d.steps as u32,
            batch_size: d.batch_size as u32,
            resolution: d.resolution as u32,
            seed: d.seed,
            learning_rate: d.train.learning_rate,
            beta1: d.train.beta1,
            beta2: d.train.beta2,
            weight_decay: d.train.weight_decay,
            eps: d.train.eps,
            max_grad_norm: d.train.max_grad_norm,
            condition_dropout: d.condition_dropout,
            caption_template: null(),
            label_separator: null(),
            null_prompt: null(),
            checkpoint_every: 0,
            checkpoint_dir: null(),
            autocast_dtype: DM_DTYPE_FLOAT32,
            gradient_checkpointing: d.compute.gradient_checkpointing as u32,
            lora_rank: 0,
            lora_alpha: 0.0,
            lora_targets: null(),
        }
    }
}

/// Fills `options` with the defaults.
///
/// # Safety
/// `options` must be NULL or point to a writable `dm_finetune_options`.
#[no_mangle]
pub unsafe extern "C" fn dm_finetune_options_default(options: *mut dm_finetune_options) -> dm_status {
    // SAFETY: forwarded to the caller's contract.
    guard(|| unsafe { write_value(dm_finetune_options::default(), options, "options") })
}

/// # Safety
/// Every non-NULL string of `o` NUL-terminated.
unsafe fn finetune_options(o: &dm_finetune_options) -> FfiResult<FinetuneOptions> {
    let d = FinetuneOptions::default();
    // SAFETY: forwarded to the caller's contract.
    let text = |p: *const c_char, what, default: &str| -> FfiResult<String> { Ok(unsafe { optional_str(p, what) }?.unwrap_or(default).to_string()) };
    Ok(FinetuneOptions {
        train: TrainOptions {
            learning_rate: o.learning_rate,
            beta1: o.beta1,
            beta2: o.beta2,
            weight_decay: o.weight_decay,
            eps: o.eps,
            max_grad_norm: o.max_grad_norm,
        },
        caption_template: text(o.caption_template, "options.caption_template", &d.caption_template)?,
        label_separator: text(o.label_separator, "options.label_separator", &d.label_separator)?,
        null_prompt: text(o.null_prompt, "options.null_prompt", &d.null_prompt)?,
        condition_dropout: o.condition_dropout,
        batch_size: o.batch_size as usize,
        steps: o.steps as usize,
        seed: o.seed,
        resolution: o.resolution as usize,
        checkpoint_every: o.checkpoint_every as usize,
        // SAFETY: as above.
        checkpoint_dir: unsafe { optional_str(o.checkpoint_dir, "options.checkpoint_dir") }?.map(PathBuf::from),
        compute: StepCompute::new(dtype_from_c(o.autocast_dtype, "options.autocast_dtype")?, o.gradient_checkpointing != 0),
        // SAFETY: as above.
        lora: unsafe { lora_options(o) }?,
    })
}

/// The LoRA options of `o` (None: rank 0, the whole UNet is trained).
///
/// # Safety
/// `o.lora_targets` NULL or NUL-terminated.
unsafe fn lora_options(o: &dm_finetune_options) -> FfiResult<Option<LoraOptions>> {
    if o.lora_rank == 0 {
        return Ok(None);
    }
    let d = LoraOptions::default();
    // SAFETY: forwarded to the caller's contract.
    let targets = match unsafe { optional_str(o.lora_targets, "options.lora_targets") }? {
        Some(list) => list.split(',').map(|t| t.trim().to_string()).collect(),
        None => d.targets,
    };
    let alpha = (o.lora_alpha != 0.0).then_some(o.lora_alpha);
    let options = LoraOptions { rank: o.lora_rank as usize, alpha, targets };
    options.validate()?;
    Ok(Some(options))
}

/// Finetunes the UNet of the diffusers folder `model_path` (loaded with `model_options`, NULL for
/// defaults; float32) on the labelled set `data_path` (a folder per label, or a `path,label` CSV) and
/// writes the result as a diffusers folder at `out_path` (with `lora_rank` set: LoRA adapters, written
/// as `out_path/pytorch_lora_weights.safetensors`). `resume_path` (may be NULL) continues from a
/// checkpoint folder. `progress` (may be NULL) is called after each step with (step, steps, loss);
/// non-zero cancels with `DM_ERR_CANCELLED`.
///
/// # Safety
/// Strings NUL-terminated (or NULL where allowed); option structs NULL or valid; `progress` safe to
/// call with `user_data` from this thread.
#[no_mangle]
pub unsafe extern "C" fn dm_finetune_run(
    model_path: *const c_char,
    model_options: *const dm_model_options,
    data_path: *const c_char,
    options: *const dm_finetune_options,
    resume_path: *const c_char,
    out_path: *const c_char,
    progress: dm_progress_fn,
    user_data: *mut c_void,
) -> dm_status {
    guard(|| {
        // SAFETY: the caller's contract covers every pointer.
        let (model_path, data_path, out_path, resume) = unsafe {
            (
                required_str(model_path, "model_path")?,
                required_str(data_path, "data_path")?,
                required_str(out_path, "out_path")?,
                optional_str(resume_path, "resume_path")?,
            )
        };
        // A caller built against the first version, which ended before `autocast_dtype`, gets the
        // defaults of the later fields.
        let min_finetune = std::mem::offset_of!(dm_finetune_options, autocast_dtype);
        // SAFETY: as above.
        let (model_options, options) = unsafe {
            let c_model = read_options(model_options, dm_model_options::default(), MODEL_OPTIONS_V1_SIZE, "model_options")?;
            let c_finetune = read_options(options, dm_finetune_options::default(), min_finetune, "options")?;
            (safe_model_options(&c_model)?, finetune_options(&c_finetune)?)
        };
        let set = LabelledSet::open(Path::new(data_path))?;
        let mut report = |done: u64, total: u64, loss: f64| match progress {
            // SAFETY: the caller registered this callback for this call with this user_data.
            Some(callback) => (unsafe { callback(done, total, loss, user_data) }) == 0,
            None => true,
        };
        finetune(Path::new(model_path), &model_options, &set, &options, resume.map(Path::new), Path::new(out_path), &mut report)
            .map(|_| ())
            .map_err(FfiError::from)
    })
}
