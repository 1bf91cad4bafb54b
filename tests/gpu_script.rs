//! The GPU run's script, run on the CPU so that it cannot rot between the rare times a GPU machine is
//! lent: benches/gpu_pack.sh packs this build's library and CLI with the fixtures and wheels (and checks
//! the bundle fits the 64 MiB a device command carries), then benches/gpu.sh runs with DEVICE=cpu
//! from that bundle, at small sizes, every step it runs on a GPU. Its JSON lines must show every
//! correctness check passed (bfloat16 against float32, with the bounds the GPU run uses) and every
//! timing present.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{built_library, fixtures, python, repo_root, translate_fixture_dir};
use serde_json::Value;

/// Every check benches/gpu_check.py makes in its CPU setting.
const CHECKS: [&str; 11] = [
    "text_embeddings",
    "encode",
    "decode",
    "unet",
    "typicality",
    "dift",
    "translate",
    "finetune_loss_1",
    "finetune_loss_2",
    "finetune_update",
    "demo_typicality",
];

fn run(script: &str, envs: &[(&str, &Path)], args: &[&Path]) -> String {
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(repo_root().join(script))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, *v)))
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{script} took {:.0} s; its log:\n{stderr}", started.elapsed().as_secs_f64());
    assert!(output.status.success(), "{script} failed ({})", output.status);
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn lines(results: &str) -> Vec<Value> {
    results.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn of_kind<'a>(rows: &'a [Value], kind: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["kind"] == kind).collect()
}

fn positive(row: &Value, key: &str) -> f64 {
    let value = row[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {row}"));
    assert!(value.is_finite() && value > 0.0, "{key} = {value} in {row}");
    value
}

#[test]
fn gpu_script_runs_on_the_cpu() {
    let work = tempfile::Builder::new().prefix("gpu-script-").tempdir_in(repo_root().join("target")).unwrap();
    let bundle = work.path().join("bundle");
    let out = work.path().join("out");
    let cli = Path::new(env!("CARGO_BIN_EXE_diffmine"));
    let library = built_library();
    let python = python();

    let pack = run(
        "benches/gpu_pack.sh",
        &[
            ("DIFFMINE_LIB", &library),
            ("DIFFMINE_CLI", cli),
            ("FIXTURES", fixtures()),
            ("PNP_FIXTURE", translate_fixture_dir()),
            ("BUNDLE", &bundle),
            ("PYTHON", &python),
        ],
        &[],
    );
    let pack = lines(&pack).pop().expect("the pack line");
    assert!(pack["total_bytes"].as_u64().unwrap() <= pack["limit_bytes"].as_u64().unwrap(), "{pack}");
    assert_eq!(pack["limit_bytes"].as_u64(), Some(64 * 1024 * 1024));

    run("benches/gpu.sh", &[("DEVICE", Path::new("cpu")), ("BUNDLE", &bundle), ("PYTHON", &python)], &[&out]);
    let results = std::fs::read_to_string(out.join("results.jsonl")).expect("results.jsonl");
    let rows: Vec<Value> = lines(&results).into_iter().filter(|r| r.get("kind").is_some()).collect();

    assert!(of_kind(&rows, "error").is_empty(), "steps failed: {:?}", of_kind(&rows, "error"));
    let checks = of_kind(&rows, "check");
    let failed: Vec<_> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "checks failed: {failed:?}");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["check"].as_str()).collect();
    for check in CHECKS {
        assert!(names.contains(&check), "no {check} check in {names:?}");
    }

    let flops = of_kind(&rows, "flops");
    assert_eq!(flops.len(), 1);
    positive(flops[0], "unet_flops_per_row");
    let typicality = of_kind(&rows, "typicality");
    for implementation in ["libdiffmine", "diffusers"] {
        let timed: Vec<_> = typicality.iter().filter(|r| r["impl"] == implementation).collect();
        assert!(!timed.is_empty(), "no {implementation} typicality timing");
        timed.iter().for_each(|r| _ = positive(r, "images_per_second"));
        let finetune: Vec<_> = of_kind(&rows, "finetune").into_iter().filter(|r| r["impl"] == implementation).collect();
        assert_eq!(finetune.len(), 1, "{implementation} finetuning timing");
        positive(finetune[0], "seconds_per_step");
    }
    let summary = of_kind(&rows, "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["checks_failed"], 0);
    let compared = summary[0]["typicality"].as_array().expect("typicality comparisons");
    assert!(!compared.is_empty());
    compared.iter().for_each(|c| _ = (positive(c, "speedup"), positive(c, "libdiffmine_unet_tflops")));
    positive(&summary[0]["finetune"], "speedup");
}
