//! The C API from C: compiles examples/open_model.c and tests/c/*.c against include/diffmine.h and the
//! libdiffmine.so of this build (strict C11, warnings are errors), runs them on the sd15_tiny fixture
//! (tests/c/parallel_miner.c on the Plug-and-Play one, whose UNet has the injection sites), and, when
//! valgrind is installed, runs the tests/c programs again under memcheck (invalid reads and
//! writes, uses of uninitialised values and definite leaks fail; libtorch's "possibly lost" blocks do
//! not; see tests/c/valgrind.supp).
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::{compile_c, pipeline, repo_root, translate_fixture_dir, valgrind_options};

/// A C program, by source path relative to the repository root.
struct Program {
    source: &'static str,
    /// The model folder it runs on, its first argument.
    model: fn() -> PathBuf,
    /// Files it reads, relative to the repository root: its further arguments.
    inputs: &'static [&'static str],
    /// Also run under valgrind. Memcheck spends about 70 s of CPU reading libtorch before `main` and
    /// runs the library about 90 times slower, so the valgrind run takes the programs that cover the
    /// API between them: examples/open_model.c only repeats calls that bad_input.c makes, and
    /// tests/c/stages.c mines twice over (staged and by a miner) to compare the two.
    under_valgrind: bool,
}

fn tiny_pipeline() -> PathBuf {
    pipeline("sd15_tiny")
}

fn plug_and_play_pipeline() -> PathBuf {
    translate_fixture_dir().to_path_buf()
}

const PROGRAMS: [Program; 6] = [
    Program { source: "examples/open_model.c", model: tiny_pipeline, inputs: &[], under_valgrind: false },
    Program { source: "tests/c/bad_input.c", model: tiny_pipeline, inputs: &[], under_valgrind: true },
    Program { source: "tests/c/typicality.c", model: tiny_pipeline, inputs: &[], under_valgrind: true },
    Program { source: "tests/c/stages.c", model: tiny_pipeline, inputs: &[], under_valgrind: false },
    Program { source: "tests/c/parallel_miner.c", model: plug_and_play_pipeline, inputs: &["examples/data/chest_like.png"], under_valgrind: true },
    Program { source: "tests/c/finetune.c", model: tiny_pipeline, inputs: &["examples/data/chest_like.png"], under_valgrind: true },
];

/// `target/<profile>`, where cargo put the libdiffmine.so built with this test (the test executable
/// is `target/<profile>/deps/<name>-<hash>`).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>").to_path_buf();
    assert!(dir.join("libdiffmine.so").is_file(), "{} has no libdiffmine.so", dir.display());
    dir
}

/// A compiled program and the arguments it runs with.
struct Built {
    name: String,
    binary: PathBuf,
    args: Vec<PathBuf>,
}

/// Compiles the programs (those for valgrind only, if so) into `out`.
fn build_all(out: &Path, for_valgrind: bool) -> Vec<Built> {
    let lib_dir = library_dir();
    PROGRAMS
        .iter()
        .filter(|p| p.under_valgrind || !for_valgrind)
        .map(|p| {
            let name = Path::new(p.source).file_stem().unwrap().to_string_lossy().into_owned();
            let binary = out.join(&name);
            compile_c(&repo_root().join(p.source), &binary, &lib_dir);
            let args = std::iter::once((p.model)()).chain(p.inputs.iter().map(|input| repo_root().join(input))).collect();
            Built { name, binary, args }
        })
        .collect()
}

fn show(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `program MODEL_DIR [INPUT...]` (optionally under a wrapper command such as valgrind): its
/// stdout and timing on exit 0, else a report with both streams. Under a wrapper the programs get
/// DIFFMINE_TEST_QUICK=1, which skips the checks that only repeat a whole computation.
fn run(Built { name, binary, args }: &Built, wrapper: &[String]) -> Result<String, String> {
    let started = Instant::now();
    let mut command = match wrapper.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    // RUST_BACKTRACE would make a caught panic print a backtrace; the programs' output stays short.
    command.args(args).env_remove("RUST_BACKTRACE");
    if !wrapper.is_empty() {
        command.env("DIFFMINE_TEST_QUICK", "1");
    }
    let output = command.output().map_err(|e| format!("run {name}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let how = if wrapper.is_empty() { "" } else { " under valgrind" };
    if output.status.success() {
        Ok(format!("{name}{how}: ok in {seconds:.1} s\n{}", String::from_utf8_lossy(&output.stdout)))
    } else {
        Err(format!("{name}{how} failed after {seconds:.1} s:\n{}", show(&output)))
    }
}

/// Runs the programs at once (each in its own process; under a wrapper, those marked for valgrind)
/// and fails with all the failures' reports.
fn run_all(wrapper: &[String]) {
    let started = Instant::now();
    let out = tempfile::tempdir().expect("temp dir");
    let binaries = build_all(out.path(), !wrapper.is_empty());
    let results: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = binaries.iter().map(|built| scope.spawn(move || run(built, wrapper))).collect();
        runs.into_iter().map(|r| r.join().expect("runner thread")).collect()
    });
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(report) => println!("{report}"),
            Err(report) => failures.push(report),
        }
    }
    println!("all {} programs took {:.1} s", binaries.len(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn c_programs_compile_strictly_and_pass() {
    run_all(&[]);
}

fn valgrind_available() -> bool {
    Command::new("valgrind").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn c_programs_pass_under_valgrind() {
    if !valgrind_available() {
        eprintln!("valgrind is not installed: skipped");
        return;
    }
    let wrapper: Vec<String> = std::iter::once("valgrind".to_string()).chain(valgrind_options(&repo_root().join("tests/c/valgrind.supp"))).collect();
    // bad_input takes about 70 s of CPU, nearly all of it memcheck reading libtorch at start-up,
    // typicality about 100 s (three typicality maps on top) and parallel_miner about 95 s (one source
    // translated and mined); they run side by side.
    run_all(&wrapper);
}
