//! UMAP against umap-learn (tests/reference/umap_reference.py): both embed the same 1000 points in
//! 128 dimensions (Gaussian clusters along a curved manifold, like DIFT features) in 2 and 32
//! dimensions with 15 neighbours, and scikit-learn's trustworthiness (15 neighbours) of our embedding
//! must be within 0.02 of umap-learn's, or better. The layouts themselves differ (each has its own
//! random stream), so trustworthiness, not coordinates, is what is compared.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use diffmine::mining::cotypicality::umap::{embed, UmapOptions};
use serde_json::Value;
use tch::Tensor;

fn run_reference(mode: &str, dir: &Path) -> Value {
    let status = Command::new(common::python())
        .arg(common::repo_root().join("tests/reference/umap_reference.py"))
        .arg(mode)
        .arg(dir)
        .status()
        .expect("run tests/reference/umap_reference.py (run scripts/setup.sh first)");
    assert!(status.success(), "umap_reference.py {mode} failed");
    let file = if mode == "data" { "umap_learn.json" } else { "ours.json" };
    serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
}

#[test]
fn trustworthiness_is_within_0_02_of_umap_learn_in_2_and_32_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = run_reference("data", dir.path());
    let x = Tensor::read_npy(dir.path().join("x.npy")).unwrap();
    for components in [2, 32] {
        let started = Instant::now();
        let embedding = embed(&x, &UmapOptions { components, ..UmapOptions::default() }).unwrap();
        eprintln!("ours, {components} components: {:.1} s", started.elapsed().as_secs_f64());
        embedding.write_npy(dir.path().join(format!("ours_{components}.npy"))).unwrap();
    }
    let ours = run_reference("score", dir.path());
    for components in ["2", "32"] {
        let (t_ours, t_theirs) = (ours[components]["trustworthiness"].as_f64().unwrap(), theirs[components]["trustworthiness"].as_f64().unwrap());
        eprintln!(
            "{components} components: trustworthiness ours {t_ours:.4}, umap-learn {t_theirs:.4} (umap-learn fit {:.1} s)",
            theirs[components]["seconds"].as_f64().unwrap()
        );
        assert!(t_ours >= t_theirs - 0.02, "{components} components: trustworthiness {t_ours:.4} against umap-learn's {t_theirs:.4}");
    }
}
