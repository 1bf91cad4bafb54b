//! The installed library as its users build against it: scripts/install.sh into a temporary prefix,
//! with a torch installed outside the checkout; then a C program built by a Makefile with pkg-config
//! (tests/consumers/pkgconfig) and a C++ program built by CMake's `find_package` with diffmine.hpp
//! (tests/consumers/cmake) compute the typicality map of the sd15_tiny fixture with the reference's
//! noise and timesteps, and their maps are compared with the map diffusers computed. They run with the
//! checkout, the build folder and the build's Python environment hidden behind empty mounts (a mount
//! namespace), so a file that still needs the checkout fails here instead of passing on the build
//! machine; both run again under valgrind (with 2 samples). The Orthanc plugin (bindings/orthanc) is
//! built against the prefix too. No installed or built file's RPATH or RUNPATH may name a hidden
//! folder. Bad arguments to install.sh must leave nothing installed.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{python, relative_error, repo_root, scratch_copy, valgrind_options, Reference};
use tch::{Kind, Tensor};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Tolerance of the maps against diffusers' (as tests/typicality.rs).
const TOLERANCE: f64 = 1e-4;

/// Samples of the runs under valgrind, which is about 90 times slower.
const VALGRIND_SAMPLES: usize = 2;

/// `libdiffmine.so.0.MINOR` before 1.0, where a minor release may break the ABI.
fn expected_soname() -> String {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    if major == "0" {
        format!("libdiffmine.so.0.{}", env!("CARGO_PKG_VERSION_MINOR"))
    } else {
        format!("libdiffmine.so.{major}")
    }
}

/// `target/<profile>`, where cargo put the libdiffmine.so and the CLI built with this test.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>").to_path_buf()
}

fn show(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn run_ok(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(output.status.success(), "{what} failed:\n{}", show(&output));
    output
}

/// The `torch` package folder of the build's Python environment.
fn build_torch() -> PathBuf {
    let output = run_ok(Command::new(python()).args(["-c", "import os, torch; print(os.path.dirname(torch.__file__))"]), "find the venv's torch");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim()).canonicalize().unwrap()
}

/// A torch install outside the checkout, as a user's would be: torch's libraries, its version file and
/// the NVIDIA libraries libtorch_cuda loads, hard-linked from the build's environment (copied where
/// hard links cannot be made), laid out as in site-packages.
fn torch_outside_checkout(dir: &Path) -> PathBuf {
    let source = build_torch();
    let site = dir.join("site-packages");
    let torch = site.join("torch");
    std::fs::create_dir_all(&torch).unwrap();
    let copies = [
        (source.join("lib"), torch.join("lib")),
        (source.join("version.py"), torch.join("version.py")),
        (source.parent().unwrap().join("nvidia"), site.join("nvidia")),
    ];
    for (from, to) in copies.iter().filter(|(from, _)| from.exists()) {
        let linked = Command::new("cp").arg("-al").arg(from).arg(to).status().map(|s| s.success()).unwrap_or(false);
        if !linked {
            let _ = std::fs::remove_dir_all(to);
            run_ok(Command::new("cp").arg("-a").arg(from).arg(to), "copy torch");
        }
    }
    torch
}

/// The folders a correct install must not need at run time: the checkout, the build folder and the
/// build's Python environment (outermost only, since a mount hides what lies under it).
fn hidden_folders() -> Vec<PathBuf> {
    let venv = python().parent().and_then(Path::parent).expect("venv/bin/python").to_path_buf();
    let target = profile_dir().parent().expect("target/<profile>").to_path_buf();
    let torch_site = build_torch().parent().unwrap().to_path_buf();
    let mut folders: Vec<PathBuf> = [repo_root(), target, venv, torch_site].iter().map(|p| p.canonicalize().unwrap()).collect();
    folders.sort();
    folders.dedup();
    let outermost: Vec<PathBuf> = folders.iter().filter(|f| !folders.iter().any(|o| o != *f && f.starts_with(o))).cloned().collect();
    outermost
}

/// `program args...` in a new mount namespace where each hidden folder is an empty tmpfs.
fn hidden(program: &Path, args: &[&std::ffi::OsStr]) -> Command {
    let folders = hidden_folders();
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(r#"n=$1; shift; while [ "$n" -gt 0 ]; do mount -t tmpfs -o size=1m diffmine-hidden "$1"; shift; n=$((n - 1)); done; exec "$@""#)
        .arg("sh")
        .arg(folders.len().to_string())
        .args(&folders)
        .arg(program)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("RUST_BACKTRACE");
    command
}

fn install(prefix: &Path, torch: &Path) -> Output {
    Command::new("bash")
        .arg(repo_root().join("scripts/install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .arg("--torch")
        .arg(torch)
        .arg("--from")
        .arg(profile_dir())
        .output()
        .expect("run scripts/install.sh")
}

/// The RPATH and RUNPATH entries of an ELF file.
fn search_paths(file: &Path) -> Vec<String> {
    let output = run_ok(Command::new("readelf").arg("-d").arg(file), "readelf -d");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("(RPATH)") || l.contains("(RUNPATH)"))
        .flat_map(|l| l.split('[').nth(1).unwrap_or("").trim_end_matches(']').split(':').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn dynamic_entry(file: &Path, label: &str) -> Option<String> {
    let output = run_ok(Command::new("readelf").arg("-d").arg(file), "readelf -d");
    let text = String::from_utf8(output.stdout).unwrap();
    let line = text.lines().find(|l| l.contains(label))?;
    Some(line.split('[').nth(1)?.trim_end_matches(']').to_string())
}

fn assert_no_search_path_into(file: &Path, hidden: &[PathBuf]) {
    for entry in search_paths(file) {
        let inside = hidden.iter().find(|h| Path::new(&entry).starts_with(h));
        assert!(inside.is_none(), "{} has the search path {entry}, inside {}", file.display(), inside.unwrap().display());
    }
}

fn assert_installed_layout(prefix: &Path, torch: &Path) {
    let soname = expected_soname();
    let real = format!("libdiffmine.so.{VERSION}");
    let lib = prefix.join("lib");
    assert_eq!(std::fs::read_link(lib.join(&soname)).unwrap(), Path::new(&real));
    assert_eq!(std::fs::read_link(lib.join("libdiffmine.so")).unwrap(), Path::new(&soname));
    for file in [
        "include/diffmine.h",
        "include/diffmine.hpp",
        "lib/pkgconfig/diffmine.pc",
        "lib/cmake/diffmine/diffmineConfig.cmake",
        "lib/cmake/diffmine/diffmineConfigVersion.cmake",
        "bin/diffmine",
    ] {
        assert!(prefix.join(file).is_file(), "{file} is not installed");
    }
    assert_eq!(dynamic_entry(&lib.join(&real), "(SONAME)").as_deref(), Some(soname.as_str()));
    let torch_lib = torch.canonicalize().unwrap().join("lib");
    for file in [lib.join(&real), prefix.join("bin/diffmine")] {
        assert_eq!(search_paths(&file), [torch_lib.to_str().unwrap()], "{}", file.display());
        let sections = run_ok(Command::new("readelf").arg("-S").arg(&file), "readelf -S");
        assert!(!String::from_utf8_lossy(&sections.stdout).contains(".debug_line"), "{} is not stripped", file.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(prefix).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// The consumer programs' input: the reference image, prompts and the first `samples` draws, and the
/// map diffusers computes from them.
fn write_case(dir: &Path, reference: &Reference, samples: usize) -> Tensor {
    std::fs::create_dir_all(dir).unwrap();
    let image = reference.get("vae.0.image");
    let (_, _, height, width) = image.size4().unwrap();
    let prompts = reference.json["typicality_prompts"].as_array().unwrap();
    std::fs::write(dir.join("shape.txt"), format!("{height} {width} {samples}")).unwrap();
    std::fs::write(dir.join("prompt.txt"), prompts[0].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("null_prompt.txt"), prompts[1].as_str().unwrap()).unwrap();
    let pixels = ((image + 1.0) / 2.0).permute([0, 2, 3, 1]).contiguous();
    write_raw(&dir.join("image.f32"), &pixels, Kind::Float);
    let draws = samples as i64;
    write_raw(&dir.join("noise.f32"), &reference.get("typicality.noise").narrow(0, 0, draws), Kind::Float);
    write_raw(&dir.join("timesteps.i64"), &reference.get("typicality.timesteps").narrow(0, 0, draws), Kind::Int64);
    reference_map(reference, samples, height, width)
}

/// The reference map of the first `samples` draws: diffusers' loop stores every sample's losses, and
/// its map is the bilinear upsampling of their mean difference (upsampling is linear, so the mean of
/// the upsampled differences is the same).
fn reference_map(reference: &Reference, samples: usize, height: i64, width: i64) -> Tensor {
    let full = reference.get("typicality.map");
    if samples == full_samples(reference) {
        return full.shallow_clone();
    }
    let losses = reference.get("typicality.sample_losses").narrow(0, 0, samples as i64);
    let difference = (losses.select(1, 1) - losses.select(1, 0)).unsqueeze(1);
    difference.upsample_bilinear2d([height, width], false, None, None).mean_dim(0, false, Kind::Float).select(0, 0)
}

fn full_samples(reference: &Reference) -> usize {
    reference.get("typicality.timesteps").size()[0] as usize
}

fn write_raw(path: &Path, tensor: &Tensor, kind: Kind) {
    let flat = tensor.to_kind(kind).contiguous().view(-1);
    let bytes: Vec<u8> = match kind {
        Kind::Float => Vec::<f32>::try_from(&flat).unwrap().iter().flat_map(|v| v.to_ne_bytes()).collect(),
        _ => Vec::<i64>::try_from(&flat).unwrap().iter().flat_map(|v| v.to_ne_bytes()).collect(),
    };
    std::fs::write(path, bytes).unwrap();
}

fn read_map(path: &Path, like: &Tensor) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect();
    Tensor::from_slice(&values).view(like.size().as_slice())
}

fn cmake() -> PathBuf {
    let venv_cmake = python().with_file_name("cmake");
    if venv_cmake.exists() {
        venv_cmake
    } else {
        PathBuf::from("cmake")
    }
}

/// Builds both consumers as their users would: `make` with PKG_CONFIG_PATH, `cmake` with
/// CMAKE_PREFIX_PATH. Returns the two programs.
fn build_consumers(prefix: &Path, work: &Path) -> [(&'static str, PathBuf); 2] {
    let make_dir = work.join("pkgconfig");
    std::fs::create_dir_all(&make_dir).unwrap();
    for file in ["Makefile", "typicality.c"] {
        std::fs::copy(repo_root().join("tests/consumers/pkgconfig").join(file), make_dir.join(file)).unwrap();
    }
    run_ok(Command::new("make").arg("-C").arg(&make_dir).env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")), "make (pkg-config consumer)");
    let build = work.join("cmake-build");
    run_ok(
        Command::new(cmake())
            .arg("-S")
            .arg(repo_root().join("tests/consumers/cmake"))
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
            .arg("-DCMAKE_BUILD_TYPE=RelWithDebInfo"),
        "cmake configure (CMake consumer)",
    );
    run_ok(Command::new(cmake()).arg("--build").arg(&build), "cmake --build (CMake consumer)");
    [("pkg-config C program", make_dir.join("typicality")), ("CMake C++ program", build.join("typicality"))]
}

/// Builds the Orthanc plugin (bindings/orthanc) against the prefix as its README says; returns it.
fn build_orthanc_plugin(prefix: &Path, work: &Path) -> PathBuf {
    let out = work.join("orthanc");
    std::fs::create_dir_all(&out).unwrap();
    run_ok(
        Command::new("make")
            .arg("-B")
            .arg("-C")
            .arg(repo_root().join("bindings/orthanc"))
            .arg(format!("DIFFMINE_PREFIX={}", prefix.display()))
            .arg(format!("OUT={}", out.display())),
        "make (Orthanc plugin)",
    );
    out.join("libdiffmine_orthanc.so")
}

fn valgrind_available() -> bool {
    Command::new("valgrind").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// A run of a consumer: under valgrind or not, on a case, writing its map.
struct Run {
    name: String,
    command: Command,
    out_map: PathBuf,
    expected: Tensor,
}

fn consumer_run(name: &str, program: &Path, model: &Path, case: &Path, expected: &Tensor, valgrind: Option<&Path>) -> Run {
    let out_map = case.join(format!("{}.f32", name.replace(' ', "_")));
    let args = [model.as_os_str(), case.as_os_str(), out_map.as_os_str()];
    let command = match valgrind {
        None => hidden(program, &args),
        Some(suppressions) => {
            let mut wrapper: Vec<std::ffi::OsString> = valgrind_options(suppressions).into_iter().map(Into::into).collect();
            wrapper.push(program.as_os_str().to_owned());
            wrapper.extend(args.iter().map(|a| a.to_os_string()));
            let wrapper_refs: Vec<&std::ffi::OsStr> = wrapper.iter().map(|s| s.as_os_str()).collect();
            hidden(Path::new("/usr/bin/valgrind"), &wrapper_refs)
        }
    };
    let how = if valgrind.is_some() { " under valgrind" } else { "" };
    Run { name: format!("{name}{how}"), command, out_map, expected: expected.shallow_clone() }
}

/// Runs them side by side; each result is the run's report, or its failure.
fn run_all(runs: Vec<Run>) -> Vec<Result<String, String>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|mut run| {
                scope.spawn(move || {
                    let started = Instant::now();
                    let output = run.command.output().map_err(|e| format!("{}: {e}", run.name))?;
                    let seconds = started.elapsed().as_secs_f64();
                    if !output.status.success() {
                        return Err(format!("{} failed after {seconds:.1} s:\n{}", run.name, show(&output)));
                    }
                    let map = read_map(&run.out_map, &run.expected);
                    let error = relative_error(&map, &run.expected);
                    if error > TOLERANCE {
                        return Err(format!("{}: map relative error {error:.3e} exceeds {TOLERANCE:.0e}", run.name));
                    }
                    Ok(format!("{}: ok in {seconds:.1} s, map relative error {error:.2e}", run.name))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("runner thread")).collect()
    })
}

#[test]
fn installed_library_serves_pkg_config_and_cmake_consumers_with_the_checkout_hidden() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("temp dir");
    let prefix = work.path().join("prefix");
    let torch = torch_outside_checkout(&work.path().join("torch-env"));
    let output = install(&prefix, &torch);
    assert!(output.status.success(), "install.sh failed:\n{}", show(&output));
    println!("install.sh: {:.1} s", started.elapsed().as_secs_f64());
    assert_installed_layout(&prefix, &torch);

    let programs = build_consumers(&prefix, work.path());
    let plugin = build_orthanc_plugin(&prefix, work.path());
    println!("consumers built: {:.1} s", started.elapsed().as_secs_f64());
    let hidden_folders = hidden_folders();
    for file in [prefix.join(format!("lib/libdiffmine.so.{VERSION}")), prefix.join("bin/diffmine"), programs[0].1.clone(), programs[1].1.clone(), plugin] {
        assert_no_search_path_into(&file, &hidden_folders);
    }

    let model = scratch_copy("sd15_tiny");
    let reference = Reference::load("sd15_tiny");
    let full_case = work.path().join("case-full");
    let full_map = write_case(&full_case, &reference, full_samples(&reference));
    let quick_case = work.path().join("case-quick");
    let quick_map = write_case(&quick_case, &reference, VALGRIND_SAMPLES);
    // The draws of a shorter run are a prefix of the longer one's, so the maps differ: the comparison
    // sees which draws were used.
    assert!(relative_error(&quick_map, &full_map) > 100.0 * TOLERANCE);

    let mut runs: Vec<Run> = programs.iter().map(|(name, program)| consumer_run(name, program, model.path(), &full_case, &full_map, None)).collect();
    if valgrind_available() {
        let suppressions = work.path().join("valgrind.supp");
        std::fs::copy(repo_root().join("tests/c/valgrind.supp"), &suppressions).unwrap();
        runs.extend(programs.iter().map(|(name, program)| consumer_run(name, program, model.path(), &quick_case, &quick_map, Some(&suppressions))));
    } else {
        eprintln!("valgrind is not installed: the runs under valgrind are skipped");
    }
    let mut cli = hidden(&prefix.join("bin/diffmine"), &["info".as_ref(), "--model".as_ref(), model.path().as_os_str()]);
    let results = std::thread::scope(|scope| {
        let cli_run = scope.spawn(move || cli.output());
        let results = run_all(runs);
        let cli_output = cli_run.join().unwrap().expect("run the installed CLI");
        assert!(cli_output.status.success(), "installed `diffmine info` failed with the checkout hidden:\n{}", show(&cli_output));
        results
    });
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(report) => println!("{report}"),
            Err(report) => failures.push(report),
        }
    }
    println!("all took {:.1} s", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A folder that looks like a torch install of `version` to install.sh (which reads version.py and
/// checks that lib/libtorch_cpu.so exists).
fn fake_torch(dir: &Path, version: &str) -> PathBuf {
    let torch = dir.join("torch");
    std::fs::create_dir_all(torch.join("lib")).unwrap();
    std::fs::write(torch.join("lib/libtorch_cpu.so"), b"").unwrap();
    std::fs::write(torch.join("version.py"), format!("__version__ = '{version}'\ngit_version = 'x'\n")).unwrap();
    torch
}

fn assert_refused(output: &Output, message: &str, prefix: &Path) {
    assert!(!output.status.success(), "install.sh accepted it:\n{}", show(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(message), "expected a message containing {message:?}:\n{}", show(output));
    let installed: Vec<_> = std::fs::read_dir(prefix).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(installed.is_empty(), "{} holds {installed:?} after a refused install", prefix.display());
}

#[test]
fn bad_arguments_get_a_message_and_install_nothing() {
    let work = tempfile::tempdir().expect("temp dir");
    let prefix = work.path().join("prefix");
    let good_torch = fake_torch(&work.path().join("good"), "2.11.0+cu130");

    let missing = Command::new("bash").arg(repo_root().join("scripts/install.sh")).arg("--prefix").arg(&prefix).output().unwrap();
    assert_refused(&missing, "--torch is required", &prefix);

    let old_torch = fake_torch(&work.path().join("old"), "2.10.0+cpu");
    assert_refused(&install(&prefix, &old_torch), "is torch 2.10.0+cpu; libdiffmine", &prefix);

    let in_checkout = tempfile::tempdir_in(profile_dir()).unwrap();
    let checkout_torch = fake_torch(in_checkout.path(), "2.11.0");
    assert_refused(&install(&prefix, &checkout_torch), "inside this checkout", &prefix);

    let not_torch = work.path().join("not-torch");
    std::fs::create_dir_all(&not_torch).unwrap();
    assert_refused(&install(&prefix, &not_torch), "not a torch install", &prefix);

    // A prefix on a read-only file system (as root, file permissions would not stop the script).
    let read_only = work.path().join("read-only");
    std::fs::create_dir_all(&read_only).unwrap();
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec", r#"mount -t tmpfs -o ro diffmine-ro "$1"; shift; exec bash "$@""#, "sh"])
        .arg(&read_only)
        .arg(repo_root().join("scripts/install.sh"))
        .arg("--prefix")
        .arg(&read_only)
        .arg("--torch")
        .arg(&good_torch)
        .arg("--from")
        .arg(profile_dir())
        .output()
        .unwrap();
    assert_refused(&output, "is not writable", &read_only);

    // A build folder without the CLI: refused after staging began, and the staging folder is gone.
    let partial_build = work.path().join("partial-build");
    std::fs::create_dir_all(&partial_build).unwrap();
    std::os::unix::fs::symlink(profile_dir().join("libdiffmine.so"), partial_build.join("libdiffmine.so")).unwrap();
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/install.sh"))
        .args(["--prefix".as_ref(), prefix.as_os_str(), "--torch".as_ref(), good_torch.as_os_str(), "--from".as_ref(), partial_build.as_os_str()])
        .output()
        .unwrap();
    assert_refused(&output, "diffmine is missing", &prefix);
}
