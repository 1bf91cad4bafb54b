//! What the two mining handles (`dm_miner`, `dm_parallel_miner`) share: the model they keep alive
//! and, behind one lock, a job's images and, once run, its results; the rules of adding and running
//! (no images after a successful run, one successful run, a failed or cancelled run may run again);
//! and the bodies of the entry points both have: create, add a file or a buffer, run, read the
//! results, image count and name, free. Each handle's module keeps its C declarations, its options
//! and what its results are.
use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::args::{optional_str, read_options, required_str, write_text, write_value};
use super::error::{FfiError, FfiResult};
use super::handle;
use super::image::{borrow_view, dm_image_view};
use super::model::{dm_model, model_ref};
use super::typicality::{dm_progress_fn, progress_adapter};
use crate::dataset::Pixels;
use crate::error::{Error, Result};
use crate::model::StableDiffusion;
use crate::typicality::Progress;

/// A mining job: its images and how it runs.
pub(crate) trait MiningJob: Send + 'static {
    /// What a successful run leaves for the accessors.
    type Results: Send + 'static;
    /// A label argument, as the job reads it.
    type Label;
    /// The handle's C type name, which prefixes its functions' names in messages.
    const C_NAME: &'static str;
    /// What messages call the handle.
    const NOUN: &'static str;

    /// Reads a label argument.
    ///
    /// # Safety
    /// `label` NULL or NUL-terminated.
    unsafe fn label(&self, label: *const c_char) -> FfiResult<Self::Label>;
    /// Adds the image file at `path`, or with `pixels` the image held in memory under the name `path`.
    fn add(&mut self, path: PathBuf, pixels: Option<Pixels>, label: Self::Label) -> FfiResult<()>;
    fn image_count(&self) -> usize;
    /// The path or name of image `index`, by the order images were added.
    fn image_name(&self, index: usize) -> Option<String>;
    fn run(&self, model: &StableDiffusion, progress: Progress) -> Result<Self::Results>;
}

/// A job and, once it ran successfully, its results.
pub(crate) struct JobState<J: MiningJob> {
    pub(crate) job: J,
    results: Option<J::Results>,
}

impl<J: MiningJob> JobState<J> {
    pub(crate) fn results(&self) -> FfiResult<&J::Results> {
        self.results.as_ref().ok_or_else(|| FfiError::Invalid(format!("the {} has no results yet: call {}_run first", J::NOUN, J::C_NAME)))
    }

    /// The job, to add images to: refused once it has results, which describe the images it ran on.
    fn inputs(&mut self) -> FfiResult<&mut J> {
        if self.results.is_some() {
            return Err(FfiError::Invalid(format!("images cannot be added after a successful {}_run; create a new {}", J::C_NAME, J::NOUN)));
        }
        Ok(&mut self.job)
    }
}

/// What a mining handle stands for. Calls on one handle from several threads are serialised (a call
/// waits while another, such as a run, holds the lock).
pub(crate) struct MiningHandle<J: MiningJob> {
    model: Arc<StableDiffusion>,
    state: Mutex<JobState<J>>,
}

impl<J: MiningJob> MiningHandle<J> {
    /// The live handle `handle` of this job type.
    pub(crate) fn get<H>(handle: *const H) -> FfiResult<Arc<Self>> {
        handle::get::<Self, H>(handle, "miner")
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, JobState<J>> {
        // A panic during a run leaves the state as it was before the run (results are only stored at
        // its end), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The body of `<handle>_create`: checks the arguments, reads the versioned options struct `O` (at
/// least `min_size` bytes, its first version) and registers the job `make` builds from them (keeping `model` alive), as the C-side opaque type `H`.
///
/// # Safety
/// `options` NULL or a valid options struct whose first field is its size; `out` NULL or writable.
pub(crate) unsafe fn create<J: MiningJob, H, O: Copy>(
    model: *const dm_model,
    options: *const O,
    defaults: O,
    min_size: usize,
    out: *mut *mut H,
    make: impl FnOnce(&StableDiffusion, O) -> FfiResult<J>,
) -> FfiResult<()> {
    let model = model_ref(model)?;
    if options.is_null() {
        return Err(FfiError::Null("options"));
    }
    if out.is_null() {
        return Err(FfiError::Null("out_miner"));
    }
    // SAFETY: forwarded to the caller's contract.
    let options = unsafe { read_options(options, defaults, min_size, "options") }?;
    let job = make(&model, options)?;
    let handle = handle::register::<MiningHandle<J>, H>(MiningHandle { model, state: Mutex::new(JobState { job, results: None }) });
    // SAFETY: checked non-NULL above; writable by the caller's contract.
    unsafe { write_value(handle, out, "out_miner") }
}

/// The body of `<handle>_add_file`: the file must exist now; it is read during the run.
///
/// # Safety
/// `path` and `label` NULL or NUL-terminated.
pub(crate) unsafe fn add_file<J: MiningJob, H>(handle: *const H, path: *const c_char, label: *const c_char) -> FfiResult<()> {
    let h = MiningHandle::<J>::get(handle)?;
    let mut state = h.lock();
    // SAFETY: forwarded to the caller's contract.
    let (path, label) = unsafe { (required_str(path, "path")?, state.job.label(label)?) };
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    state.inputs()?.add(PathBuf::from(path), None, label)
}

/// The body of `<handle>_add_image`: the pixels are copied; NULL `name` names the image
/// `image-<i>`, `i` its index.
///
/// # Safety
/// `image` NULL or a valid view; `name` and `label` NULL or NUL-terminated.
pub(crate) unsafe fn add_image<J: MiningJob, H>(handle: *const H, image: *const dm_image_view, name: *const c_char, label: *const c_char) -> FfiResult<()> {
    let h = MiningHandle::<J>::get(handle)?;
    let mut state = h.lock();
    // SAFETY: forwarded to the caller's contract.
    let (view, name, label) = unsafe { (borrow_view(image)?, optional_str(name, "name")?, state.job.label(label)?) };
    let pixels = Pixels::copy_of(&view)?;
    let name = name.map_or_else(|| format!("image-{}", state.job.image_count()), str::to_string);
    state.inputs()?.add(PathBuf::from(name), Some(pixels), label)
}

/// The body of `<handle>_run`: runs the job once it has images and keeps the results; a failed or
/// cancelled run leaves none and may run again, a successful one may not.
pub(crate) fn run<J: MiningJob, H>(handle: *const H, progress: dm_progress_fn, user_data: *mut c_void) -> FfiResult<()> {
    let h = MiningHandle::<J>::get(handle)?;
    let mut state = h.lock();
    if state.results.is_some() {
        return Err(FfiError::Invalid(format!(
            "{}_run already succeeded on this miner; its results stay readable, and mining again needs a new miner",
            J::C_NAME
        )));
    }
    if state.job.image_count() == 0 {
        return Err(FfiError::Invalid(format!("no images to mine: add some with {0}_add_file or {0}_add_image", J::C_NAME)));
    }
    let results = state.job.run(&h.model, &mut progress_adapter(progress, user_data))?;
    state.results = Some(results);
    Ok(())
}

/// Reads the job and the results of its successful run.
pub(crate) fn with_results<J: MiningJob, H, T>(handle: *const H, read: impl FnOnce(&J, &J::Results) -> FfiResult<T>) -> FfiResult<T> {
    let h = MiningHandle::<J>::get(handle)?;
    let state = h.lock();
    read(&state.job, state.results()?)
}

/// The body of `<handle>_image_count`.
///
/// # Safety
/// `out_count` NULL or writable.
pub(crate) unsafe fn write_image_count<J: MiningJob, H>(handle: *const H, out_count: *mut usize) -> FfiResult<()> {
    let count = MiningHandle::<J>::get(handle)?.lock().job.image_count();
    // SAFETY: forwarded to the caller's contract.
    unsafe { write_value(count, out_count, "out_count") }
}

/// The body of `<handle>_image_name`.
///
/// # Safety
/// `out` NULL or `out_len` writable bytes; `out_needed` NULL or writable.
pub(crate) unsafe fn write_image_name<J: MiningJob, H>(
    handle: *const H,
    image: u32,
    out: *mut c_char,
    out_len: usize,
    out_needed: *mut usize,
) -> FfiResult<()> {
    let h = MiningHandle::<J>::get(handle)?;
    let state = h.lock();
    let n = state.job.image_count();
    let name = state.job.image_name(image as usize).ok_or_else(|| FfiError::Invalid(format!("image index {image} is out of range ({n} images added)")))?;
    // SAFETY: forwarded to the caller's contract.
    unsafe { write_text(&name, out, out_len, out_needed) }
}

/// The body of `<handle>_free`: NULL is accepted; a call still running on another thread finishes
/// first (it holds its own reference).
pub(crate) fn release<J: MiningJob, H>(handle: *mut H) -> FfiResult<()> {
    handle::release::<MiningHandle<J>, H>(handle, "miner")
}
