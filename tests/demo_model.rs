//! The embedded demo models (models/demo, built by scripts/make_demo_model.sh) on a held-out generated
//! set in which each label has its own planted element: the method's end-to-end checks with a model
//! that learnt something, not random weights. The demo models learnt all four labels' elements
//! (models/demo/EVALUATION.md), and every label is checked.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diffmine::cxr8::{self, EvaluationOptions, Report};
use diffmine::dataset::LabelledSet;
use diffmine::mining::cluster::ClusterOptions;
use diffmine::mining::dift::DiftOptions;
use diffmine::mining::miner::{mine, MiningOptions};
use diffmine::model::{ComponentOverrides, ModelOptions, StableDiffusion};
use diffmine::synthetic::{write_dataset, DatasetSummary, PlantedBox, SyntheticOptions};
use diffmine::typicality::TypicalityOptions;

const LABEL_PROMPT: &str = "Chest X-Ray with {label}.";
const NULL_PROMPT: &str = "Chest X-Ray.";

fn demo_dir() -> PathBuf {
    common::repo_root().join("models/demo")
}

fn pretrained() -> StableDiffusion {
    StableDiffusion::open(&demo_dir().join("pretrained"), &ModelOptions::default()).expect("models/demo/pretrained")
}

/// The finetuned folder holds only its UNet; the other components are the pretrained model's.
fn finetuned() -> StableDiffusion {
    let base = demo_dir().join("pretrained");
    let overrides = ComponentOverrides {
        vae: Some(base.join("vae")),
        text_encoder: Some(base.join("text_encoder")),
        tokenizer: Some(base.join("tokenizer")),
        scheduler: Some(base.join("scheduler")),
        ..Default::default()
    };
    StableDiffusion::open(&demo_dir().join("finetuned"), &ModelOptions { overrides, ..Default::default() }).expect("models/demo/finetuned")
}

/// A held-out set of the training set's generator (scripts/make_demo_model.sh trains on seed 1, 200
/// images per label), `per_label` images per label.
fn held_out(dir: &Path, per_label: usize) -> DatasetSummary {
    let training = SyntheticOptions { seed: 1, images_per_label: 200, size: 64, ..Default::default() };
    write_dataset(&SyntheticOptions { images_per_label: per_label, ..training.held_out() }, dir).expect("held-out set")
}

/// The mean share of the image a label's planted boxes cover: what a random map's average precision is.
fn box_area_fraction(summary: &DatasetSummary, label: &str) -> f64 {
    let image_area = (summary.size * summary.size) as f64;
    let fractions: Vec<f64> = summary.entries.iter().filter(|e| e.label == label).map(|e| e.planted.w * e.planted.h / image_area).collect();
    fractions.iter().sum::<f64>() / fractions.len() as f64
}

/// Whether the patch overlaps the planted element by at least a quarter of the patch's area.
fn on_element(x: usize, y: usize, size: usize, planted: &PlantedBox) -> bool {
    let overlap = |a0: f64, a1: f64, b0: f64, b1: f64| (a1.min(b1) - a0.max(b0)).max(0.0);
    let (x, y, s) = (x as f64, y as f64, size as f64);
    overlap(x, x + s, planted.x, planted.x + planted.w) * overlap(y, y + s, planted.y, planted.y + planted.h) >= 0.25 * s * s
}

#[test]
fn mining_puts_the_top_cluster_of_every_label_on_its_planted_element() {
    let dir = tempfile::tempdir().unwrap();
    let summary = held_out(&dir.path().join("set"), 12);
    let planted: BTreeMap<PathBuf, PlantedBox> = summary.entries.iter().map(|e| (summary.out_dir.join(&e.path), e.planted)).collect();
    let set = LabelledSet::open(&summary.out_dir).unwrap();
    let options = MiningOptions {
        prompt_template: LABEL_PROMPT.into(),
        null_prompt: NULL_PROMPT.into(),
        typicality: TypicalityOptions { samples: 20, ..Default::default() },
        patch_size: 16,
        per_image: 2,
        dift: DiftOptions { ensemble: 2, ..Default::default() },
        cluster: ClusterOptions { clusters: 4, ..Default::default() },
        ..Default::default()
    };
    let results = mine(&finetuned(), &set, &options, &mut |_, _| true).unwrap();
    assert_eq!(results.len(), 4);
    let mut on_element_by_rank: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for label in &results {
        for (rank, cluster) in label.clusters.iter().enumerate() {
            let hits = cluster.members.iter().filter(|&&m| {
                let p = &label.patches[m];
                on_element(p.patch.x, p.patch.y, p.patch.size, &planted[&p.path])
            });
            let fraction = hits.count() as f64 / cluster.members.len() as f64;
            println!(
                "{} cluster {rank}: {} patches, median {:.2e}, {:.0} % on the planted element",
                label.label,
                cluster.members.len(),
                cluster.median_typicality,
                100.0 * fraction
            );
            on_element_by_rank.entry(label.label.clone()).or_default().push(fraction);
        }
    }
    // Two boxes per image, so at most half of a label's boxes can lie on its element.
    for (label, by_rank) in &on_element_by_rank {
        assert!(by_rank[0] >= 0.7, "{label}: {:.0} % of the top cluster on the planted element", 100.0 * by_rank[0]);
        assert!(by_rank[0] > *by_rank.last().unwrap(), "{label}: the top cluster is no more on the element than the last: {by_rank:?}");
    }
}

#[test]
fn finetuned_maps_find_every_labels_planted_boxes_far_better_than_the_pretrained_model() {
    let dir = tempfile::tempdir().unwrap();
    let summary = held_out(&dir.path().join("set"), 6);
    let boxes = cxr8::read_bbox_list(&summary.out_dir.join("BBox_List_2017.csv")).unwrap();
    let options = EvaluationOptions { working_size: 64, samples: 20, t_min: 0.1, t_max: 0.7, ..Default::default() };
    let evaluation = cxr8::evaluate(&finetuned(), Some(&pretrained()), &summary.out_dir, &boxes, &options, &mut |_, _| true).unwrap();
    let report = Report::from_results(&evaluation.results);
    print!("{}", report.markdown());
    assert_eq!(report.rows.len(), 4);
    for row in &report.rows {
        let (ft, pt) = (row.finetuned.unwrap().average_precision.mean, row.baseline.unwrap().average_precision.mean);
        assert!(ft >= 3.0 * pt, "{}: finetuned mean AP {ft:.3} against the pretrained model's {pt:.3}", row.disease);
        let random = box_area_fraction(&summary, &row.disease);
        assert!(ft >= 5.0 * random, "{}: finetuned mean AP {ft:.3} against {random:.3} for a random map", row.disease);
    }
}
