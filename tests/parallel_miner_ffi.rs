//! Co-typicality mining through the C ABI (`dm_parallel_miner_*`) on the Plug-and-Play fixture
//! (tests/reference/translate_reference.py) at toy settings: the results equal the safe API's
//! `parallel_set` + `CotypicalMiner` on the same images and options, field for field; bad input gets a
//! status and a message that says what is wrong; the progress callback counts and cancels, and a
//! cancelled miner runs again; the report lists the safe API's elements and cuts its strips from the
//! versions the run saved.
mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

use common::{c_last_error, translate_fixture_dir, CModel};
use diffmine::ffi::{
    self, dm_cotypical_element, dm_image_view, dm_mined_cluster, dm_parallel_miner, dm_parallel_miner_options, dm_parallel_report_options, dm_status,
    dm_translate_options, DM_PIXEL_U8,
};
use diffmine::image::{to_rgb8, ImageView, PixelType};
use diffmine::mining::cluster::ClusterOptions;
use diffmine::mining::cotypicality::{parallel_set, CotypicalMiner, CotypicalResult, ParallelMiningOptions, Projection};
use diffmine::mining::dift::DiftOptions;
use diffmine::model::{ModelOptions, StableDiffusion};
use diffmine::translate::TranslateOptions;
use diffmine::typicality::TypicalityOptions;
use tch::Tensor;

const TEMPLATE: &str = "Image of {label}.";
const NULL_PROMPT: &str = "An image.";
const LABELS: [&str; 2] = ["cars", "cats"];

fn assert_fails(status: dm_status, expected: dm_status, message: &str) {
    assert_eq!(status, expected, "{}", c_last_error());
    let error = c_last_error();
    assert!(error.contains(message), "message `{error}` should contain `{message}`");
}

/// An RGB8 source image with its label.
struct Source {
    pixels: image::RgbImage,
    label: usize,
}

impl Source {
    /// The model input the library makes of the same pixels.
    fn tensor(&self) -> Tensor {
        let (width, height) = (self.pixels.width() as usize, self.pixels.height() as usize);
        let view = ImageView { data: self.pixels.as_raw(), width, height, channels: 3, stride: width * 3, pixel: PixelType::U8 };
        view.to_model_input().unwrap()
    }
}

/// Three 24 × 16 sources: the fixture's image under the first label, and its mirror images under both.
fn sources() -> Vec<Source> {
    let tensors: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(translate_fixture_dir().join("reference.safetensors")).unwrap().into_iter().collect();
    let image = &tensors["pnp.image"];
    let (_, _, h, w) = image.size4().unwrap();
    let pixels = image::RgbImage::from_raw(w as u32, h as u32, to_rgb8(image).unwrap()).unwrap();
    vec![
        Source { pixels: pixels.clone(), label: 0 },
        Source { pixels: image::imageops::flip_horizontal(&pixels), label: 1 },
        Source { pixels: image::imageops::flip_vertical(&pixels), label: 0 },
    ]
}

/// Toy settings: two translation steps, two typicality samples, 4-pixel boxes.
fn safe_options() -> ParallelMiningOptions {
    ParallelMiningOptions {
        prompt_template: TEMPLATE.into(),
        null_prompt: NULL_PROMPT.into(),
        // The C options leave the translation's null prompt NULL, so it takes the miner's.
        translate: TranslateOptions { steps: 2, inversion_steps: 2, null_prompt: NULL_PROMPT.into(), ..TranslateOptions::default() },
        typicality: TypicalityOptions { samples: 2, batch: 2, ..TypicalityOptions::default() },
        dift: DiftOptions { ensemble: 1, ..DiftOptions::default() },
        cluster: ClusterOptions { clusters: 2, restarts: 2, ..ClusterOptions::default() },
        patch_size: 4,
        per_set: 2,
        top: 5,
        projection_dims: 2,
        // The C default: UMAP with the authors' 15 neighbours, seeded with the typicality seed.
        projection: Projection::Umap { neighbors: 15, seed: TypicalityOptions::default().seed },
        resize: None,
    }
}

fn translate_options() -> dm_translate_options {
    let mut o = std::mem::MaybeUninit::<dm_translate_options>::uninit();
    // SAFETY: a valid out pointer; the call fills the whole struct.
    assert_eq!(unsafe { ffi::dm_translate_options_default(o.as_mut_ptr()) }, dm_status::DM_OK);
    // SAFETY: initialised by the call above.
    dm_translate_options { steps: 2, inversion_steps: 2, ..unsafe { o.assume_init() } }
}

/// The C options equal to `safe_options`; what they point to must outlive them.
fn c_options(template: &CString, null_prompt: &CString, translate: &dm_translate_options) -> dm_parallel_miner_options {
    let mut o = dm_parallel_miner_options { struct_size: 0, ..Default::default() };
    // SAFETY: a writable options struct.
    assert_eq!(unsafe { ffi::dm_parallel_miner_options_default(&mut o) }, dm_status::DM_OK);
    dm_parallel_miner_options {
        prompt_template: template.as_ptr(),
        null_prompt: null_prompt.as_ptr(),
        translate,
        samples: 2,
        batch: 2,
        patch_size: 4,
        per_set: 2,
        top: 5,
        dift_ensemble: 1,
        clusters: 2,
        restarts: 2,
        projection_dims: 2,
        ..o
    }
}

/// The labels as a C array; the strings must outlive the pointers.
fn c_labels(labels: &[&str]) -> (Vec<CString>, Vec<*const c_char>) {
    let owned: Vec<CString> = labels.iter().map(|l| CString::new(*l).unwrap()).collect();
    let pointers = owned.iter().map(|c| c.as_ptr()).collect();
    (owned, pointers)
}

/// A parallel miner handle with the test options, freed on drop.
struct CMiner(*mut dm_parallel_miner);

impl CMiner {
    fn create(model: &CModel) -> Self {
        Self::create_saving_versions_in(model, None)
    }

    /// With `options.versions_dir` set to `versions_dir` (None: NULL, a temporary folder).
    fn create_saving_versions_in(model: &CModel, versions_dir: Option<&Path>) -> Self {
        let (template, null_prompt, translate) = (CString::new(TEMPLATE).unwrap(), CString::new(NULL_PROMPT).unwrap(), translate_options());
        let versions_dir = versions_dir.map(|d| CString::new(d.to_str().unwrap()).unwrap());
        let options =
            dm_parallel_miner_options { versions_dir: versions_dir.as_ref().map_or(null(), |d| d.as_ptr()), ..c_options(&template, &null_prompt, &translate) };
        let (_owned, labels) = c_labels(&LABELS);
        let mut miner = null_mut();
        // SAFETY: a live model, two label strings, valid options whose pointers outlive the call, a
        // valid out pointer.
        let status = unsafe { ffi::dm_parallel_miner_create(model.0, labels.as_ptr(), labels.len(), &options, &mut miner) };
        assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());
        CMiner(miner)
    }

    fn add_file(&self, path: &Path, label: &str) -> dm_status {
        let (path, label) = (CString::new(path.to_str().unwrap()).unwrap(), CString::new(label).unwrap());
        // SAFETY: NUL-terminated strings.
        unsafe { ffi::dm_parallel_miner_add_file(self.0, path.as_ptr(), label.as_ptr()) }
    }

    fn add_rgb8(&self, pixels: &image::RgbImage, name: Option<&str>, label: &str) -> dm_status {
        let view = dm_image_view {
            data: pixels.as_raw().as_ptr() as *const c_void,
            data_len: pixels.as_raw().len(),
            width: pixels.width(),
            height: pixels.height(),
            channels: 3,
            pixel_type: DM_PIXEL_U8,
            stride: pixels.width() as usize * 3,
        };
        let (name, label) = (name.map(|n| CString::new(n).unwrap()), CString::new(label).unwrap());
        // SAFETY: a view of a live buffer of `data_len` bytes; NULL or NUL-terminated strings.
        unsafe { ffi::dm_parallel_miner_add_image(self.0, &view, name.as_ref().map_or(null(), |n| n.as_ptr()), label.as_ptr()) }
    }

    fn run(&self) -> dm_status {
        // SAFETY: no callback.
        unsafe { ffi::dm_parallel_miner_run(self.0, None, null_mut()) }
    }

    fn count(&self, query: unsafe extern "C" fn(*const dm_parallel_miner, *mut usize) -> dm_status) -> usize {
        let mut n = 0;
        // SAFETY: a valid out pointer.
        assert_eq!(unsafe { query(self.0, &mut n) }, dm_status::DM_OK, "{}", c_last_error());
        n
    }

    fn image_name(&self, image: u32) -> String {
        let mut needed = 0;
        // SAFETY: NULL buffer asks the size; valid out pointer.
        assert_eq!(unsafe { ffi::dm_parallel_miner_image_name(self.0, image, null_mut(), 0, &mut needed) }, dm_status::DM_OK, "{}", c_last_error());
        let mut buffer = vec![0 as c_char; needed];
        // SAFETY: a buffer of `needed` bytes.
        assert_eq!(unsafe { ffi::dm_parallel_miner_image_name(self.0, image, buffer.as_mut_ptr(), needed, &mut needed) }, dm_status::DM_OK);
        // SAFETY: NUL-terminated by the library.
        unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned()
    }

    fn elements(&self) -> Vec<dm_cotypical_element> {
        let n = self.count(ffi::dm_parallel_miner_element_count);
        let mut out = vec![empty_element(); n];
        let mut count = 0;
        // SAFETY: an array of n elements.
        assert_eq!(unsafe { ffi::dm_parallel_miner_elements(self.0, out.as_mut_ptr(), n, &mut count) }, dm_status::DM_OK, "{}", c_last_error());
        assert_eq!(count, n);
        out
    }

    fn clusters(&self) -> Vec<dm_mined_cluster> {
        let n = self.count(ffi::dm_parallel_miner_cluster_count);
        let mut out = vec![dm_mined_cluster { first: 0, members: 0, median_typicality: 0.0 }; n];
        let mut count = 0;
        // SAFETY: an array of n elements.
        assert_eq!(unsafe { ffi::dm_parallel_miner_clusters(self.0, out.as_mut_ptr(), n, &mut count) }, dm_status::DM_OK, "{}", c_last_error());
        assert_eq!(count, n);
        out
    }
}

impl Drop for CMiner {
    fn drop(&mut self) {
        ffi::dm_parallel_miner_free(self.0);
    }
}

fn empty_element() -> dm_cotypical_element {
    dm_cotypical_element { image: 0, source_label: 0, x: 0, y: 0, size: 0, cotypicality: 0.0, cluster: 0, rank_in_cluster: 0, distance: 0.0 }
}

/// What `diffmine parallel-mine` computes: each source's parallel set, mined in the order added.
fn safe_result(sources: &[Source]) -> CotypicalResult {
    let model = StableDiffusion::open(translate_fixture_dir(), &ModelOptions::default()).unwrap();
    let (options, labels) = (safe_options(), LABELS.map(String::from).to_vec());
    let mut miner = CotypicalMiner::new(&model, labels.clone(), &options).unwrap();
    for source in sources {
        let set = parallel_set(&model, &source.tensor(), source.label, &labels, &options, &mut |_, _| true).unwrap();
        miner.add_set(&set, &mut |_, _| true).unwrap();
    }
    miner.finish().unwrap()
}

#[test]
fn results_through_the_c_api_equal_the_safe_api_field_for_field() {
    let sources = sources();
    let expected = safe_result(&sources);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("first.png");
    sources[0].pixels.save(&file).unwrap();

    let model = CModel::open(translate_fixture_dir());
    let miner = CMiner::create(&model);
    assert_eq!(miner.add_file(&file, LABELS[sources[0].label]), dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(miner.add_rgb8(&sources[1].pixels, Some("mirrored"), LABELS[sources[1].label]), dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(miner.add_rgb8(&sources[2].pixels, None, LABELS[sources[2].label]), dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(miner.run(), dm_status::DM_OK, "{}", c_last_error());

    let elements: Vec<dm_cotypical_element> = expected
        .elements
        .iter()
        .map(|e| dm_cotypical_element {
            image: e.set as u32,
            source_label: sources[e.set].label as u32,
            x: e.patch.x as u32,
            y: e.patch.y as u32,
            size: e.patch.size as u32,
            cotypicality: e.patch.score,
            cluster: e.cluster_rank as u32,
            rank_in_cluster: e.rank_in_cluster as u32,
            distance: e.distance,
        })
        .collect();
    assert_eq!(elements.len(), 5, "the 5 best of 3 × 2 boxes");
    assert_eq!(miner.elements(), elements);
    let clusters: Vec<dm_mined_cluster> = expected
        .clusters
        .iter()
        .map(|c| dm_mined_cluster { first: c.members[0] as u32, members: c.members.len() as u32, median_typicality: c.median_typicality })
        .collect();
    assert_eq!(miner.clusters(), clusters);
    assert_eq!(miner.count(ffi::dm_parallel_miner_image_count), 3);
    assert_eq!([miner.image_name(0), miner.image_name(1), miner.image_name(2)], [file.to_str().unwrap(), "mirrored", "image-2"]);
}

#[test]
fn bad_input_gets_a_status_and_a_message_naming_the_problem() {
    let model = CModel::open(translate_fixture_dir());
    let (template, null_prompt, translate) = (CString::new(TEMPLATE).unwrap(), CString::new(NULL_PROMPT).unwrap(), translate_options());
    let options = c_options(&template, &null_prompt, &translate);
    let (_owned, labels) = c_labels(&LABELS);
    let (_one, one_label) = c_labels(&["cars"]);
    let (_twice, twice) = c_labels(&["cars", " cars "]);
    let (_blank, blank) = c_labels(&["cars", " "]);
    let mut out = null_mut();
    // SAFETY (this block): every pointer is NULL or valid for what the call reads or writes; the
    // strings outlive the calls.
    unsafe {
        let create = |labels: *const *const c_char, n: usize, options: *const dm_parallel_miner_options, out: *mut *mut dm_parallel_miner| {
            ffi::dm_parallel_miner_create(model.0, labels, n, options, out)
        };
        assert_fails(ffi::dm_parallel_miner_create(null(), labels.as_ptr(), 2, &options, &mut out), dm_status::DM_ERR_NULL_ARGUMENT, "`model`");
        assert_fails(create(null(), 2, &options, &mut out), dm_status::DM_ERR_NULL_ARGUMENT, "`labels`");
        assert_fails(create(labels.as_ptr(), 2, null(), &mut out), dm_status::DM_ERR_NULL_ARGUMENT, "`options`");
        assert_fails(create(labels.as_ptr(), 2, &options, null_mut()), dm_status::DM_ERR_NULL_ARGUMENT, "`out_miner`");
        assert_fails(create(one_label.as_ptr(), 1, &options, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "at least 2 labels");
        assert_fails(create(twice.as_ptr(), 2, &options, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "`labels[1]` = `cars` repeats `labels[0]`");
        assert_fails(create(blank.as_ptr(), 2, &options, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "`labels[1]` is empty");
        let no_prompt = dm_parallel_miner_options { prompt_template: null(), ..options };
        assert_fails(create(labels.as_ptr(), 2, &no_prompt, &mut out), dm_status::DM_ERR_NULL_ARGUMENT, "options.prompt_template");
        let no_dims = dm_parallel_miner_options { projection_dims: 0, ..options };
        assert_fails(create(labels.as_ptr(), 2, &no_dims, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "options.projection_dims");
        let unknown_projection = dm_parallel_miner_options { projection: 9, ..options };
        assert_fails(create(labels.as_ptr(), 2, &unknown_projection, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "DM_PROJECTION_");
        let old = dm_parallel_miner_options { struct_size: 8, ..options };
        assert_fails(create(labels.as_ptr(), 2, &old, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "struct_size");
        // 3 sampling steps are not among the timesteps of 2 inversion steps: refused before any work.
        let uneven = dm_translate_options { steps: 3, ..translate };
        let uneven = dm_parallel_miner_options { translate: &uneven, ..options };
        assert_fails(create(labels.as_ptr(), 2, &uneven, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "inversion steps");
    }
    assert!(out.is_null(), "outputs are written only on success");

    let miner = CMiner::create(&model);
    let mut n = 0;
    // SAFETY (this block): as above.
    unsafe {
        assert_fails(ffi::dm_parallel_miner_element_count(miner.0, &mut n), dm_status::DM_ERR_INVALID_ARGUMENT, "call dm_parallel_miner_run first");
        assert_fails(ffi::dm_parallel_miner_clusters(miner.0, null_mut(), 0, &mut n), dm_status::DM_ERR_INVALID_ARGUMENT, "dm_parallel_miner_run first");
    }
    assert_fails(miner.run(), dm_status::DM_ERR_INVALID_ARGUMENT, "no images to mine");
    assert_fails(miner.add_file(Path::new("/nonexistent/a.png"), "cars"), dm_status::DM_ERR_IO, "/nonexistent/a.png");
    let pixels = image::RgbImage::from_pixel(24, 16, image::Rgb([10, 20, 30]));
    assert_fails(miner.add_rgb8(&pixels, None, "dogs"), dm_status::DM_ERR_INVALID_ARGUMENT, "label `dogs` is not one of the miner's labels (cars, cats)");
    assert_fails(miner.add_rgb8(&pixels, None, " "), dm_status::DM_ERR_INVALID_ARGUMENT, "`label` is empty");
    // SAFETY (this block): as above; the view's buffer is too short for its stated size.
    unsafe {
        let short =
            dm_image_view { data: pixels.as_ptr() as *const c_void, data_len: 10, width: 24, height: 16, channels: 3, pixel_type: DM_PIXEL_U8, stride: 72 };
        assert_fails(ffi::dm_parallel_miner_add_image(miner.0, &short, null(), c"cars".as_ptr()), dm_status::DM_ERR_INVALID_ARGUMENT, "buffer holds 10 bytes");
        assert_fails(ffi::dm_parallel_miner_add_image(miner.0, null(), null(), c"cars".as_ptr()), dm_status::DM_ERR_NULL_ARGUMENT, "`image`");
        assert_fails(ffi::dm_parallel_miner_add_file(miner.0, null(), c"cars".as_ptr()), dm_status::DM_ERR_NULL_ARGUMENT, "`path`");
        assert_fails(ffi::dm_parallel_miner_image_name(miner.0, 0, null_mut(), 0, &mut n), dm_status::DM_ERR_INVALID_ARGUMENT, "image index 0");
        assert_fails(ffi::dm_parallel_miner_image_count(miner.0, null_mut()), dm_status::DM_ERR_NULL_ARGUMENT, "`out_count`");
    }
    assert_eq!(miner.count(ffi::dm_parallel_miner_image_count), 0, "nothing failed was added");

    let freed = CMiner::create(&model);
    assert_eq!(ffi::dm_parallel_miner_free(freed.0), dm_status::DM_OK);
    assert_fails(freed.run(), dm_status::DM_ERR_INVALID_HANDLE, "`miner`");
    assert_fails(freed.add_rgb8(&pixels, None, "cars"), dm_status::DM_ERR_INVALID_HANDLE, "`miner`");
    assert_fails(ffi::dm_parallel_miner_free(freed.0), dm_status::DM_ERR_INVALID_HANDLE, "`miner`");
    assert_fails(ffi::dm_parallel_miner_free(model.0 as *mut dm_parallel_miner), dm_status::DM_ERR_INVALID_HANDLE, "`miner`");
    assert_eq!(ffi::dm_parallel_miner_free(null_mut()), dm_status::DM_OK);
    std::mem::forget(freed);
}

/// Records each call and cancels at call `cancel_at` (0: never).
struct Calls {
    seen: Vec<(u64, u64)>,
    cancel_at: usize,
}

unsafe extern "C" fn record(done: u64, total: u64, value: f64, user_data: *mut c_void) -> i32 {
    // SAFETY: the test passes a live `Calls` as user_data.
    let calls = unsafe { &mut *(user_data as *mut Calls) };
    assert!(value.is_nan());
    calls.seen.push((done, total));
    (calls.seen.len() == calls.cancel_at) as i32
}

impl CMiner {
    fn run_recording(&self, cancel_at: usize) -> (dm_status, Vec<(u64, u64)>) {
        let mut calls = Calls { seen: Vec::new(), cancel_at };
        // SAFETY: the callback reads `calls`, which outlives the call.
        let status = unsafe { ffi::dm_parallel_miner_run(self.0, Some(record), &mut calls as *mut Calls as *mut c_void) };
        (status, calls.seen)
    }
}

#[test]
fn a_non_zero_progress_return_cancels_and_the_miner_runs_again_once() {
    let model = CModel::open(translate_fixture_dir());
    let miner = CMiner::create(&model);
    let source = &sources()[0];
    assert_eq!(miner.add_rgb8(&source.pixels, None, "cats"), dm_status::DM_OK, "{}", c_last_error());

    // One set: 2 inversion + 2 sampling steps, then typicality and DIFT of 2 versions.
    let (status, seen) = miner.run_recording(3);
    assert_fails(status, dm_status::DM_ERR_CANCELLED, "cancel");
    assert_eq!(seen, [(1, 8), (2, 8), (3, 8)]);
    let mut n = 0;
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { ffi::dm_parallel_miner_element_count(miner.0, &mut n) }, dm_status::DM_ERR_INVALID_ARGUMENT, "no results after a cancel");

    let (status, seen) = miner.run_recording(0);
    assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(seen, (1..=8).map(|done| (done, 8)).collect::<Vec<_>>());
    let elements = miner.elements();
    assert_eq!(elements.len(), 2, "the set's 2 boxes");
    assert!(elements.iter().all(|e| e.image == 0 && e.source_label == 1 && e.size == 4));
    assert_eq!(miner.clusters().iter().map(|c| c.members).sum::<u32>(), 2);

    // The results stay; running again, adding images and short buffers are refused.
    assert_fails(miner.run(), dm_status::DM_ERR_INVALID_ARGUMENT, "already succeeded");
    assert_fails(miner.add_rgb8(&source.pixels, None, "cars"), dm_status::DM_ERR_INVALID_ARGUMENT, "after a successful dm_parallel_miner_run");
    let mut one = [empty_element(); 1];
    // SAFETY (this block): buffers of the lengths given, valid out pointers.
    unsafe {
        assert_fails(
            ffi::dm_parallel_miner_elements(miner.0, one.as_mut_ptr(), 1, &mut n),
            dm_status::DM_ERR_BUFFER_TOO_SMALL,
            "`out` holds 1 elements, the result needs 2",
        );
        assert_fails(ffi::dm_parallel_miner_elements(miner.0, null_mut(), 0, &mut n), dm_status::DM_ERR_NULL_ARGUMENT, "`out`");
        assert_fails(ffi::dm_parallel_miner_elements(miner.0, one.as_mut_ptr(), 1, null_mut()), dm_status::DM_ERR_NULL_ARGUMENT, "`out_count`");
        let mut name = [0 as c_char; 4];
        assert_fails(ffi::dm_parallel_miner_image_name(miner.0, 0, name.as_mut_ptr(), 4, &mut n), dm_status::DM_ERR_BUFFER_TOO_SMALL, "`out` holds 4");
    }
    assert_eq!(one[0], empty_element(), "outputs are written only on success");
    assert_eq!(miner.image_name(0), "image-0");
}

impl CMiner {
    fn write_report(&self, out_dir: &Path, options: Option<&dm_parallel_report_options>) -> dm_status {
        let out_dir = CString::new(out_dir.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path; NULL or a valid options struct.
        unsafe { ffi::dm_parallel_miner_write_report(self.0, out_dir.as_ptr(), options.map_or(null(), |o| o as *const _)) }
    }
}

/// `elements.csv`'s lines as the safe API's result and the sources' names give them.
fn expected_csv(result: &CotypicalResult, names: &[&str], sources: &[Source]) -> Vec<String> {
    let header = "set,image,source_label,x,y,size,cotypicality,cluster_rank,rank_in_cluster,distance".to_string();
    let rows = result.elements.iter().map(|e| {
        let p = &e.patch;
        let label = LABELS[sources[e.set].label];
        format!("{},{},{label},{},{},{},{},{},{},{}", e.set, names[e.set], p.x, p.y, p.size, p.score, e.cluster_rank, e.rank_in_cluster, e.distance)
    });
    std::iter::once(header).chain(rows).collect()
}

/// The `size` × `size` square of `image` at (x, y).
fn square(image: &image::RgbImage, x: u32, y: u32, size: u32) -> image::RgbImage {
    image::imageops::crop_imm(image, x, y, size, size).to_image()
}

/// `crop` with its 1-pixel border painted red, as the strips frame the source's own version.
fn framed(mut crop: image::RgbImage) -> image::RgbImage {
    let (w, h) = crop.dimensions();
    for (x, y) in (0..w).flat_map(|x| (0..h).map(move |y| (x, y))).filter(|&(x, y)| x == 0 || y == 0 || x == w - 1 || y == h - 1) {
        crop.put_pixel(x, y, image::Rgb([220, 30, 30]));
    }
    crop
}

#[test]
fn the_report_lists_the_safe_api_elements_and_cuts_its_strips_from_the_saved_versions() {
    let sources = sources();
    let expected = safe_result(&sources);
    let dir = tempfile::tempdir().unwrap();
    let (versions, report) = (dir.path().join("versions"), dir.path().join("report"));
    let model = CModel::open(translate_fixture_dir());
    let miner = CMiner::create_saving_versions_in(&model, Some(&versions));
    for (i, source) in sources.iter().enumerate() {
        assert_eq!(miner.add_rgb8(&source.pixels, Some(&format!("source {i}")), LABELS[source.label]), dm_status::DM_OK, "{}", c_last_error());
    }
    assert_fails(miner.write_report(&report, None), dm_status::DM_ERR_INVALID_ARGUMENT, "call dm_parallel_miner_run first");
    assert!(!report.exists(), "nothing written before a run");
    assert_eq!(miner.run(), dm_status::DM_OK, "{}", c_last_error());
    // SAFETY: a NULL folder, which the call must refuse; NULL options.
    assert_fails(unsafe { ffi::dm_parallel_miner_write_report(miner.0, null(), null()) }, dm_status::DM_ERR_NULL_ARGUMENT, "`out_dir`");
    let no_rows = dm_parallel_report_options { per_strip: 0, ..Default::default() };
    assert_fails(miner.write_report(&report, Some(&no_rows)), dm_status::DM_ERR_INVALID_ARGUMENT, "options.per_strip");
    let old = dm_parallel_report_options { struct_size: 4, ..Default::default() };
    assert_fails(miner.write_report(&report, Some(&old)), dm_status::DM_ERR_INVALID_ARGUMENT, "struct_size");
    assert!(!report.exists(), "nothing written for refused calls");
    assert_eq!(miner.write_report(&report, None), dm_status::DM_OK, "{}", c_last_error());

    let csv = std::fs::read_to_string(report.join("elements.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5, "a header and the 5 elements");
    assert_eq!(csv.lines().collect::<Vec<_>>(), expected_csv(&expected, &["source 0", "source 1", "source 2"], &sources));

    // One strip per cluster (fewer than the default 32): a row per member (at most the default 8), a
    // column per label, cells of the 4-pixel boxes + 2; each cell the box of that version, the
    // source's framed.
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("href=\"elements.csv\""));
    for (rank, cluster) in expected.clusters.iter().enumerate() {
        let strip = image::open(report.join(format!("strip_{rank:02}.png"))).unwrap().to_rgb8();
        assert_eq!(strip.dimensions(), (6 * 2, 6 * cluster.members.len().min(8) as u32), "strip {rank}");
        assert!(html.contains(&format!("src=\"strip_{rank:02}.png\"")));
        for (row, &member) in cluster.members.iter().enumerate() {
            let e = &expected.elements[member];
            let (x, y) = (e.patch.x as u32, e.patch.y as u32);
            for v in 0..LABELS.len() {
                let version = image::open(versions.join(format!("{:05}_{v}.png", e.set))).unwrap().to_rgb8();
                let box_crop = square(&version, x, y, 4);
                let expected_cell = if v == sources[e.set].label { framed(box_crop) } else { box_crop };
                assert_eq!(square(&strip, 6 * v as u32 + 1, 6 * row as u32 + 1, 4), expected_cell, "strip {rank}, row {row}, version {v}");
            }
        }
    }
    assert!(!report.join(format!("strip_{:02}.png", expected.clusters.len())).exists());

    // The source's own version is its pixels; the versions stay in the caller's folder after the free.
    for (i, source) in sources.iter().enumerate() {
        assert_eq!(image::open(versions.join(format!("{i:05}_{}.png", source.label))).unwrap().to_rgb8(), source.pixels);
    }
    drop(miner);
    assert_eq!(std::fs::read_dir(&versions).unwrap().count(), sources.len() * LABELS.len());
}
