//! Runs the Python binding's unittest suite (bindings/python/tests) with the venv's Python against the
//! libdiffmine.so that cargo built alongside this test, on the reference fixtures.
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{fixtures, repo_root};

/// The venv interpreter: `$DIFFMINE_VENV/bin/python`, else `.deps/venv/bin/python` in the repository.
fn venv_python() -> PathBuf {
    std::env::var_os("DIFFMINE_VENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".deps/venv")).join("bin/python")
}

/// The shared library of this build: the test executable is `target/<profile>/deps/<name>-<hash>`,
/// and cargo puts the cdylib in `target/<profile>/`.
fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let lib = profile_dir.join("libdiffmine.so");
    assert!(lib.is_file(), "{} is missing (cargo builds the cdylib with the tests)", lib.display());
    lib
}

#[test]
fn python_binding_unittests_pass() {
    let fixtures = fixtures();
    let python = venv_python();
    assert!(python.is_file(), "{} is missing (run scripts/setup.sh)", python.display());
    let started = Instant::now();
    let output = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(repo_root().join("bindings/python/tests"))
        .arg("-t")
        .arg(repo_root().join("bindings/python/tests"))
        .env("DIFFMINE_LIB", built_library())
        .env("DIFFMINE_FIXTURES", fixtures)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(repo_root())
        .output()
        .expect("run the venv python");
    // unittest reports on stderr.
    println!("{}", String::from_utf8_lossy(&output.stdout));
    println!("{}", String::from_utf8_lossy(&output.stderr));
    println!("python binding tests took {:.1} s", started.elapsed().as_secs_f64());
    assert!(output.status.success(), "the Python binding's tests failed ({})", output.status);
}
