//! Mining through the C ABI (`dm_miner_*`) on the tiny random-weight fixture: the results equal the safe
//! API's `mine()` on the same set and options, pixels handed in memory give the same patches as their
//! files, the report folder is written, bad input gets a status and a message that says what is wrong,
//! and the progress callback counts and cancels.
mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

use common::{c_last_error, pipeline, CModel};
use diffmine::dataset::LabelledSet;
use diffmine::ffi::{self, dm_image_view, dm_mined_cluster, dm_mined_patch, dm_miner, dm_miner_options, dm_status, DM_PIXEL_U8};
use diffmine::mining::cluster::ClusterOptions;
use diffmine::mining::dift::DiftOptions;
use diffmine::mining::miner::{mine, LabelResult, MiningOptions};
use diffmine::model::{ModelOptions, StableDiffusion};
use diffmine::synthetic::{write_dataset, SyntheticOptions};
use diffmine::typicality::TypicalityOptions;

const TEMPLATE: &str = "Chest X-Ray with {label}.";
const NULL_PROMPT: &str = "Chest X-Ray.";

fn assert_fails(status: dm_status, expected: dm_status, message: &str) {
    assert_eq!(status, expected, "{}", c_last_error());
    let error = c_last_error();
    assert!(error.contains(message), "message `{error}` should contain `{message}`");
}

/// Two labels of three synthetic images each.
fn synthetic_set(dir: &Path) -> LabelledSet {
    let options = SyntheticOptions { images_per_label: 3, labels: vec!["Nodule".into(), "Effusion".into()], ..SyntheticOptions::default() };
    write_dataset(&options, dir).unwrap();
    LabelledSet::open(dir).unwrap()
}

/// The settings of tests/mining.rs: small enough to run in seconds on the CPU.
fn safe_options() -> MiningOptions {
    MiningOptions {
        prompt_template: TEMPLATE.into(),
        null_prompt: NULL_PROMPT.into(),
        typicality: TypicalityOptions { samples: 2, batch: 2, ..TypicalityOptions::default() },
        patch_size: 16,
        top: 12,
        dift: DiftOptions { ensemble: 2, ..DiftOptions::default() },
        cluster: ClusterOptions { clusters: 3, restarts: 2, ..ClusterOptions::default() },
        ..MiningOptions::default()
    }
}

/// The C options equal to `safe_options`; the strings they point to must outlive them.
fn c_options(template: &CString, null_prompt: &CString) -> dm_miner_options {
    let mut o = dm_miner_options { struct_size: 0, ..Default::default() };
    // SAFETY: a writable options struct.
    assert_eq!(unsafe { ffi::dm_miner_options_default(&mut o) }, dm_status::DM_OK);
    dm_miner_options {
        prompt_template: template.as_ptr(),
        null_prompt: null_prompt.as_ptr(),
        samples: 2,
        batch: 2,
        patch_size: 16,
        top: 12,
        dift_ensemble: 2,
        clusters: 3,
        restarts: 2,
        ..o
    }
}

/// A miner handle with the test options, freed on drop.
struct CMiner(*mut dm_miner);

impl CMiner {
    fn create(model: &CModel) -> Self {
        let (template, null_prompt) = (CString::new(TEMPLATE).unwrap(), CString::new(NULL_PROMPT).unwrap());
        let options = c_options(&template, &null_prompt);
        let mut miner = null_mut();
        // SAFETY: a live model, valid options whose strings outlive the call, a valid out pointer.
        let status = unsafe { ffi::dm_miner_create(model.0, &options, &mut miner) };
        assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());
        CMiner(miner)
    }

    fn add_file(&self, path: &Path, label: &str) -> dm_status {
        let (path, label) = (CString::new(path.to_str().unwrap()).unwrap(), CString::new(label).unwrap());
        // SAFETY: NUL-terminated strings.
        unsafe { ffi::dm_miner_add_file(self.0, path.as_ptr(), label.as_ptr()) }
    }

    fn add_rgb8(&self, pixels: &image::RgbImage, name: &str, label: &str) -> dm_status {
        let view = dm_image_view {
            data: pixels.as_raw().as_ptr() as *const c_void,
            data_len: pixels.as_raw().len(),
            width: pixels.width(),
            height: pixels.height(),
            channels: 3,
            pixel_type: DM_PIXEL_U8,
            stride: pixels.width() as usize * 3,
        };
        let (name, label) = (CString::new(name).unwrap(), CString::new(label).unwrap());
        // SAFETY: a view of a live buffer of `data_len` bytes; NUL-terminated strings.
        unsafe { ffi::dm_miner_add_image(self.0, &view, name.as_ptr(), label.as_ptr()) }
    }

    fn run(&self) -> dm_status {
        // SAFETY: no callback.
        unsafe { ffi::dm_miner_run(self.0, None, null_mut()) }
    }

    fn count(&self, query: unsafe extern "C" fn(*const dm_miner, u32, *mut usize) -> dm_status, label: u32) -> usize {
        let mut n = 0;
        // SAFETY: a valid out pointer.
        let status = unsafe { query(self.0, label, &mut n) };
        assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());
        n
    }

    fn label_name(&self, label: u32) -> String {
        let mut needed = 0;
        // SAFETY: NULL buffer asks the size; valid out pointer.
        assert_eq!(unsafe { ffi::dm_miner_label_name(self.0, label, null_mut(), 0, &mut needed) }, dm_status::DM_OK, "{}", c_last_error());
        let mut buffer = vec![0 as c_char; needed];
        // SAFETY: a buffer of `needed` bytes.
        assert_eq!(unsafe { ffi::dm_miner_label_name(self.0, label, buffer.as_mut_ptr(), needed, &mut needed) }, dm_status::DM_OK);
        // SAFETY: NUL-terminated by the library.
        unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned()
    }

    fn patches(&self, label: u32) -> Vec<dm_mined_patch> {
        let n = self.count(ffi::dm_miner_patch_count, label);
        let mut out = vec![dm_mined_patch { image: 0, x: 0, y: 0, size: 0, typicality: 0.0, cluster: 0, rank_in_cluster: 0, distance: 0.0 }; n];
        let mut count = 0;
        // SAFETY: an array of n elements.
        assert_eq!(unsafe { ffi::dm_miner_patches(self.0, label, out.as_mut_ptr(), n, &mut count) }, dm_status::DM_OK, "{}", c_last_error());
        assert_eq!(count, n);
        out
    }

    fn clusters(&self, label: u32) -> Vec<dm_mined_cluster> {
        let n = self.count(ffi::dm_miner_cluster_count, label);
        let mut out = vec![dm_mined_cluster { first: 0, members: 0, median_typicality: 0.0 }; n];
        let mut count = 0;
        // SAFETY: an array of n elements.
        assert_eq!(unsafe { ffi::dm_miner_clusters(self.0, label, out.as_mut_ptr(), n, &mut count) }, dm_status::DM_OK, "{}", c_last_error());
        out
    }

    fn label_count(&self) -> usize {
        let mut n = 0;
        // SAFETY: a valid out pointer.
        assert_eq!(unsafe { ffi::dm_miner_label_count(self.0, &mut n) }, dm_status::DM_OK, "{}", c_last_error());
        n
    }

    fn write_report(&self, out: &Path) -> dm_status {
        let out = CString::new(out.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { ffi::dm_miner_write_report(self.0, out.as_ptr()) }
    }
}

impl Drop for CMiner {
    fn drop(&mut self) {
        ffi::dm_miner_free(self.0);
    }
}

/// Checks the C results against the safe API's, the images indexed in the set's order.
fn assert_equal_results(miner: &CMiner, expected: &[LabelResult], set: &LabelledSet) {
    assert_eq!(miner.label_count(), expected.len());
    for (l, result) in expected.iter().enumerate() {
        let l = l as u32;
        assert_eq!(miner.label_name(l), result.label);
        let patches: Vec<dm_mined_patch> = result
            .patches
            .iter()
            .map(|p| dm_mined_patch {
                image: set.items.iter().position(|i| i.path == p.path).unwrap() as u32,
                x: p.patch.x as u32,
                y: p.patch.y as u32,
                size: p.patch.size as u32,
                typicality: p.patch.score,
                cluster: p.cluster_rank as u32,
                rank_in_cluster: p.rank_in_cluster as u32,
                distance: p.distance,
            })
            .collect();
        assert_eq!(miner.patches(l), patches, "patches of {}", result.label);
        let clusters = miner.clusters(l);
        assert_eq!(clusters.len(), result.clusters.len());
        for (c, r) in clusters.iter().zip(&result.clusters) {
            assert_eq!((c.members as usize, c.median_typicality), (r.members.len(), r.median_typicality));
            assert_eq!(c.first as usize, r.members[0], "members follow one another in the patch order");
        }
    }
}

#[test]
fn results_through_the_c_api_equal_mine_and_the_report_is_written() {
    let data = tempfile::tempdir().unwrap();
    let set = synthetic_set(data.path());
    let expected = {
        let model = StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap();
        mine(&model, &set, &safe_options(), &mut |_, _| true).unwrap()
    };
    let model = CModel::open(&pipeline("sd15_tiny"));
    let miner = CMiner::create(&model);
    for item in &set.items {
        assert_eq!(miner.add_file(&item.path, &item.labels[0]), dm_status::DM_OK, "{}", c_last_error());
    }
    assert_eq!(miner.run(), dm_status::DM_OK, "{}", c_last_error());
    assert_equal_results(&miner, &expected, &set);

    let report = data.path().join("report");
    assert_eq!(miner.write_report(&report), dm_status::DM_OK, "{}", c_last_error());
    assert!(report.join("index.html").is_file() && report.join("grid_Nodule.png").is_file());
    let csv = std::fs::read_to_string(report.join("patches.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 24);

    // The results stay; running again or adding images after a run is refused.
    assert_fails(miner.run(), dm_status::DM_ERR_INVALID_ARGUMENT, "already succeeded");
    assert_fails(miner.add_file(&set.items[0].path, "Other"), dm_status::DM_ERR_INVALID_ARGUMENT, "after a successful dm_miner_run");
    assert_eq!(miner.label_count(), 2);
}

#[test]
fn pixels_in_memory_give_the_patches_of_their_files_and_crops_in_the_report() {
    let data = tempfile::tempdir().unwrap();
    let set = synthetic_set(data.path());
    let model = CModel::open(&pipeline("sd15_tiny"));
    let (files, buffers) = (CMiner::create(&model), CMiner::create(&model));
    for item in &set.items {
        let pixels = image::open(&item.path).unwrap().to_rgb8();
        assert_eq!(files.add_file(&item.path, &item.labels[0]), dm_status::DM_OK, "{}", c_last_error());
        assert_eq!(buffers.add_rgb8(&pixels, item.path.to_str().unwrap(), &item.labels[0]), dm_status::DM_OK, "{}", c_last_error());
    }
    assert_eq!(files.run(), dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(buffers.run(), dm_status::DM_OK, "{}", c_last_error());
    for l in 0..2 {
        assert_eq!(files.patches(l), buffers.patches(l));
        assert_eq!(files.clusters(l), buffers.clusters(l));
    }
    let (from_files, from_buffers) = (data.path().join("files"), data.path().join("buffers"));
    assert_eq!(files.write_report(&from_files), dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(buffers.write_report(&from_buffers), dm_status::DM_OK, "{}", c_last_error());
    // The same images (grids, element crops, source copies and heat maps), with the same pixels.
    let images = report_images(&from_files);
    assert_eq!(images, report_images(&from_buffers));
    assert!(images.iter().any(|i| i.starts_with("sources/Effusion/")), "{images:?}");
    for shown in &images {
        let read = |dir: &Path| image::open(dir.join(shown)).unwrap().to_rgb8();
        assert_eq!(read(&from_files), read(&from_buffers), "{shown}: images from memory equal images from files");
    }
}

/// The PNG and JPEG files of a report folder, by their paths inside it.
fn report_images(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "png" || e == "jpg") {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// DICOM files added through the C API are read by their content, as `dm_image_open` reads them: the
/// synthetic set's DICOM copies (the PNGs' pixels) give the PNGs' patches. A name buffer one byte
/// short gets the size it needs in `out_needed`.
#[test]
fn dicom_files_added_through_the_c_api_mine_as_their_pngs() {
    let data = tempfile::tempdir().unwrap();
    let options = SyntheticOptions { images_per_label: 1, size: 64, labels: vec!["Nodule".into(), "Effusion".into()], ..SyntheticOptions::default() };
    write_dataset(&options, &data.path().join("png")).unwrap();
    diffmine::synthetic::write_dicom_copies(&options, &data.path().join("dcm")).unwrap();
    let set = LabelledSet::open(&data.path().join("png")).unwrap();
    let model = CModel::open(&pipeline("sd15_tiny"));
    let (png, dcm) = (CMiner::create(&model), CMiner::create(&model));
    for item in &set.items {
        let copy = data.path().join("dcm").join(&item.labels[0]).join(item.path.with_extension("dcm").file_name().unwrap());
        assert_eq!(png.add_file(&item.path, &item.labels[0]), dm_status::DM_OK, "{}", c_last_error());
        assert_eq!(dcm.add_file(&copy, &item.labels[0]), dm_status::DM_OK, "{}", c_last_error());
    }
    assert_eq!(png.run(), dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(dcm.run(), dm_status::DM_OK, "{}", c_last_error());
    for l in 0..2 {
        assert_eq!(png.patches(l), dcm.patches(l));
    }
    let name = dcm.label_name(0);
    let mut short = vec![0 as c_char; name.len()];
    let mut needed = 0;
    // SAFETY: a buffer of `short.len()` bytes, a valid out pointer.
    let status = unsafe { ffi::dm_miner_label_name(dcm.0, 0, short.as_mut_ptr(), short.len(), &mut needed) };
    assert_eq!((status, needed), (dm_status::DM_ERR_BUFFER_TOO_SMALL, name.len() + 1));
}

#[test]
fn bad_input_gets_a_status_and_a_message_naming_the_problem() {
    let model = CModel::open(&pipeline("sd15_tiny"));
    let (template, null_prompt) = (CString::new(TEMPLATE).unwrap(), CString::new(NULL_PROMPT).unwrap());
    let mut out = null_mut();
    // SAFETY (this block): every pointer is NULL or valid; the strings outlive the calls.
    unsafe {
        let options = c_options(&template, &null_prompt);
        assert_fails(ffi::dm_miner_create(null(), &options, &mut out), dm_status::DM_ERR_NULL_ARGUMENT, "`model`");
        assert_fails(ffi::dm_miner_create(model.0, null(), &mut out), dm_status::DM_ERR_NULL_ARGUMENT, "`options`");
        assert_fails(ffi::dm_miner_create(model.0, &options, null_mut()), dm_status::DM_ERR_NULL_ARGUMENT, "`out_miner`");
        let no_prompt = dm_miner_options { prompt_template: null(), ..options };
        assert_fails(ffi::dm_miner_create(model.0, &no_prompt, &mut out), dm_status::DM_ERR_NULL_ARGUMENT, "options.prompt_template");
        let no_clusters = dm_miner_options { clusters: 0, ..options };
        assert_fails(ffi::dm_miner_create(model.0, &no_clusters, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "options.clusters");
        let old = dm_miner_options { struct_size: 8, ..options };
        assert_fails(ffi::dm_miner_create(model.0, &old, &mut out), dm_status::DM_ERR_INVALID_ARGUMENT, "struct_size");
    }
    assert!(out.is_null(), "outputs are written only on success");

    let miner = CMiner::create(&model);
    let mut n = 0;
    // SAFETY (this block): as above.
    unsafe {
        assert_fails(ffi::dm_miner_label_count(miner.0, &mut n), dm_status::DM_ERR_INVALID_ARGUMENT, "call dm_miner_run first");
        assert_fails(ffi::dm_miner_write_report(miner.0, c"/tmp/x".as_ptr()), dm_status::DM_ERR_INVALID_ARGUMENT, "dm_miner_run first");
    }
    assert_fails(miner.run(), dm_status::DM_ERR_INVALID_ARGUMENT, "no images to mine");
    assert_fails(miner.add_file(Path::new("/nonexistent/a.png"), "Mass"), dm_status::DM_ERR_IO, "/nonexistent/a.png");
    let pixels = image::RgbImage::from_pixel(32, 32, image::Rgb([10, 20, 30]));
    assert_fails(miner.add_rgb8(&pixels, "a", " "), dm_status::DM_ERR_INVALID_ARGUMENT, "`label` is empty");
    assert_eq!(miner.add_rgb8(&pixels, "a", "Mass"), dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(miner.add_rgb8(&pixels, "a", "Effusion"), dm_status::DM_OK, "the same pixels may take another label");
    let other = image::RgbImage::from_pixel(32, 32, image::Rgb([0, 0, 0]));
    assert_fails(miner.add_rgb8(&other, "a", "Mass"), dm_status::DM_ERR_INVALID_ARGUMENT, "`a` was already added");
    // SAFETY (this block): as above; the view's buffer is too short for its stated size.
    unsafe {
        let short =
            dm_image_view { data: pixels.as_ptr() as *const c_void, data_len: 10, width: 32, height: 32, channels: 3, pixel_type: DM_PIXEL_U8, stride: 96 };
        assert_fails(ffi::dm_miner_add_image(miner.0, &short, null(), c"Mass".as_ptr()), dm_status::DM_ERR_INVALID_ARGUMENT, "buffer holds 10 bytes");
        assert_fails(ffi::dm_miner_add_image(miner.0, null(), null(), c"Mass".as_ptr()), dm_status::DM_ERR_NULL_ARGUMENT, "`image`");
        assert_fails(ffi::dm_miner_image_name(miner.0, 5, null_mut(), 0, &mut n), dm_status::DM_ERR_INVALID_ARGUMENT, "image index 5");
    }

    assert_eq!(miner.run(), dm_status::DM_OK, "{}", c_last_error());
    // SAFETY (this block): as above.
    unsafe {
        assert_fails(
            ffi::dm_miner_patch_count(miner.0, 2, &mut n),
            dm_status::DM_ERR_INVALID_ARGUMENT,
            "label index 2 is out of range (the results have 2 labels)",
        );
        let mut one = [0 as c_char; 1];
        assert_fails(ffi::dm_miner_label_name(miner.0, 0, one.as_mut_ptr(), 1, &mut n), dm_status::DM_ERR_BUFFER_TOO_SMALL, "`out` holds 1");
        let mut patch = [dm_mined_patch { image: 0, x: 0, y: 0, size: 0, typicality: 0.0, cluster: 0, rank_in_cluster: 0, distance: 0.0 }; 1];
        assert_fails(ffi::dm_miner_patches(miner.0, 0, patch.as_mut_ptr(), 0, &mut n), dm_status::DM_ERR_BUFFER_TOO_SMALL, "`out` holds 0");
    }
    assert_eq!(miner.label_name(0), "Effusion", "labels sorted");

    let freed = CMiner::create(&model);
    assert_eq!(ffi::dm_miner_free(freed.0), dm_status::DM_OK);
    assert_fails(freed.run(), dm_status::DM_ERR_INVALID_HANDLE, "`miner`");
    assert_fails(ffi::dm_miner_free(model.0 as *mut dm_miner), dm_status::DM_ERR_INVALID_HANDLE, "`miner`");
    assert_eq!(ffi::dm_miner_free(null_mut()), dm_status::DM_OK);
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

#[test]
fn a_non_zero_progress_return_cancels_and_the_miner_can_run_again() {
    let model = CModel::open(&pipeline("sd15_tiny"));
    let miner = CMiner::create(&model);
    let pixels = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]));
    assert_eq!(miner.add_rgb8(&pixels, "a", "Mass"), dm_status::DM_OK, "{}", c_last_error());

    let mut calls = Calls { seen: Vec::new(), cancel_at: 1 };
    // SAFETY: the callback reads `calls`, which outlives the call.
    let status = unsafe { ffi::dm_miner_run(miner.0, Some(record), &mut calls as *mut Calls as *mut c_void) };
    assert_fails(status, dm_status::DM_ERR_CANCELLED, "cancel");
    assert_eq!(calls.seen, vec![(1, 2)]);
    let mut n = 0;
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { ffi::dm_miner_label_count(miner.0, &mut n) }, dm_status::DM_ERR_INVALID_ARGUMENT, "no results after a cancel");

    let mut calls = Calls { seen: Vec::new(), cancel_at: 0 };
    // SAFETY: as above.
    let status = unsafe { ffi::dm_miner_run(miner.0, Some(record), &mut calls as *mut Calls as *mut c_void) };
    assert_eq!(status, dm_status::DM_OK, "{}", c_last_error());
    assert_eq!(calls.seen, vec![(1, 2), (2, 2)], "one image: its typicality, then its DIFT");
    assert_eq!(miner.label_count(), 1);
}

/// The stage-by-stage entry points (`dm_mining_*`, `dm_report_*`) refuse bad input with a status and a
/// message, write counts when a buffer is too small, and free a report exactly once. (Their results are
/// checked against `diffmine mine` by bindings/python/tests/test_stages.py.)
#[test]
fn the_stage_entry_points_refuse_bad_input_with_a_message() {
    use diffmine::ffi::{dm_box, dm_candidate, dm_clustered_patch, dm_mined_image_info, dm_report};
    let model = CModel::open(&pipeline("sd15_tiny"));
    let name = CString::new("a.png").unwrap();
    let other = CString::new("b.png").unwrap();
    let candidate = |image: *const c_char, x: u32, score: f32| dm_candidate { image, x, y: 0, size: 4, typicality: score };
    let given = [candidate(name.as_ptr(), 0, 1.0), candidate(other.as_ptr(), 0, 2.0), candidate(name.as_ptr(), 8, 2.0)];
    let label = CString::new("Nodule").unwrap();
    // SAFETY: every pointer is NULL or valid for the lengths passed.
    unsafe {
        let (mut indices, mut count) = ([0usize; 3], 0usize);
        assert_eq!(ffi::dm_mining_top(given.as_ptr(), 3, 2, indices.as_mut_ptr(), 3, &mut count), dm_status::DM_OK);
        assert_eq!((count, &indices[..2]), (2, &[2, 1][..]), "ties by image name: a.png before b.png");
        assert_fails(ffi::dm_mining_top(given.as_ptr(), 3, 3, indices.as_mut_ptr(), 1, &mut count), dm_status::DM_ERR_BUFFER_TOO_SMALL, "out_indices");
        assert_eq!(count, 3, "the count is written for a second try");
        assert_fails(ffi::dm_mining_top(null(), 3, 3, indices.as_mut_ptr(), 3, &mut count), dm_status::DM_ERR_NULL_ARGUMENT, "candidates");
        let unnamed = [candidate(null(), 0, 1.0)];
        assert_fails(ffi::dm_mining_top(unnamed.as_ptr(), 1, 1, indices.as_mut_ptr(), 3, &mut count), dm_status::DM_ERR_NULL_ARGUMENT, "candidate.image");

        let features = [0f32; 5];
        let mut patches = [dm_clustered_patch { candidate: 0, cluster: 0, rank_in_cluster: 0, distance: 0.0 }; 3];
        let mut clusters = [dm_mined_cluster { first: 0, members: 0, median_typicality: 0.0 }; 3];
        let mut cluster_count = 0usize;
        let status = ffi::dm_mining_cluster(
            given.as_ptr(),
            3,
            features.as_ptr(),
            5,
            2,
            null(),
            patches.as_mut_ptr(),
            3,
            &mut count,
            clusters.as_mut_ptr(),
            3,
            &mut cluster_count,
        );
        assert_fails(status, dm_status::DM_ERR_INVALID_ARGUMENT, "3 boxes of 2 need 6");

        let (mut boxes, mut map) = ([dm_box { x: 0, y: 0, size: 0, score: 0.0 }; 5], vec![0f32; ffi::DM_MINING_MAP_MAX]);
        let mut info = dm_mined_image_info { struct_size: std::mem::size_of::<dm_mined_image_info>(), width: 0, height: 0, map_width: 0, map_height: 0 };
        let pixels = [0u8; 16 * 16 * 3];
        let view =
            dm_image_view { data: pixels.as_ptr().cast(), data_len: pixels.len(), width: 16, height: 16, channels: 3, pixel_type: DM_PIXEL_U8, stride: 48 };
        let status = ffi::dm_mining_image(model.0, null(), &view, label.as_ptr(), boxes.as_mut_ptr(), 5, &mut count, map.as_mut_ptr(), map.len(), &mut info);
        assert_fails(status, dm_status::DM_ERR_NULL_ARGUMENT, "`options`");
        let mut dim = 0usize;
        assert_eq!(ffi::dm_mining_feature_dim(model.0, &mut dim), dm_status::DM_OK);
        let channels = StableDiffusion::open(&pipeline("sd15_tiny"), &ModelOptions::default()).unwrap().unet().config().block_out_channels.clone();
        assert_eq!(dim as i64, channels[channels.len() - 2], "up block 1's output channels");

        let mut report: *mut dm_report = null_mut();
        assert_eq!(ffi::dm_report_new(null(), &mut report), dm_status::DM_OK);
        let heat = [0f32; 4];
        assert_fails(
            ffi::dm_report_add_map(report, label.as_ptr(), name.as_ptr(), heat.as_ptr(), 2, 2),
            dm_status::DM_ERR_INVALID_ARGUMENT,
            "no label `Nodule`",
        );
        let placed = [dm_clustered_patch { candidate: 7, cluster: 0, rank_in_cluster: 0, distance: 0.0 }];
        let one = [dm_mined_cluster { first: 0, members: 1, median_typicality: 1.0 }];
        let status = ffi::dm_report_add_label(report, label.as_ptr(), given.as_ptr(), 3, placed.as_ptr(), 1, one.as_ptr(), 1);
        assert_fails(status, dm_status::DM_ERR_INVALID_ARGUMENT, "candidate 7 is out of range");
        assert_eq!(ffi::dm_report_free(report), dm_status::DM_OK);
        assert_eq!(ffi::dm_report_free(report), dm_status::DM_ERR_INVALID_HANDLE);
        assert_eq!(ffi::dm_report_free(null_mut()), dm_status::DM_OK);
    }
}
