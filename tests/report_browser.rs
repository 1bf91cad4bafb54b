//! The reports as a person sees them, in headless Chromium driven by Playwright
//! (tests/browser/check_page.mjs; `npm ci` in tests/browser and Debian's chromium, both installed by
//! scripts/setup.sh). The mining report is built from a real run: the demo model (models/demo) mines a
//! small generated set, and the page must show each label's clusters with the rank, size and median
//! typicality the miner found, their members closest to the centroid, the three strips, every image
//! loaded and no dead link, with no request leaving the folder. A click on an element must open its
//! source image (the file the element came from) and the image's heat map with the element's box.
//! Screenshots are kept in target/report-browser/ (each test prints where).
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use diffmine::dataset::{load_image, LabelledSet};
use diffmine::heatmap;
use diffmine::image::to_rgb_image;
use diffmine::mining::cluster::{ClusterOptions, RankedCluster};
use diffmine::mining::cotypicality::report::{write_parallel_report, ParallelReportOptions, ReportSource, VersionStore};
use diffmine::mining::cotypicality::{CotypicalElement, CotypicalResult};
use diffmine::mining::dift::DiftOptions;
use diffmine::mining::miner::{mine, LabelResult, MiningOptions};
use diffmine::mining::patches::PatchBox;
use diffmine::mining::report::{write_comparison, write_report, ReportOptions};
use diffmine::model::{ComponentOverrides, ModelOptions, StableDiffusion};
use diffmine::synthetic::{write_dataset, SyntheticOptions};
use diffmine::typicality::TypicalityOptions;
use image::RgbImage;
use serde_json::{json, Value};

/// The demo's finetuned model: its own UNet, the other components of the pretrained folder.
fn demo_model() -> StableDiffusion {
    let demo = common::repo_root().join("models/demo");
    let base = demo.join("pretrained");
    let overrides = ComponentOverrides {
        vae: Some(base.join("vae")),
        text_encoder: Some(base.join("text_encoder")),
        tokenizer: Some(base.join("tokenizer")),
        scheduler: Some(base.join("scheduler")),
        ..Default::default()
    };
    StableDiffusion::open(&demo.join("finetuned"), &ModelOptions { overrides, ..Default::default() }).expect("models/demo/finetuned")
}

/// A generated set of two labels (8 images each, 64 pixels) and what the demo model mines from it,
/// made once for all tests of this file.
struct Mined {
    _dir: tempfile::TempDir,
    results: Vec<LabelResult>,
}

fn mined() -> &'static Mined {
    static MINED: OnceLock<Mined> = OnceLock::new();
    MINED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let synthetic = SyntheticOptions { seed: 7, images_per_label: 8, labels: vec!["Nodule".into(), "Effusion".into()], ..Default::default() };
        let summary = write_dataset(&synthetic, &dir.path().join("set")).unwrap();
        let set = LabelledSet::open(&summary.out_dir).unwrap();
        let options = MiningOptions {
            prompt_template: "Chest X-Ray with {label}.".into(),
            null_prompt: "Chest X-Ray.".into(),
            typicality: TypicalityOptions { samples: 8, ..Default::default() },
            patch_size: 16,
            per_image: 3,
            top: 24,
            dift: DiftOptions { ensemble: 1, ..Default::default() },
            cluster: ClusterOptions { clusters: 4, restarts: 2, ..Default::default() },
            ..Default::default()
        };
        let results = mine(&demo_model(), &set, &options, &mut |_, _| true).unwrap();
        Mined { _dir: dir, results }
    })
}

fn report_options() -> ReportOptions {
    ReportOptions { min_members: 2, clusters: 3, per_row: 5, ..ReportOptions::default() }
}

/// Where the screenshots are kept.
fn artefacts() -> PathBuf {
    let dir = common::repo_root().join("target/report-browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens `page` in Chromium, screenshots it to `screenshot`, optionally clicks the first element
/// matching `click` (and screenshots the result to `click_screenshot`), and returns what was seen.
fn browse(page: &Path, screenshot: &Path, click: Option<(&str, &Path)>) -> Value {
    let browser_dir = common::repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser has no node_modules: run scripts/setup.sh (it runs `npm ci` there) to check the report pages"
    );
    let task = json!({
        "page": page.canonicalize().unwrap(),
        "screenshot": screenshot,
        "click": click.map(|(selector, _)| selector),
        "clickScreenshot": click.map(|(_, path)| path),
    });
    let output = Command::new("node").arg(browser_dir.join("check_page.mjs")).arg(task.to_string()).current_dir(&browser_dir).output().expect("run node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser check failed ({}) on {}:\n{stderr}", output.status, page.display());
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(seen["offsite"], json!([]), "{} requests something outside its folder", page.display());
    seen
}

/// Asserts that the page logged no error (a script error or a file it could not load).
fn assert_no_errors(seen: &Value) {
    assert_eq!(seen["errors"], json!([]), "errors on the page");
}

fn list<'a>(value: &'a Value, key: &str) -> &'a Vec<Value> {
    value[key].as_array().unwrap_or_else(|| panic!("no {key} in {value}"))
}

/// `src` of every image on the page that did not load or is not shown.
fn broken_images(seen: &Value) -> Vec<String> {
    list(&seen["seen"], "images").iter().filter(|i| i["loaded"] != true || i["shown"] != true).map(|i| i["src"].as_str().unwrap().to_string()).collect()
}

/// Links whose target file is missing (relative to `dir`) or whose `#fragment` is not in it.
fn dead_links(seen: &Value, dir: &Path) -> Vec<String> {
    let mut dead = Vec::new();
    for link in list(&seen["seen"], "links") {
        let href = link["href"].as_str().unwrap();
        let (file, fragment) = href.split_once('#').unwrap_or((href, ""));
        let ok = if file.is_empty() {
            link["ok"] == true
        } else {
            let target = dir.join(file);
            target.is_file() && (fragment.is_empty() || std::fs::read_to_string(&target).unwrap().contains(&format!("id=\"{fragment}\"")))
        };
        if !ok {
            dead.push(href.to_string());
        }
    }
    dead
}

/// A number as the page shows it, read back.
fn shown_number(text: &str) -> f64 {
    text.split_whitespace().last().unwrap().parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn mean_abs_difference(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.as_raw().len() as f64
}

#[test]
fn mining_report_shows_the_miners_clusters_and_a_click_opens_the_source_image_with_its_heat_map_and_box() {
    let mined = mined();
    let options = report_options();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    write_report(&mined.results, &options, &out).unwrap();
    let (page_shot, viewer_shot) = (artefacts().join("mining_report.png"), artefacts().join("mining_report_viewer.png"));
    let seen = browse(&out.join("index.html"), &page_shot, Some(("section.label .cluster button.element", &viewer_shot)));
    println!("screenshots: {} and {}", page_shot.display(), viewer_shot.display());

    assert_no_errors(&seen);
    assert_eq!(seen["seen"]["title"], "libdiffmine mining report");
    assert_eq!(broken_images(&seen), Vec::<String>::new());
    assert_eq!(dead_links(&seen, &out), Vec::<String>::new());
    let sections = list(&seen["seen"], "sections");
    assert_eq!(sections.len(), mined.results.len());
    for (section, result) in sections.iter().zip(&mined.results) {
        assert_eq!(section["heading"], result.label.as_str());
        assert_eq!(section["id"], result.label.as_str());
        let expected: Vec<(usize, &RankedCluster)> =
            result.clusters.iter().enumerate().filter(|(_, c)| c.members.len() >= options.min_members).take(options.clusters).collect();
        assert!(!expected.is_empty(), "{}: no cluster of {} members", result.label, options.min_members);
        let clusters = list(section, "clusters");
        assert_eq!(clusters.len(), expected.len(), "{}: the top clusters of at least {} members", result.label, options.min_members);
        for (shown, (rank, cluster)) in clusters.iter().zip(&expected) {
            let what = format!("{} cluster {rank}", result.label);
            assert_eq!(shown["rank"], rank.to_string(), "{what}");
            assert_eq!(shown["rankText"], format!("#{}", rank + 1), "{what}");
            assert_eq!(shown["size"], cluster.members.len().to_string(), "{what}");
            assert_eq!(shown["sizeText"], format!("{} elements", cluster.members.len()), "{what}");
            assert_eq!(shown["median"].as_str().unwrap().parse::<f32>().unwrap(), cluster.median_typicality, "{what}");
            let median = cluster.median_typicality as f64;
            assert!((shown_number(shown["medianText"].as_str().unwrap()) - median).abs() <= 5e-4 * median.abs(), "{what}: {}", shown["medianText"]);
            let members: Vec<u64> = cluster.members.iter().take(options.per_row).map(|&m| m as u64).collect();
            assert_eq!(shown["elements"], json!(members), "{what}: its members closest to the centroid first");
        }
        let medians: Vec<f32> = expected.iter().map(|(_, c)| c.median_typicality).collect();
        assert!(medians.windows(2).all(|w| w[0] >= w[1]), "rank order: {medians:?}");
        let strips = list(section, "strips");
        let ids: Vec<&str> = strips.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["top", "random", "least"]);
        let scores: Vec<f32> = result.patches.iter().map(|p| p.patch.score).collect();
        let mut by_score: Vec<usize> = (0..scores.len()).collect();
        by_score.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let strip = |i: usize| strips[i]["elements"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>();
        assert_eq!(strip(0).iter().map(|&i| scores[i]).collect::<Vec<_>>(), by_score[..options.per_row].iter().map(|&i| scores[i]).collect::<Vec<_>>());
        let least: Vec<f32> = by_score.iter().rev().take(options.per_row).map(|&i| scores[i]).collect();
        assert_eq!(strip(2).iter().map(|&i| scores[i]).collect::<Vec<_>>(), least);
        assert_eq!(strip(1).len(), options.per_row);
        assert_eq!(strip(1).iter().collect::<BTreeSet<_>>().len(), options.per_row, "the random strip repeats no element");
    }
    // Crops are shown large enough to see: at least four times the 16-pixel box's side.
    let crop = &seen["seen"]["crop"];
    assert!(crop["width"].as_u64().unwrap() >= 64 && crop["height"].as_u64().unwrap() >= 64, "{crop}");

    // The click: the first element of the first label's top cluster.
    let result = &mined.results[0];
    let patch_index: usize = seen["clicked"]["patch"].as_str().unwrap().parse().unwrap();
    assert_eq!(patch_index, result.clusters[0].members[0]);
    let element = &result.patches[patch_index];
    let viewer = &seen["viewer"];
    assert_eq!(viewer["visible"], true);
    assert_eq!(viewer["source"], element.path.display().to_string(), "the viewer names the element's source file");
    assert!(viewer["title"].as_str().unwrap().starts_with(&format!("{}: cluster #1, element 1 of ", result.label)), "{}", viewer["title"]);
    // The image shown is the element's source image, as mined.
    let source = to_rgb_image(&load_image(&element.path, None).unwrap()).unwrap();
    let shown_source = image::open(out.join(viewer["image"]["src"].as_str().unwrap())).unwrap().to_rgb8();
    let difference = mean_abs_difference(&shown_source, &source);
    assert!(difference < 2.0, "the shown image differs from {} by {difference:.2} a sample", element.path.display());
    let other = result.patches.iter().find(|p| p.path != element.path).expect("boxes from two images");
    let other = to_rgb_image(&load_image(&other.path, None).unwrap()).unwrap();
    assert!(mean_abs_difference(&shown_source, &other) > 3.0 * difference + 1.0, "the shown image is not told apart from another source");
    // The heat map is that image's map over it, in the library's colours.
    let heat = image::open(out.join(viewer["heat"]["src"].as_str().unwrap())).unwrap().to_rgb8();
    let expected_heat = heatmap::overlay_resized(&source, &result.maps[&element.path]).unwrap();
    let difference = mean_abs_difference(&heat, &expected_heat);
    // JPEG blurs saturated colours more than grey levels.
    assert!(difference < 4.0, "the heat map differs from the overlay by {difference:.2} a sample");
    assert!(mean_abs_difference(&heat, &source) > 10.0, "the heat map is coloured");
    // Both are shown, on top, with the element's box where the element is.
    let PatchBox { x, y, size, .. } = element.patch;
    for figure in [&viewer["heat"], &viewer["image"]] {
        assert_eq!((figure["naturalWidth"].as_u64(), figure["naturalHeight"].as_u64()), (Some(64), Some(64)), "{figure}");
        assert_eq!(figure["onTop"], true, "{figure}");
        let (rect, b) = (&figure["rect"], &figure["box"]);
        let scale = rect["width"].as_f64().unwrap() / 64.0;
        assert!(scale >= 4.0, "the image is shown enlarged: {rect}");
        let near = |shown: &Value, expected: f64| (shown.as_f64().unwrap() - expected).abs() <= 1.5;
        assert!(near(&b["x"], rect["x"].as_f64().unwrap() + x as f64 * scale), "box {b} for x {x} in {rect}");
        assert!(near(&b["y"], rect["y"].as_f64().unwrap() + y as f64 * scale), "box {b} for y {y} in {rect}");
        assert!(near(&b["width"], size as f64 * scale) && near(&b["height"], size as f64 * scale), "box {b} for size {size}");
    }
    assert_eq!(seen["closedByEscape"], true);
}

#[test]
fn comparison_page_shows_each_runs_grid_per_label_and_links_into_each_report() {
    let mined = mined();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("comparison");
    write_comparison(&[("finetuned", &mined.results), ("again", &mined.results)], &report_options(), &out).unwrap();
    let shot = artefacts().join("comparison.png");
    let seen = browse(&out.join("index.html"), &shot, None);
    println!("screenshot: {}", shot.display());
    assert_no_errors(&seen);
    assert_eq!(seen["seen"]["title"], "libdiffmine mining comparison");
    let images: Vec<&str> = list(&seen["seen"], "images").iter().map(|i| i["src"].as_str().unwrap()).collect();
    let labels: Vec<&str> = mined.results.iter().map(|r| r.label.as_str()).collect();
    let expected: Vec<String> = labels.iter().flat_map(|l| ["finetuned", "again"].map(|m| format!("{m}/grid_{l}.png"))).collect();
    assert_eq!(images, expected);
    assert_eq!(broken_images(&seen), Vec::<String>::new());
    let links: Vec<&str> = list(&seen["seen"], "links").iter().map(|l| l["href"].as_str().unwrap()).collect();
    assert!(links.contains(&format!("again/index.html#{}", labels[1]).as_str()), "{links:?}");
    assert_eq!(dead_links(&seen, &out), Vec::<String>::new());
}

#[test]
fn the_check_reports_a_missing_crop_as_a_broken_image_and_a_missing_section_as_a_dead_link() {
    let mined = mined();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("comparison");
    write_comparison(&[("finetuned", &mined.results)], &report_options(), &out).unwrap();
    let label = &mined.results[0].label;
    let first = mined.results[0].clusters[0].members[0];
    std::fs::remove_file(out.join(format!("finetuned/elements/{label}/{first}.png"))).unwrap();
    let seen = browse(&out.join("finetuned/index.html"), &artefacts().join("broken.png"), None);
    // The element is shown in its cluster and maybe in a strip: every place it is shown is broken.
    let broken = broken_images(&seen);
    assert!(!broken.is_empty() && broken.iter().all(|b| *b == format!("elements/{label}/{first}.png")), "{broken:?}");
    let errors = seen["errors"].as_array().unwrap();
    assert!(!errors.is_empty() && errors.iter().all(|e| e.as_str().unwrap().contains("ERR_FILE_NOT_FOUND")), "{errors:?}");
    let page = out.join("finetuned/index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    std::fs::write(&page, html.replace(&format!("id=\"{label}\""), "id=\"gone\"")).unwrap();
    let seen = browse(&out.join("index.html"), &artefacts().join("broken_comparison.png"), None);
    assert_eq!(dead_links(&seen, &out), vec![format!("finetuned/index.html#{label}")]);
}

/// A 96 × 80 PNG whose colours vary with the position and with `seed`.
fn write_image(path: &Path, seed: u8) {
    let image = RgbImage::from_fn(96, 80, |x, y| image::Rgb([(x * 2) as u8 ^ seed, (y * 3) as u8, seed.wrapping_mul(37)]));
    image.save(path).unwrap();
}

#[test]
fn co_typicality_page_shows_a_card_per_shown_cluster_in_the_reports_style() {
    let dir = tempfile::tempdir().unwrap();
    let versions = VersionStore::create(dir.path().join("versions")).unwrap();
    for set in 0..3 {
        for v in 0..2 {
            write_image(&versions.version_path(set, v), (set * 2 + v) as u8 * 40);
        }
    }
    let mut result = CotypicalResult { elements: Vec::new(), clusters: Vec::new() };
    for (rank, members) in [4, 3, 2].into_iter().enumerate() {
        let first = result.elements.len();
        for r in 0..members {
            let i = result.elements.len();
            let patch = PatchBox { x: (i * 20) % 80, y: (i * 12) % 64, size: 16, score: 1.0 - i as f32 * 0.01 };
            result.elements.push(CotypicalElement { set: i % 3, patch, cluster_rank: rank, rank_in_cluster: r, distance: r as f32 });
        }
        let median_typicality = 0.5 - rank as f32 * 0.125;
        result.clusters.push(RankedCluster { id: rank, members: (first..first + members).collect(), median_typicality });
    }
    let sources: Vec<ReportSource> = (0..3).map(|s| ReportSource { name: format!("source {s}.png"), label: s % 2 }).collect();
    let labels = vec!["Effusion".to_string(), "<Pleural> & thickening".to_string()];
    let out = dir.path().join("parallel");
    let options = ParallelReportOptions { strips: 2, per_strip: 3 };
    assert_eq!(write_parallel_report(&result, &sources, &labels, &versions, &options, &out).unwrap(), 2);
    let shot = artefacts().join("co_typicality_report.png");
    let seen = browse(&out.join("index.html"), &shot, None);
    println!("screenshot: {}", shot.display());
    assert_no_errors(&seen);
    assert_eq!(seen["seen"]["title"], "libdiffmine co-typicality report");
    let clusters = list(&list(&seen["seen"], "sections")[0], "clusters");
    let cards: Vec<(String, String, String, String)> = clusters
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap().to_string();
            (text("id"), text("rankText"), text("sizeText"), text("medianText"))
        })
        .collect();
    let expected = [("cluster_00", "#1", "4 elements", "median co-typicality 0.5000"), ("cluster_01", "#2", "3 elements", "median co-typicality 0.3750")];
    assert_eq!(cards, expected.map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string())));
    let strips: Vec<(&str, u64, u64)> = list(&seen["seen"], "images")
        .iter()
        .map(|i| (i["src"].as_str().unwrap(), i["naturalWidth"].as_u64().unwrap(), i["naturalHeight"].as_u64().unwrap()))
        .collect();
    // Two versions of 16 + 2 pixels side by side, 3 rows each (per_strip), shown enlarged.
    assert_eq!(strips, [("strip_00.png", 36, 54), ("strip_01.png", 36, 54)]);
    assert!(list(&seen["seen"], "images").iter().all(|i| i["width"].as_u64().unwrap() >= 4 * 36));
    assert_eq!(broken_images(&seen), Vec::<String>::new());
    assert_eq!(dead_links(&seen, &out), Vec::<String>::new());
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("&lt;Pleural&gt; &amp; thickening") && !html.contains("<Pleural>"), "labels are escaped");
}
