//! Runs the Python binding's unittest suite (bindings/python/tests) with the venv's Python against the
//! libdiffmine.so that cargo built alongside this test, on the reference fixtures.
mod common;

use std::process::Command;
use std::time::Instant;

use common::{built_library, fixtures, python, repo_root};

#[test]
fn python_binding_unittests_pass() {
    let fixtures = fixtures();
    let python = python();
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
