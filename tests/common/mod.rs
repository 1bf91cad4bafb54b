//! Shared by the integration tests: the reference fixtures (random-weight pipelines and the outputs
//! diffusers/transformers compute from them, built by tests/reference/make_fixtures.py) and tensor
//! comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use tch::Tensor;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The inputs a fuzz target once failed on, kept in fuzz/regressions/<target> (none for a target
/// that never failed).
pub fn fuzz_regressions(target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(repo_root().join("fuzz/regressions").join(target)) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
}

pub fn python() -> PathBuf {
    std::env::var_os("DIFFMINE_VENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".deps/venv")).join("bin/python")
}

/// The libdiffmine.so of this build: the test executable is `target/<profile>/deps/<name>-<hash>`,
/// and cargo puts the cdylib in `target/<profile>/`.
pub fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let lib = profile_dir.join("libdiffmine.so");
    assert!(lib.is_file(), "{} is missing (cargo builds the cdylib with the tests)", lib.display());
    lib
}

/// The fixtures folder, built on first use (the script is idempotent and serialises concurrent runs).
/// Compiles the C program `source` as strictly as the C tests do (C11, every warning an error, line
/// tables for valgrind's reports) against include/diffmine.h and the libdiffmine.so in `lib_dir`, with
/// an rpath to it.
pub fn compile_c(source: &Path, binary: &Path, lib_dir: &Path) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1"])
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(source)
        .arg("-o")
        .arg(binary)
        .arg("-L")
        .arg(lib_dir)
        .arg("-ldiffmine")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lpthread")
        .output()
        .unwrap_or_else(|e| panic!("run {cc}: {e}"));
    assert!(
        output.status.success(),
        "compiling {} failed ({}):\n{}{}",
        source.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// memcheck's options for the C programs: invalid reads and writes, uses of uninitialised values and
/// definite leaks fail the run; `suppressions` names libtorch's known reports.
pub fn valgrind_options(suppressions: &Path) -> Vec<String> {
    ["--error-exitcode=1", "--leak-check=full", "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite", "--track-origins=no", "--num-callers=30"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--suppressions={}", suppressions.display())])
        .collect()
}

pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/fixtures");
        let status = Command::new(python())
            .arg(repo_root().join("tests/reference/make_fixtures.py"))
            .arg(&dir)
            .status()
            .expect("run tests/reference/make_fixtures.py (run scripts/setup.sh first)");
        assert!(status.success(), "make_fixtures.py failed");
        dir
    })
}

pub fn pipeline(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The Plug-and-Play reference folder (tests/reference/translate_reference.py, built on first use
/// from the sd15_tiny pipeline): the `sd15_pnp` pipeline and what diffusers computes with it.
pub fn translate_fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tiny = pipeline("sd15_tiny");
        let out = repo_root().join("target/translate_fixtures");
        let status = Command::new(python())
            .arg(repo_root().join("tests/reference/translate_reference.py"))
            .arg(&tiny)
            .arg(&out)
            .status()
            .expect("run tests/reference/translate_reference.py (run scripts/setup.sh first)");
        assert!(status.success(), "translate_reference.py failed");
        out.join("sd15_pnp")
    })
}

/// The single-file and LoRA reference folder (tests/reference/models_reference.py, built on first use
/// from the fixtures): `single/<pipeline>.safetensors` and `lora/`.
pub fn models_fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = repo_root().join("target/models_fixtures");
        let status = Command::new(python())
            .arg(repo_root().join("tests/reference/models_reference.py"))
            .arg(fixtures())
            .arg(&out)
            .status()
            .expect("run tests/reference/models_reference.py (run scripts/setup.sh first)");
        assert!(status.success(), "models_reference.py failed");
        out
    })
}

/// The LoRA training reference folder (tests/reference/lora_training_reference.py, built on first
/// use from the fixtures): `reference.safetensors` and `reference.json`.
pub fn lora_training_fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = repo_root().join("target/lora_training_fixtures");
        let status = Command::new(python())
            .arg(repo_root().join("tests/reference/lora_training_reference.py"))
            .arg(fixtures())
            .arg(&out)
            .status()
            .expect("run tests/reference/lora_training_reference.py (run scripts/setup.sh first)");
        assert!(status.success(), "lora_training_reference.py failed");
        out
    })
}

pub struct Reference {
    pub tensors: HashMap<String, Tensor>,
    pub json: serde_json::Value,
}

impl Reference {
    pub fn load(config: &str) -> Self {
        let dir = pipeline(config);
        let tensors = Tensor::read_safetensors(dir.join("reference.safetensors")).expect("reference.safetensors").into_iter().collect();
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        Reference { tensors, json: serde_json::from_str(&text).expect("reference.json parses") }
    }

    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("reference tensor {name} missing"))
    }

    pub fn count(&self, key: &str) -> usize {
        self.json[key].as_u64().unwrap_or_else(|| panic!("reference.json {key}")) as usize
    }

    pub fn texts(&self) -> Vec<String> {
        self.json["texts"].as_array().expect("texts").iter().map(|t| t.as_str().expect("text").to_string()).collect()
    }

    pub fn embedded_texts(&self) -> Vec<usize> {
        self.json["embedded_texts"].as_array().expect("embedded_texts").iter().map(|i| i.as_u64().expect("index") as usize).collect()
    }
}

/// max |a - b| / max |b|: the relative error measure of the parity tests.
pub fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.size(), expected.size(), "shapes differ");
    let a = actual.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu);
    let b = expected.to_kind(tch::Kind::Double);
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]);
    diff / scale.max(f64::MIN_POSITIVE)
}

pub fn assert_close(actual: &Tensor, expected: &Tensor, tolerance: f64, what: &str) {
    let err = relative_error(actual, expected);
    assert!(err <= tolerance, "{what}: relative error {err:.3e} exceeds {tolerance:.0e}");
}

/// A copy of a fixture pipeline in a fresh temporary folder, for tests that break it.
pub fn scratch_copy(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&pipeline(config), dir.path());
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The thread's last error message from the C API.
pub fn c_last_error() -> String {
    // SAFETY: dm_last_error returns a valid NUL-terminated thread-local string.
    unsafe { std::ffi::CStr::from_ptr(diffmine::ffi::dm_last_error()) }.to_string_lossy().into_owned()
}

/// A model handle opened through the C API with the default options, freed on drop.
pub struct CModel(pub *mut diffmine::ffi::dm_model);

impl CModel {
    pub fn open(folder: &Path) -> Self {
        let path = std::ffi::CString::new(folder.to_str().unwrap()).unwrap();
        let mut model = std::ptr::null_mut();
        // SAFETY: NUL-terminated path, NULL options (defaults), valid out pointer.
        let status = unsafe { diffmine::ffi::dm_model_open(path.as_ptr(), std::ptr::null(), &mut model) };
        assert_eq!(status, diffmine::ffi::dm_status::DM_OK, "{}", c_last_error());
        CModel(model)
    }
}

impl Drop for CModel {
    fn drop(&mut self) {
        diffmine::ffi::dm_model_free(self.0);
    }
}

/// A tmpfs of a few KiB mounted on a fresh temporary folder, for writing onto a full or read-only
/// disk; unmounted when dropped, whether the test passed or not. Mounting needs root (the test
/// machines run as root); elsewhere `mount` returns None and the caller skips, saying so.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(kib: usize) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"]).arg(dir.path()).status();
        match mounted {
            Ok(status) if status.success() => Some(SmallDisk { dir }),
            _ => {
                eprintln!("skipped: cannot mount a tmpfs (needs root)");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the free space with a file of zeros, so that the next write fails with ENOSPC.
    pub fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path().join("filler")).expect("filler");
        while filler.write_all(&[0u8; 4096]).is_ok() {}
        let _ = filler.sync_all();
    }

    /// Makes the file system read-only (a remount: the files on it stay).
    pub fn make_read_only(&self) {
        let status = Command::new("mount").args(["-o", "remount,ro"]).arg(self.path()).status().expect("mount");
        assert!(status.success(), "remount read-only");
    }

    /// The names in the disk's root, sorted (to see that no temporary was left behind).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

// --- the Python wheel (tests/wheel.rs, tests/ray.rs) ---

pub fn show(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn run_step(command: &mut Command, what: &str) -> Output {
    let started = Instant::now();
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(output.status.success(), "{what} failed:\n{}", show(&output));
    println!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    output
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("JSON report")
}

/// The shared venv's site-packages and the interpreter it was made from.
pub fn shared_venv() -> (PathBuf, PathBuf) {
    let output = run_step(
        Command::new(python()).args(["-c", "import sys, sysconfig; print(sysconfig.get_paths()['platlib']); print(sys._base_executable)"]),
        "find the shared venv's site-packages",
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let mut lines = text.lines().map(PathBuf::from);
    (lines.next().expect("site-packages"), lines.next().expect("base interpreter"))
}

/// Builds the wheel from this build's library into `dist` and returns its path.
pub fn build_wheel(dist: &Path) -> PathBuf {
    let output = run_step(
        Command::new("bash").arg(repo_root().join("scripts/build_wheel.sh")).arg("--lib").arg(built_library()).arg("--out").arg(dist),
        "scripts/build_wheel.sh",
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    let wheels: Vec<PathBuf> = std::fs::read_dir(dist).expect("dist").map(|e| e.expect("entry").path()).collect();
    assert_eq!(wheels.len(), 1, "one wheel in {}: {wheels:?}", dist.display());
    wheels.into_iter().next().unwrap()
}

/// A two-label set of small PNGs (different patterns per label) in a temporary folder.
pub fn tiny_labelled_set() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (label, period) in [("stripes", 4u32), ("checks", 8u32)] {
        std::fs::create_dir_all(dir.path().join(label)).unwrap();
        for i in 0..3u32 {
            let image = image::RgbImage::from_fn(40, 36, |x, y| {
                let v = if label == "stripes" { (x + i) / period % 2 } else { ((x + i) / period + y / period) % 2 };
                image::Rgb([(v * 200 + 20) as u8; 3])
            });
            image.save(dir.path().join(label).join(format!("{i}.png"))).unwrap();
        }
    }
    dir
}

/// The tensors of a safetensors file sorted by name, so two files compare tensor by tensor.
pub fn sorted_tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut tensors = Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}
