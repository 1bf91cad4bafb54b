//! The fuzz targets (fuzz/fuzz_targets, bodies in fuzz/entries.rs): the inputs they once failed on,
//! replayed through the same bodies without building the targets, and a brief run of every target
//! through fuzz/run.sh.
mod common;

#[path = "../fuzz/entries.rs"]
mod entries;

use std::process::Command;

/// Every input kept in fuzz/regressions/<target> (a crash, a timeout or an out-of-memory finding,
/// since fixed) goes through its target's body again: a result or an error, no panic.
#[test]
fn fuzz_regressions_replay_cleanly() {
    let mut count = 0;
    for target in entries::TARGETS {
        for path in common::fuzz_regressions(target) {
            let bytes = std::fs::read(&path).unwrap();
            let replay = std::panic::catch_unwind(|| entries::run(target, &bytes));
            assert!(replay.is_ok(), "{target}: {} fails again", path.display());
            count += 1;
        }
    }
    entries::remove_scratch();
    assert!(count >= 4, "only {count} regression inputs found");
}

/// A brief run of every target: DIFFMINE_FUZZ_SECONDS seconds each (default 4; 0 skips), two at a
/// time, no sanitizer, so the stable toolchain builds them. Needs cargo-fuzz, which scripts/setup.sh
/// installs. The first run builds the instrumented targets (minutes); later runs reuse fuzz/target.
#[test]
fn fuzz_targets_run_without_a_crash() {
    let seconds: u64 = std::env::var("DIFFMINE_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    if seconds == 0 {
        println!("DIFFMINE_FUZZ_SECONDS=0: fuzzing skipped");
        return;
    }
    let cargo_fuzz = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    assert!(cargo_fuzz, "cargo-fuzz is not installed: run scripts/setup.sh (or set DIFFMINE_FUZZ_SECONDS=0 to skip)");
    let output =
        Command::new("bash").arg(common::repo_root().join("fuzz/run.sh")).args(["-t", &seconds.to_string(), "-j", "2"]).output().expect("run fuzz/run.sh");
    let (summary, log) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{summary}");
    assert!(
        output.status.success(),
        "a fuzz target crashed or failed to build:\n{}",
        log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    for target in entries::TARGETS {
        let row = summary.lines().find(|l| l.starts_with(&format!("| {target} |"))).unwrap_or_else(|| panic!("no summary of {target} in:\n{summary}"));
        let executions = row.split('|').nth(2).unwrap().trim();
        assert!(executions.parse::<u64>().is_ok_and(|n| n > 0), "{target} executed nothing: {row}");
    }
}
