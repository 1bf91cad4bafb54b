//! The Orthanc plugin (bindings/orthanc) in Debian's Orthanc, used the way a radiology team would:
//! studies pushed over DIMSE (`storescu`) and REST, maps asked for through the plugin's routes and
//! followed as Orthanc jobs, new instances read back and checked against the C API's own
//! `dm_typicality_map` on the same file, auto-processing of arriving images, faults (no result and no
//! working file left behind), a clean shutdown while a job computes, and Orthanc Explorer in headless
//! Chromium showing the new series (screenshot kept in target/orthanc/).
//!
//! Orthanc always listens on every address, so each server runs in a network namespace of its own
//! (`unshare -n`, loopback up) and every client joins it (`nsenter -t PID -n`); each server is killed
//! by its PID when its test ends, passed or failed. Needs root, Debian's `orthanc`, `orthanc-dev`,
//! `dcmtk`, `libjson-c-dev` (scripts/setup.sh installs them) and the demo model (models/demo).
mod common;

use std::ffi::{CStr, CString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use diffmine::ffi::{self, dm_status};
use serde_json::{json, Value};

/// The typicality settings of every test server: few samples, the demo model's 64-pixel size.
const SAMPLES: u32 = 8;
const BATCH: u32 = 4;
const SEED: u64 = 42;
const WORKING_SIZE: u32 = 64;
const PROMPT_TEMPLATE: &str = "Chest X-Ray with {label}.";
const NULL_PROMPT: &str = "Chest X-Ray.";
/// The result objects every test server writes, and their SOP classes.
const RESULTS: [&str; 4] = ["Overlay", "Raw", "Segmentation", "ParametricMap"];
const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
const SEGMENTATION: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const PARAMETRIC_MAP: &str = "1.2.840.10008.5.1.4.1.1.30";
/// Every wait on a server is bounded by this.
const PATIENCE: Duration = Duration::from_secs(120);

fn demo() -> PathBuf {
    common::repo_root().join("models/demo")
}

/// Where the plugin is built and the screenshot kept.
fn artefacts() -> PathBuf {
    let dir = common::repo_root().join("target/orthanc");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds the plugin from its Makefile against this build's libdiffmine.so, once.
fn plugin() -> &'static Path {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let lib_dir = common::built_library().parent().unwrap().to_path_buf();
        let output = Command::new("make")
            .arg("-B")
            .arg("-C")
            .arg(common::repo_root().join("bindings/orthanc"))
            .arg(format!("DIFFMINE_LIB_DIR={}", lib_dir.display()))
            .arg(format!("OUT={}", artefacts().display()))
            .output()
            .expect("run make (scripts/setup.sh installs the build tools)");
        assert!(output.status.success(), "building the plugin failed:\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        artefacts().join("libdiffmine_orthanc.so")
    })
}

/// The generated studies (tests/reference/orthanc_study.py), once.
fn studies() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(common::python())
            .arg(common::repo_root().join("tests/reference/orthanc_study.py"))
            .arg(dir.path())
            .status()
            .expect("run orthanc_study.py");
        assert!(status.success(), "orthanc_study.py failed");
        dir
    })
    .path()
}

fn study_file(name: &str) -> PathBuf {
    studies().join(format!("{name}.dcm"))
}

/// An answer of the server: HTTP status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Debian's Orthanc with the plugin, in its own network namespace; killed by PID when dropped.
struct Orthanc {
    child: Child,
    log: PathBuf,
    /// The plugin's temporary folder.
    work: PathBuf,
    _dir: tempfile::TempDir,
}

impl Orthanc {
    fn start(mut diffmine: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("db");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        diffmine["TemporaryFolder"] = json!(work);
        let config = json!({
            "Name": "diffmine-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": 8042,
            "DicomPort": 4242,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "ConcurrentJobs": 2,
            "Plugins": [plugin()],
            "Diffmine": diffmine,
        });
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("orthanc.log");
        // sh execs Orthanc in the new namespace, so the child's PID is Orthanc's.
        let child = Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up && exec Orthanc \"$0\" --logfile=\"$1\""])
            .arg(&config_path)
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run unshare (util-linux)");
        let mut server = Orthanc { child, log, work, _dir: dir };
        server.wait_until_up();
        server
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn wait_until_up(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Orthanc exited ({status}) while starting:\n{}", self.log_text());
            }
            if self.try_request("GET", "/system", None).map(|a| a.status == 200).unwrap_or(false) {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "Orthanc did not answer within {PATIENCE:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `command` run inside the server's network namespace.
    fn inside(&self, command: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid(), "-n", command]);
        c
    }

    fn try_request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer, String> {
        let mut command = self.inside("curl");
        command.args(["-s", "-S", "--max-time", "60", "-X", method, "-w", "\n%{http_code}"]).arg(format!("http://localhost:8042{path}"));
        if body.is_some() {
            command.args(["--data-binary", "@-"]).stdin(Stdio::piped());
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("nsenter curl: {e}"))?;
        if let Some(body) = body {
            child.stdin.take().unwrap().write_all(body).map_err(|e| e.to_string())?;
        }
        let output = child.wait_with_output().map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(format!("curl {method} {path}: {}", String::from_utf8_lossy(&output.stderr)));
        }
        let split = output.stdout.iter().rposition(|&b| b == b'\n').ok_or("no status line")?;
        let status = String::from_utf8_lossy(&output.stdout[split + 1..]).parse().map_err(|e| format!("{e}"))?;
        Ok(Answer { status, body: output.stdout[..split].to_vec() })
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        self.try_request(method, path, body).unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()))
    }

    fn get(&self, path: &str) -> Value {
        let answer = self.request("GET", path, None);
        assert_eq!(answer.status, 200, "GET {path}: {}", String::from_utf8_lossy(&answer.body));
        answer.json()
    }

    fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body.to_string().as_bytes()))
    }

    /// Stores a file through REST; its Orthanc instance ID.
    fn upload(&self, file: &Path) -> String {
        let answer = self.request("POST", "/instances", Some(&std::fs::read(file).unwrap()));
        assert_eq!(answer.status, 200, "upload {}: {}", file.display(), String::from_utf8_lossy(&answer.body));
        answer.json()["ID"].as_str().unwrap().to_string()
    }

    /// Sends files over DIMSE (C-STORE, storescu -R proposes only the files' own SOP classes).
    fn store_scu(&self, files: &[PathBuf]) {
        let output = self
            .inside("storescu")
            .args(["-R", "-aec", "ORTHANC", "-to", "30", "-ta", "30", "-td", "30", "localhost", "4242"])
            .args(files)
            .output()
            .expect("run storescu (dcmtk)");
        assert!(output.status.success(), "storescu failed:\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }

    /// The Orthanc instance ID of the instance with `sop_instance_uid`.
    fn find_instance(&self, sop_instance_uid: &str) -> String {
        let found = self.post("/tools/find", &json!({"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}})).json();
        assert_eq!(found.as_array().map(Vec::len), Some(1), "{sop_instance_uid}: {found}");
        found[0].as_str().unwrap().to_string()
    }

    /// Asks for a map of `level`/`id`; the job's ID.
    fn typicality(&self, level: &str, id: &str, body: &Value) -> String {
        let answer = self.post(&format!("/diffmine/{level}/{id}/typicality"), body);
        assert_eq!(answer.status, 200, "{level}/{id}: {}", String::from_utf8_lossy(&answer.body));
        let job = answer.json();
        assert_eq!(job["Path"], format!("/jobs/{}", job["ID"].as_str().unwrap()));
        job["ID"].as_str().unwrap().to_string()
    }

    /// Polls the job until it has ended; its last description.
    fn wait_job(&self, id: &str) -> Value {
        self.wait_for(&format!("job {id} to end"), || {
            let job = self.get(&format!("/jobs/{id}"));
            matches!(job["State"].as_str(), Some("Success" | "Failure")).then_some(job)
        })
    }

    fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(started.elapsed() < PATIENCE, "waited {PATIENCE:?} for {what}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn file(&self, instance: &str) -> DefaultDicomObject {
        let answer = self.request("GET", &format!("/instances/{instance}/file"), None);
        assert_eq!(answer.status, 200);
        dicom_object::from_reader(&answer.body[128..]).unwrap_or_else(|e| panic!("{instance}: {e}"))
    }

    /// Waits (bounded) for the server to exit; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < PATIENCE, "Orthanc did not stop within {PATIENCE:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Asserts that no job left a file behind.
    fn assert_no_working_files(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.work).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// Asserts the server still answers and has not exited.
    fn assert_up(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "Orthanc exited:\n{}", self.log_text());
        assert_eq!(self.get("/system")["Name"], "diffmine-test");
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settings(model: &Path, auto: bool) -> Value {
    let mut settings = json!({
        "Model": model,
        "Base": demo().join("pretrained"),
        "Device": "cpu",
        "Dtype": "float32",
        "Samples": SAMPLES,
        "Batch": BATCH,
        "Seed": SEED,
        "PromptTemplate": PROMPT_TEMPLATE,
        "NullPrompt": NULL_PROMPT,
        "Labels": ["Nodule"],
        "WorkingSize": WORKING_SIZE,
        "Results": RESULTS,
    });
    if auto {
        // The rule also matches the plugin's own series descriptions, so that only the plugin's
        // guard keeps its outputs from being scored again.
        settings["AutoProcess"] = json!({"SeriesDescriptions": ["AUTO*", "libdiffmine*"], "Labels": ["Nodule"]});
    }
    settings
}

fn text(object: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    object.element(tag).map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default()
}

fn number(object: &DefaultDicomObject, tag: dicom_core::Tag) -> f64 {
    object.element(tag).unwrap().to_float64().unwrap()
}

/// The map the C API computes for `source` with the servers' settings: the reference.
fn reference_map(source: &Path, label: &str) -> Vec<f32> {
    let c = |s: &str| CString::new(s).unwrap();
    let base = demo().join("pretrained");
    let component = |name: &str| c(base.join(name).to_str().unwrap());
    let (vae, text_encoder, tokenizer, scheduler) = (component("vae"), component("text_encoder"), component("tokenizer"), component("scheduler"));
    let model_path = c(demo().join("finetuned").to_str().unwrap());
    let path = c(source.to_str().unwrap());
    let prompt = c(&PROMPT_TEMPLATE.replace("{label}", label));
    let null_prompt = c(NULL_PROMPT);
    // SAFETY: every pointer is valid for the call; strings are NUL-terminated; out-parameters are
    // writable; the handles are freed once.
    unsafe {
        let mut model_options = std::mem::zeroed::<ffi::dm_model_options>();
        model_options.struct_size = std::mem::size_of::<ffi::dm_model_options>();
        assert_eq!(ffi::dm_model_options_default(&mut model_options), dm_status::DM_OK);
        model_options.vae_path = vae.as_ptr();
        model_options.text_encoder_path = text_encoder.as_ptr();
        model_options.tokenizer_path = tokenizer.as_ptr();
        model_options.scheduler_path = scheduler.as_ptr();
        let mut model = std::ptr::null_mut();
        assert_eq!(ffi::dm_model_open(model_path.as_ptr(), &model_options, &mut model), dm_status::DM_OK, "{}", common::c_last_error());
        let mut image = std::ptr::null_mut();
        assert_eq!(ffi::dm_image_open(path.as_ptr(), std::ptr::null(), &mut image), dm_status::DM_OK, "{}", common::c_last_error());
        let mut view = std::mem::zeroed::<ffi::dm_image_view>();
        assert_eq!(ffi::dm_image_get_view(image, &mut view), dm_status::DM_OK);
        let mut options = std::mem::zeroed::<ffi::dm_typicality_options>();
        options.struct_size = std::mem::size_of::<ffi::dm_typicality_options>();
        assert_eq!(ffi::dm_typicality_options_default(&mut options), dm_status::DM_OK);
        options.samples = SAMPLES;
        options.batch = BATCH;
        options.seed = SEED;
        options.resize_short_side = WORKING_SIZE;
        let (mut height, mut width) = (0, 0);
        assert_eq!(ffi::dm_typicality_map_size(&view, &options, &mut height, &mut width), dm_status::DM_OK);
        let mut map = vec![0f32; (width * height) as usize];
        let status = ffi::dm_typicality_map(
            model,
            &view,
            prompt.as_ptr(),
            null_prompt.as_ptr(),
            &options,
            None,
            std::ptr::null_mut(),
            map.as_mut_ptr(),
            map.len(),
            std::ptr::null_mut(),
            0,
        );
        assert_eq!(status, dm_status::DM_OK, "{}", common::c_last_error());
        ffi::dm_image_free(image);
        ffi::dm_model_free(model);
        map
    }
}

/// The SOP Instance UIDs an object refers to, in any sequence at any depth (a Secondary Capture's
/// Source Image Sequence, an enhanced object's Derivation Image and Referenced Series Sequences).
fn referenced_uids(object: &InMemDicomObject) -> Vec<String> {
    let mut uids = Vec::new();
    for element in object.iter() {
        if element.header().tag == tags::REFERENCED_SOP_INSTANCE_UID {
            uids.push(element.to_str().unwrap().trim_end_matches(['\0', ' ']).to_string());
        }
        for item in element.items().unwrap_or(&[]) {
            uids.extend(referenced_uids(item));
        }
    }
    uids
}

/// The options the object says it was made with (Image Comments, JSON).
fn provenance(result: &DefaultDicomObject) -> Value {
    let comments = text(result, tags::IMAGE_COMMENTS);
    serde_json::from_str(&comments).unwrap_or_else(|e| panic!("Image Comments {comments:?}: {e}"))
}

/// The largest difference between `values` and `expected`.
fn worst_difference(values: impl Iterator<Item = f64>, expected: &[f32]) -> f64 {
    values.zip(expected).map(|(v, &e)| (v - e as f64).abs()).fold(0.0, f64::max)
}

/// Checks the values of one result object against the reference map; says what it found.
fn check_values(id: &str, result: &DefaultDicomObject, expected: &[f32]) -> String {
    let class = text(result, tags::SOP_CLASS_UID);
    let photometric = text(result, tags::PHOTOMETRIC_INTERPRETATION);
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let bytes = |tag| result.element(tag).unwrap().to_bytes().unwrap().into_owned();
    match (class.as_str(), photometric.as_str()) {
        (SECONDARY_CAPTURE, "RGB") => "overlay (RGB)".into(),
        (SECONDARY_CAPTURE, "MONOCHROME2") => {
            let (slope, intercept) = (number(result, tags::RESCALE_SLOPE), number(result, tags::RESCALE_INTERCEPT));
            let stored = bytes(tags::PIXEL_DATA);
            let worst = worst_difference(stored.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as f64 * slope + intercept), expected);
            // Rounding to 16 bits, and the slope/intercept written as decimal strings.
            assert!(worst <= 0.5 * slope.abs() + 1e-6 * scale, "{id}: a raw value differs from dm_typicality_map by {worst:e} (storage step {slope:e})");
            format!("raw values within {worst:.3e} (storage step {slope:.3e})")
        }
        (SEGMENTATION, _) => {
            assert_eq!(text(result, tags::SEGMENTATION_TYPE), "FRACTIONAL");
            let segment = &result.element(tags::SEGMENT_SEQUENCE).unwrap().items().unwrap()[0];
            let field = |tag| segment.element(tag).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_string();
            assert_eq!((field(tags::SEGMENT_LABEL), field(tags::SEGMENT_ALGORITHM_TYPE)), ("Nodule".into(), "AUTOMATIC".into()));
            assert!(!field(tags::SEGMENT_ALGORITHM_NAME).is_empty());
            let max = number(result, tags::MAXIMUM_FRACTIONAL_VALUE);
            let (lo, hi) = expected.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let probability: Vec<f32> = expected.iter().map(|&v| (v - lo) / (hi - lo)).collect();
            let worst = worst_difference(bytes(tags::PIXEL_DATA).iter().map(|&b| b as f64 / max), &probability);
            assert!(worst <= 0.5 / max + 1e-5, "{id}: a probability differs from the min-max scaled map by {worst:e} (step {:e})", 1.0 / max);
            format!("segment probabilities within {worst:.3e} (step {:.3e})", 1.0 / max)
        }
        (PARAMETRIC_MAP, _) => {
            let floats = bytes(tags::FLOAT_PIXEL_DATA);
            let worst = worst_difference(floats.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64), expected);
            assert!(worst <= 1e-6 * scale, "{id}: a float value differs from dm_typicality_map by {worst:e}");
            format!("float values within {worst:.3e}")
        }
        other => panic!("{id}: unexpected result object {other:?}"),
    }
}

/// Checks one job's new instances against its sources: same patient and study, a new series,
/// the source referenced, the raw map's values those of `dm_typicality_map` on the source file
/// within the 16-bit storage step, and a PNG preview. Returns the new instances' series IDs.
fn check_results(server: &Orthanc, job: &Value, sources: &[(&str, &Path)]) -> Vec<String> {
    assert_eq!(job["State"], "Success", "{job}");
    assert_eq!(job["Progress"], 100);
    let created: Vec<&str> = job["Content"]["Instances"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(created.len(), RESULTS.len() * sources.len(), "one of each result object per source: {job}");
    let references: Vec<Vec<f32>> = sources.iter().map(|(_, file)| reference_map(file, "Nodule")).collect();
    let mut series = Vec::new();
    let mut classes = Vec::new();
    for id in created {
        let result = server.file(id);
        let referenced = referenced_uids(&result);
        let which = sources
            .iter()
            .position(|(sid, _)| referenced.contains(&text(&server.file(sid), tags::SOP_INSTANCE_UID)))
            .unwrap_or_else(|| panic!("{id} refers to none of the job's sources: {referenced:?}"));
        let source_id = sources[which].0;
        let source = server.file(source_id);
        for tag in [tags::PATIENT_ID, tags::PATIENT_NAME, tags::STUDY_INSTANCE_UID] {
            assert_eq!(text(&result, tag), text(&source, tag), "{id}: {tag}");
        }
        assert_ne!(text(&result, tags::SERIES_INSTANCE_UID), text(&source, tags::SERIES_INSTANCE_UID), "{id}: a new series");
        let info = server.get(&format!("/instances/{id}"));
        assert_eq!(
            server.get(&format!("/series/{}", info["ParentSeries"].as_str().unwrap()))["ParentStudy"],
            server.get(&format!("/instances/{source_id}/study"))["ID"]
        );
        series.push(info["ParentSeries"].as_str().unwrap().to_string());
        // The demo model's working size is the sources' size, so every object has the map's size.
        let (rows, columns) = (number(&result, tags::ROWS) as u32, number(&result, tags::COLUMNS) as u32);
        assert_eq!((rows, columns), (WORKING_SIZE, WORKING_SIZE));
        let made_with = provenance(&result);
        for (key, value) in
            [("samples", json!(SAMPLES)), ("seed", json!(SEED)), ("prompt", json!("Chest X-Ray with Nodule.")), ("null_prompt", json!(NULL_PROMPT))]
        {
            assert_eq!(made_with[key], value, "{id}: {key} in {made_with}");
        }
        println!("{id}: {}", check_values(id, &result, &references[which]));
        let class = text(&result, tags::SOP_CLASS_UID);
        classes.push(format!("{class} {}", text(&result, tags::PHOTOMETRIC_INTERPRETATION)));
        if class == PARAMETRIC_MAP {
            // Orthanc 1.10 does not render Float Pixel Data; viewers of parametric maps do.
            continue;
        }
        let preview = server.request("GET", &format!("/instances/{id}/preview"), None);
        assert_eq!(preview.status, 200);
        assert!(preview.body.starts_with(b"\x89PNG\r\n\x1a\n"), "{id}: the preview is not a PNG");
        let png = image::load_from_memory(&preview.body).unwrap();
        assert_eq!((png.width(), png.height()), (columns, rows));
    }
    classes.sort();
    classes.dedup();
    assert_eq!(classes.len(), RESULTS.len(), "{classes:?}");
    series.sort();
    series.dedup();
    series
}

fn instances_of_study(server: &Orthanc, study: &str) -> usize {
    server.get(&format!("/studies/{study}/instances")).as_array().unwrap().len()
}

#[test]
fn plugin_scores_pushed_studies_as_jobs_auto_processes_arrivals_and_survives_faults() {
    let mut server = Orthanc::start(settings(&demo().join("finetuned"), true));
    let status = server.get("/diffmine/status");
    assert_eq!(status["ModelLoaded"], true, "{status}");
    assert_eq!(status["Library"], ffi_version());

    // DIMSE for the MONOCHROME1 study, REST for the MONOCHROME2 one.
    server.store_scu(&[study_file("mono1")]);
    let mono1 = server.find_instance(&text(&dicom_object::open_file(study_file("mono1")).unwrap(), tags::SOP_INSTANCE_UID));
    let mono2 = [server.upload(&study_file("mono2_a")), server.upload(&study_file("mono2_b"))];
    let mono2_series = server.get(&format!("/instances/{}/series", mono2[0]))["ID"].as_str().unwrap().to_string();
    let mono2_study = server.get(&format!("/series/{mono2_series}"))["ParentStudy"].as_str().unwrap().to_string();

    // Two jobs at once: one instance, one series of two.
    let job1 = server.typicality("instances", &mono1, &json!({"Label": "Nodule"}));
    let job2 = server.typicality("series", &mono2_series, &json!({"Labels": ["Nodule"]}));
    let (done1, done2) = (server.wait_job(&job1), server.wait_job(&job2));
    for job in [&done1, &done2] {
        assert_eq!(job["Type"], "DiffmineTypicality");
        assert_eq!(job["Content"]["Samples"], SAMPLES);
        assert_eq!(job["Content"]["Seed"], SEED);
    }
    let mono1_series = check_results(&server, &done1, &[(&mono1, &study_file("mono1"))]);
    let mono2_new_series = check_results(&server, &done2, &[(&mono2[0], &study_file("mono2_a")), (&mono2[1], &study_file("mono2_b"))]);
    assert_eq!(mono1_series.len(), RESULTS.len(), "one new series per result object");
    assert_eq!(mono2_new_series.len(), RESULTS.len(), "the two sources' results share one series per result object");
    assert_eq!(server.get(&format!("/studies/{mono2_study}"))["Series"].as_array().unwrap().len(), 1 + RESULTS.len());

    // A whole study: its own earlier outputs are not scored again.
    let job3 = server.wait_job(&server.typicality("studies", &mono2_study, &json!({"Label": "Nodule"})));
    assert_eq!(job3["State"], "Success", "{job3}");
    assert_eq!(job3["Content"]["Sources"].as_array().unwrap().len(), 2, "{job3}");

    // Auto-processing: the matching arrival gets its maps, the other nothing, the outputs are not
    // processed again (the rule would match their series description).
    let auto = server.upload(&study_file("auto"));
    let other = server.upload(&study_file("other"));
    let auto_study = server.get(&format!("/instances/{auto}/study"))["ID"].as_str().unwrap().to_string();
    let other_study = server.get(&format!("/instances/{other}/study"))["ID"].as_str().unwrap().to_string();
    server.wait_for("the auto-processing job's results", || (instances_of_study(&server, &auto_study) == 1 + RESULTS.len()).then_some(()));
    // Every result stored so far (for 1 + 2 + 2 + 1 sources) comes back as a NewInstance change and
    // is skipped.
    let counters = server.wait_for("every arrival to be looked at", || {
        let counters = server.get("/diffmine/status")["AutoProcessing"].clone();
        (counters["Queued"] == 0 && counters["OwnOutputs"] == 6 * RESULTS.len()).then_some(counters)
    });
    assert_eq!(counters["Submitted"], 1, "{counters}");
    assert_eq!(counters["NotMatching"], 4, "mono1, mono2 a and b, other: {counters}");
    assert_eq!(counters["Failed"], 0, "{counters}");
    assert_eq!(instances_of_study(&server, &other_study), 1, "the non-matching arrival got no map");
    let jobs = server.get("/jobs?expand");
    let ours: Vec<&Value> = jobs.as_array().unwrap().iter().filter(|j| j["Type"] == "DiffmineTypicality").collect();
    assert_eq!(ours.len(), 4, "3 asked + 1 automatic: {jobs}");
    let auto_job = ours.iter().find(|j| j["Content"]["Sources"] == json!([auto])).expect("the automatic job");
    check_results(&server, &server.wait_job(auto_job["ID"].as_str().unwrap()), &[(&auto, &study_file("auto"))]);

    // Faults. An unknown instance: 404 with the reason, in the answer and the log.
    let unknown = server.post("/diffmine/instances/0000-unknown/typicality", &json!({"Label": "Nodule"}));
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["Error"].as_str().unwrap().contains("unknown instance \"0000-unknown\""), "{}", unknown.json());
    assert!(server.log_text().contains("unknown instance \"0000-unknown\""), "the 404 is not in Orthanc's log");
    let bad_body = server.request("POST", &format!("/diffmine/instances/{mono1}/typicality"), Some(b"{\"Samples\": -3"));
    assert_eq!(bad_body.status, 400);
    let bad_samples = server.post(&format!("/diffmine/instances/{mono1}/typicality"), &json!({"Label": "Nodule", "Samples": 0}));
    assert_eq!(bad_samples.status, 400);
    assert!(bad_samples.json()["Error"].as_str().unwrap().contains("\"Samples\" must be an integer"), "{}", bad_samples.json());
    // A structured report and an image whose pixel data is cut short: failed jobs saying why.
    for (name, reason) in [("sr", "has no Pixel Data"), ("corrupt", "needs 8192 bytes of Pixel Data, which holds 100")] {
        let id = server.upload(&study_file(name));
        let study = server.get(&format!("/instances/{id}/study"))["ID"].as_str().unwrap().to_string();
        let job = server.wait_job(&server.typicality("instances", &id, &json!({"Label": "Nodule"})));
        assert_eq!(job["State"], "Failure", "{job}");
        let error = job["Content"]["Error"].as_str().unwrap_or_else(|| panic!("{job}"));
        assert!(error.contains(&id) && error.contains(reason), "{name}: {error}");
        assert!(server.log_text().contains(error), "{name}: the error is not in Orthanc's log");
        assert_eq!(instances_of_study(&server, &study), 1, "{name}: nothing stored");
    }
    // A cancelled job: cancelled while it computes, nothing stored, the model usable after.
    let mono1_study = server.get(&format!("/instances/{mono1}/study"))["ID"].as_str().unwrap().to_string();
    let before = instances_of_study(&server, &mono1_study);
    let long = server.typicality("instances", &mono1, &json!({"Label": "Nodule", "Samples": 200000}));
    server.wait_for("the long job to make progress", || {
        let job = server.get(&format!("/jobs/{long}"));
        (job["State"] == "Running" && job["Progress"].as_f64().unwrap() > 0.0).then_some(())
    });
    assert!(!server.get("/diffmine/status")["JobsRunning"].as_array().unwrap().is_empty());
    assert_eq!(server.request("POST", &format!("/jobs/{long}/cancel"), Some(b"")).status, 200);
    let cancelled = server.wait_job(&long);
    // Orthanc 1.10 shows a cancelled job as failed with error 37, "This job was canceled".
    assert_eq!((cancelled["State"].as_str(), cancelled["ErrorCode"].as_i64()), (Some("Failure"), Some(37)), "{cancelled}");
    assert_eq!(cancelled["ErrorDescription"], "This job was canceled", "{cancelled}");
    assert!(server.log_text().contains(&format!("job {long} cancelled")));
    assert_eq!(instances_of_study(&server, &mono1_study), before, "a cancelled job stores nothing");
    server.assert_no_working_files();
    assert!(server.get("/diffmine/status")["JobsRunning"].as_array().unwrap().is_empty());
    let again = server.wait_job(&server.typicality("instances", &mono1, &json!({"Label": "Nodule"})));
    assert_eq!(again["State"], "Success", "after a cancel: {again}");
    server.assert_up();

    screenshot_explorer(&server, &mono1_study, 1 + 2 * RESULTS.len());
    server.assert_up();

    // Orthanc shuts down cleanly while a job computes: the job is stopped, the plugin finalized.
    let long = server.typicality("instances", &mono1, &json!({"Label": "Nodule", "Samples": 200000}));
    server.wait_for("the last job to make progress", || (server.get(&format!("/jobs/{long}"))["Progress"].as_f64().unwrap() > 0.0).then_some(()));
    assert_eq!(server.request("POST", "/tools/shutdown", Some(b"")).status, 200);
    let status = server.wait_exit();
    assert!(status.success(), "Orthanc stopped with {status}:\n{}", server.log_text());
    assert!(server.log_text().contains("Orthanc has stopped"));
    server.assert_no_working_files();
}

/// Orthanc Explorer's page of `study` in headless Chromium: lists `series` series, among them the
/// plugin's; the screenshot is kept in target/orthanc/.
fn screenshot_explorer(server: &Orthanc, study: &str, series: usize) {
    let browser_dir = common::repo_root().join("tests/browser");
    assert!(browser_dir.join("node_modules/playwright-core").is_dir(), "tests/browser has no node_modules: run scripts/setup.sh");
    let shot = artefacts().join("orthanc_explorer.png");
    let task = json!({"url": format!("http://localhost:8042/app/explorer.html#study?uuid={study}"), "series": series, "screenshot": shot});
    let output =
        server.inside("node").arg(browser_dir.join("orthanc_explorer.mjs")).arg(task.to_string()).current_dir(&browser_dir).output().expect("run node");
    assert!(output.status.success(), "the browser failed: {}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    println!("Orthanc Explorer screenshot: {}", shot.display());
    let shown: Vec<&str> = seen["series"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(shown.len(), series, "{shown:?}");
    for kind in ["overlay", "raw values", "segmentation", "parametric map"] {
        assert!(shown.iter().any(|s| s.contains(&format!("libdiffmine Nodule typicality ({kind})"))), "{kind}: {shown:?}");
    }
    assert!(shown.iter().any(|s| s.contains("Chest PA")), "{shown:?}");
    assert_eq!(seen["errors"], json!([]));
}

fn ffi_version() -> String {
    // SAFETY: dm_version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::dm_version()) }.to_str().unwrap().to_string()
}

#[test]
fn a_missing_model_folder_leaves_orthanc_up_and_the_routes_answer_why() {
    let missing = tempfile::tempdir().unwrap().path().join("no-such-model");
    let mut server = Orthanc::start(settings(&missing, true));
    let status = server.get("/diffmine/status");
    assert_eq!(status["ModelLoaded"], false);
    let reason = status["ModelError"].as_str().unwrap().to_string();
    assert!(reason.contains(missing.to_str().unwrap()), "{reason}");
    assert_eq!(status["AutoProcessing"]["Enabled"], false);
    assert!(server.log_text().contains(&reason), "the reason is not in Orthanc's log");
    let id = server.upload(&study_file("mono1"));
    let answer = server.post(&format!("/diffmine/instances/{id}/typicality"), &json!({"Label": "Nodule"}));
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["Error"], reason.as_str());
    server.assert_up();
}
