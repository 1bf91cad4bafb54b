//! Discriminative mining (the Doersch et al. baseline) against its peers, through
//! tests/reference/doersch_reference.py: the window features against scikit-image's HOG, rgb2lab and
//! is_low_contrast on the same images (1e-5), the linear SVM against scikit-learn's
//! `SVC(kernel='linear', C=0.1, tol=1e-8)` decision values (1e-3), and a small end-to-end run whose
//! top detectors must lie on the planted elements more often than chance.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use diffmine::mining::doersch::features::{colour_windows, hog_blocks, is_low_contrast, window_features, Rgb, WindowGrid, FEATURE_DIM};
use diffmine::mining::doersch::svm::{train, SvmOptions};
use diffmine::rng::SplitMix64;
use diffmine::synthetic::{generate_image, SyntheticOptions};
use image::RgbImage;
use tch::{Kind, Tensor};

fn reference(args: &[&str]) {
    let status = Command::new(common::python())
        .arg(common::repo_root().join("tests/reference/doersch_reference.py"))
        .args(args)
        .status()
        .expect("run tests/reference/doersch_reference.py (run scripts/setup.sh first)");
    assert!(status.success(), "doersch_reference.py {args:?} failed");
}

fn read(path: PathBuf) -> Vec<f64> {
    Vec::<f64>::try_from(Tensor::read_npy(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn largest_difference(ours: &[f64], theirs: &[f64], what: &str) -> f64 {
    assert_eq!(ours.len(), theirs.len(), "{what}: {} values against {}", ours.len(), theirs.len());
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// Three images that exercise the features: a synthetic radiograph (grey, 128 px), colour noise
/// smoothed into blobs with a size that is no multiple of 8 (100 × 77), and flat colour fields with
/// sharp edges (equal gradients across channels, zero gradients, low-contrast windows).
fn test_images(dir: &Path) -> Vec<(PathBuf, RgbImage)> {
    let radiograph = generate_image(&SyntheticOptions { size: 128, ..SyntheticOptions::default() }, 1, 3).unwrap();
    let grey = RgbImage::from_fn(128, 128, |x, y| {
        let v = radiograph.pixels[(y * 128 + x) as usize];
        image::Rgb([v, v, v])
    });
    let mut rng = SplitMix64::new(7);
    let noise: Vec<[f64; 3]> = (0..100 * 77).map(|_| [rng.uniform(), rng.uniform(), rng.uniform()]).collect();
    let blobs = RgbImage::from_fn(100, 77, |x, y| {
        let mut sum = [0.0; 3];
        for dy in 0..3 {
            for dx in 0..3 {
                let (sx, sy) = ((x + dx).min(99), (y + dy).min(76));
                let n = noise[(sy * 100 + sx) as usize];
                (0..3).for_each(|c| sum[c] += n[c] / 9.0);
            }
        }
        image::Rgb(sum.map(|v| (v * 255.0) as u8))
    });
    let fields = RgbImage::from_fn(96, 88, |x, y| match (x / 24 + y / 30) % 3 {
        0 => image::Rgb([200, 30, 40]),
        1 => image::Rgb([20, 180, 90]),
        _ => image::Rgb([128, 128, 128 + (x % 3) as u8]),
    });
    [("radiograph", grey), ("blobs", blobs), ("fields", fields)]
        .into_iter()
        .map(|(name, image)| {
            let path = dir.join(format!("{name}.png"));
            image.save(&path).unwrap();
            (path, image)
        })
        .collect()
}

fn rgb(image: &RgbImage) -> Rgb<'_> {
    Rgb { data: image.as_raw(), width: image.width() as usize, height: image.height() as usize }
}

#[test]
fn window_features_equal_scikit_image_hog_and_lab_on_the_same_windows() {
    let dir = tempfile::tempdir().unwrap();
    let images = test_images(dir.path());
    let mut args = vec!["features".to_string()];
    args.extend(images.iter().map(|(p, _)| p.display().to_string()));
    args.push(dir.path().display().to_string());
    reference(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (n, (path, image)) in images.iter().enumerate() {
        let name = path.file_name().unwrap().to_string_lossy();
        let hog = largest_difference(&hog_blocks(rgb(image)).unwrap(), &read(dir.path().join(format!("hog_{n}.npy"))), "hog");
        let colour = largest_difference(&colour_windows(rgb(image)).unwrap(), &read(dir.path().join(format!("colour_{n}.npy"))), "colour");
        let (grid, features) = window_features(rgb(image)).unwrap();
        let features: Vec<f64> = features.into_iter().map(f64::from).collect();
        let normalised = largest_difference(&features, &read(dir.path().join(format!("features_{n}.npy"))), "features");
        eprintln!("{name}: {} windows; largest difference: HOG {hog:.2e}, colour {colour:.2e}, features {normalised:.2e}", grid.len());
        assert!(hog < 1e-5 && colour < 1e-5 && normalised < 1e-5, "{name}: HOG {hog}, colour {colour}, features {normalised}");
        let theirs: Vec<bool> = read(dir.path().join(format!("low_contrast_{n}.npy"))).into_iter().map(|v| v != 0.0).collect();
        let ours: Vec<bool> = (0..grid.len())
            .map(|w| {
                let (x, y) = grid.origin(w);
                is_low_contrast(rgb(image), x, y, 0.15)
            })
            .collect();
        assert_eq!(ours, theirs, "{name}: low-contrast windows");
        assert_eq!(grid, WindowGrid::of(image.height() as usize, image.width() as usize));
    }
}

/// Training rows like a detector's: 5 positive windows and 600 negative ones of 2,112 features,
/// drawn from the test images (positives from one image, negatives from the others), and a set of
/// overlapping Gaussian classes in 40 dimensions, where many support vectors are free.
fn svm_cases(dir: &Path) -> Vec<(Tensor, Vec<bool>, Tensor)> {
    let images = test_images(dir);
    let windows: Vec<Tensor> = images
        .iter()
        .map(|(_, image)| {
            let (grid, values) = window_features(rgb(image)).unwrap();
            Tensor::from_slice(&values).reshape([grid.len() as i64, FEATURE_DIM as i64])
        })
        .collect();
    let mut rng = SplitMix64::new(11);
    let mut pick = |t: &Tensor, n: usize| {
        let rows: Vec<i64> = (0..n).map(|_| rng.below(t.size()[0] as u64) as i64).collect();
        t.index_select(0, &Tensor::from_slice(&rows))
    };
    let positives = pick(&windows[0], 5);
    let negatives = Tensor::cat(&[pick(&windows[1], 300), pick(&windows[2], 300)], 0);
    let test = Tensor::cat(&[pick(&windows[0], 50), pick(&windows[1], 50), pick(&windows[2], 50)], 0);
    let window_case = (Tensor::cat(&[positives, negatives], 0), (0..605).map(|i| i < 5).collect(), test);
    let mut rng = SplitMix64::new(12);
    let gaussian = |n: usize, shift: f64, rng: &mut SplitMix64| {
        let values: Vec<f32> = (0..n * 40).map(|i| (rng.normal() + if i % 40 < 5 { shift } else { 0.0 }) as f32).collect();
        Tensor::from_slice(&values).reshape([n as i64, 40])
    };
    let x = Tensor::cat(&[gaussian(150, 0.8, &mut rng), gaussian(250, -0.2, &mut rng)], 0);
    let test = gaussian(100, 0.3, &mut rng);
    let gaussian_case = (x, (0..400).map(|i| i < 150).collect(), test);
    vec![window_case, gaussian_case]
}

#[test]
fn linear_svm_decision_values_equal_scikit_learn_svc() {
    let dir = tempfile::tempdir().unwrap();
    for (case, (x, positive, test)) in svm_cases(dir.path()).into_iter().enumerate() {
        let folder = dir.path().join(format!("case{case}"));
        std::fs::create_dir_all(&folder).unwrap();
        x.write_npy(folder.join("x.npy")).unwrap();
        Tensor::from_slice(&positive.iter().map(|&p| if p { 1.0f32 } else { -1.0 }).collect::<Vec<_>>()).write_npy(folder.join("y.npy")).unwrap();
        test.write_npy(folder.join("test.npy")).unwrap();
        reference(&["svm", &folder.display().to_string()]);
        let model = train(&x, &positive, &SvmOptions { tolerance: 1e-8, ..SvmOptions::default() }).unwrap();
        let test_rows = Vec::<f32>::try_from(test.flatten(0, -1)).unwrap();
        let dim = x.size()[1] as usize;
        let ours: Vec<f64> = test_rows.chunks(dim).map(|row| model.decision(row)).collect();
        let theirs = read(folder.join("decision.npy"));
        let difference = largest_difference(&ours, &theirs, "decision values");
        let scale = theirs.iter().map(|v| v.abs()).fold(0.0, f64::max);
        eprintln!(
            "case {case}: largest decision difference {difference:.2e} (values up to {scale:.3}); bias ours {:.6}, theirs {:.6}",
            model.bias,
            read(folder.join("intercept.npy"))[0]
        );
        assert!(difference < 1e-3, "case {case}: decision values differ by {difference}");
    }
}

/// Whether the 64-pixel window at (x, y) holds the centre of the planted box.
fn on_planted(x: usize, y: usize, planted: &diffmine::synthetic::PlantedBox) -> bool {
    let (cx, cy) = (planted.x + planted.w / 2.0, planted.y + planted.h / 2.0);
    (x as f64..(x + 64) as f64).contains(&cx) && (y as f64..(y + 64) as f64).contains(&cy)
}

#[test]
fn the_top_detectors_lie_on_the_planted_elements_more_often_than_chance_and_the_report_is_written() {
    use diffmine::dataset::LabelledSet;
    use diffmine::mining::doersch::{mine_discriminative, DoerschOptions, Precision};
    use diffmine::mining::report::{write_report, ReportOptions, Scores};
    use diffmine::synthetic::write_dataset;

    let dir = tempfile::tempdir().unwrap();
    let synthetic = SyntheticOptions { size: 256, images_per_label: 16, labels: vec!["Nodule".into(), "Effusion".into()], ..SyntheticOptions::default() };
    let summary = write_dataset(&synthetic, &dir.path().join("set")).unwrap();
    let set = LabelledSet::open(&dir.path().join("set")).unwrap();
    let options = DoerschOptions {
        candidates: 300,
        detectors: 8,
        neighbours: 16,
        scored_neighbours: 8,
        negatives: 400,
        negative_pool: 800,
        final_neighbours: 16,
        keep: 4,
        precision: Precision::Float32,
        ..DoerschOptions::default()
    };
    let mut calls = 0u64;
    let (labels, times) = mine_discriminative(&set, &options, &mut |done, total| {
        assert!(done <= total, "progress {done} of {total}");
        calls += 1;
        true
    })
    .unwrap();
    assert!(calls > 0);
    eprintln!("{times:?}");
    let planted: std::collections::BTreeMap<PathBuf, _> = summary.entries.iter().map(|e| (dir.path().join("set").join(&e.path), e.planted)).collect();
    let (mut hits, mut shown, mut chance) = (0, 0, Vec::new());
    for label in &labels {
        assert!(!label.result.clusters.is_empty(), "{}: no detector kept", label.result.label);
        for cluster in label.result.clusters.iter().take(6) {
            for &member in cluster.members.iter().take(6) {
                let p = &label.result.patches[member];
                assert_eq!(p.patch.size, 64);
                shown += 1;
                hits += on_planted(p.patch.x, p.patch.y, &planted[&p.path]) as usize;
            }
        }
    }
    // Chance: the share of all window positions of the set's images that hold the planted centre.
    for box_ in planted.values() {
        let grid = WindowGrid::of(256, 256);
        chance.push((0..grid.len()).filter(|&w| on_planted(grid.origin(w).0, grid.origin(w).1, box_)).count() as f64 / grid.len() as f64);
    }
    let chance = chance.iter().sum::<f64>() / chance.len() as f64;
    let share = hits as f64 / shown as f64;
    eprintln!("{hits} of {shown} shown detections on the planted element ({share:.3}); chance {chance:.3}");
    assert!(share > chance, "top detections on the planted element: {share:.3}, chance {chance:.3}");

    let results: Vec<_> = labels.into_iter().map(|l| l.result).collect();
    let out = dir.path().join("report");
    write_report(&results, &ReportOptions { scores: Scores::Discriminative, min_members: 1, ..ReportOptions::default() }, &out).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("discriminativeness") && html.contains("Top detectors"), "the page speaks of detectors");
    for label in ["Nodule", "Effusion"] {
        assert!(out.join(format!("grid_{label}.png")).is_file(), "grid of {label}");
    }
}

#[test]
fn the_c_api_run_refuses_bad_arguments_cancels_cleanly_and_writes_the_rust_apis_report() {
    use diffmine::dataset::LabelledSet;
    use diffmine::mining::doersch::{mine_discriminative, DoerschOptions};
    use diffmine::mining::report::{write_report, ReportOptions, Scores};
    use diffmine::synthetic::write_dataset;

    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    let synthetic = SyntheticOptions { size: 128, images_per_label: 6, labels: vec!["Nodule".into(), "Effusion".into()], ..SyntheticOptions::default() };
    write_dataset(&synthetic, &set).unwrap();
    let library = common::built_library();
    let program = dir.path().join("doersch");
    common::compile_c(&common::repo_root().join("tests/c/doersch.c"), &program, library.parent().unwrap());
    let c_out = dir.path().join("c report");
    let output = Command::new(&program).arg(&set).arg(&c_out).env_remove("RUST_BACKTRACE").output().unwrap();
    assert!(output.status.success(), "tests/c/doersch.c failed:\n{}", common::show(&output));

    // The settings tests/c/doersch.c gives dm_doersch_run; the rest are the defaults of both.
    let options = DoerschOptions {
        candidates: 200,
        detectors: 4,
        negatives: 200,
        negative_pool: 400,
        final_neighbours: 8,
        keep: 3,
        seed: 7,
        ..DoerschOptions::default()
    };
    let (labels, _) = mine_discriminative(&LabelledSet::open(&set).unwrap(), &options, &mut |_, _| true).unwrap();
    let results: Vec<_> = labels.into_iter().map(|l| l.result).collect();
    let rust_out = dir.path().join("rust report");
    write_report(&results, &ReportOptions { scores: Scores::Discriminative, min_members: 1, ..ReportOptions::default() }, &rust_out).unwrap();
    let read = |dir: &Path| std::fs::read_to_string(dir.join("patches.csv")).unwrap();
    assert!(read(&rust_out).lines().count() > 1, "the Rust API's report lists detections");
    assert_eq!(read(&c_out), read(&rust_out), "patches.csv of dm_doersch_run and of the Rust API");
}
