//! A brief run of the DICOM ingestion fuzz target (fuzz/fuzz_targets/dicom_image.rs) through
//! fuzz/run.sh: DIFFMINE_FUZZ_SECONDS seconds (default 20; 0 skips), no sanitizer, so the stable
//! toolchain builds it. Needs cargo-fuzz, which scripts/setup.sh installs. The first run builds the
//! instrumented target (minutes); later runs reuse fuzz/target.
mod common;

use std::process::Command;

#[test]
fn dicom_fuzz_target_runs_without_a_crash() {
    let seconds: u64 = std::env::var("DIFFMINE_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    if seconds == 0 {
        println!("DIFFMINE_FUZZ_SECONDS=0: fuzzing skipped");
        return;
    }
    let cargo_fuzz = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    assert!(cargo_fuzz, "cargo-fuzz is not installed: run scripts/setup.sh (or set DIFFMINE_FUZZ_SECONDS=0 to skip)");
    let output = Command::new("bash").arg(common::repo_root().join("fuzz/run.sh")).arg(seconds.to_string()).output().expect("run fuzz/run.sh");
    let log = String::from_utf8_lossy(&output.stderr);
    let stats: Vec<&str> = log.lines().filter(|l| l.starts_with("stat::") || l.starts_with("Done ")).collect();
    println!("{}", stats.join("\n"));
    assert!(
        output.status.success(),
        "the fuzz target crashed or failed to build:\n{}",
        log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(stats.iter().any(|l| l.starts_with("stat::number_of_executed_units")), "no libFuzzer statistics in:\n{log}");
}
