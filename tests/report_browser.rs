//! The mining report as a person sees it: each `index.html` opened in headless Chromium loads, shows
//! every label's cluster grid, every image on it loads, and no link is dead (a link with a `#section`
//! must reach that section); the co-typicality report's page shows a strip per cluster. The reports are
//! built from hand-made `LabelResult`s and `CotypicalResult`s over PNGs written here, so no model is
//! needed. Chromium must be on PATH as `chromium` (scripts/install_chromium.sh).
//!
//! How the page is checked from inside the browser: Chromium opens a small checker page (written into
//! the report's temp folder) that loads the report page in an iframe, waits for its load event (which
//! fires once every image has loaded or failed), inspects `iframe.contentDocument`, requests every
//! link target with XHR (file:// allows no fetch), and writes its findings as JSON into the checker's
//! DOM, which `--dump-dom` prints once the page is idle (`--virtual-time-budget`).
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diffmine::mining::cluster::RankedCluster;
use diffmine::mining::cotypicality::report::{write_parallel_report, ParallelReportOptions, ReportSource, VersionStore};
use diffmine::mining::cotypicality::{CotypicalElement, CotypicalResult};
use diffmine::mining::miner::{LabelResult, MinedPatch};
use diffmine::mining::patches::PatchBox;
use diffmine::mining::report::{write_comparison, write_report, ReportOptions};
use serde_json::Value;

const CHECKER: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>report checker</title></head>
<body><pre id="verdict"></pre>
<script>
"use strict";
function request(url) {
  return new Promise(resolve => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.onload = () => resolve({ ok: true, text: xhr.responseText });
    xhr.onerror = () => resolve({ ok: false, text: "" });
    try { xhr.send(); } catch (e) { resolve({ ok: false, text: "" }); }
  });
}
function shown(element) {
  const box = element.getBoundingClientRect();
  const style = element.ownerDocument.defaultView.getComputedStyle(element);
  return box.width > 0 && box.height > 0 && style.display !== "none" && style.visibility !== "hidden";
}
function image(img) {
  return { src: img.getAttribute("src"), complete: img.complete, naturalWidth: img.naturalWidth,
           naturalHeight: img.naturalHeight, shown: shown(img) };
}
async function link(a) {
  const url = new URL(a.href);
  const fragment = decodeURIComponent(url.hash.slice(1));
  url.hash = "";
  const target = await request(url.href);
  let ok = target.ok, reason = target.ok ? "" : "target missing";
  if (ok && fragment) {
    const doc = new DOMParser().parseFromString(target.text, "text/html");
    if (!doc.getElementById(fragment)) { ok = false; reason = "no element #" + fragment; }
  }
  return { href: a.getAttribute("href"), ok, reason };
}
async function check(frame) {
  const doc = frame.contentDocument;
  const verdict = { url: doc.URL, readyState: doc.readyState, title: doc.title };
  verdict.sections = [...doc.querySelectorAll("section")].map(s => {
    const grid = s.querySelector("img.grid");
    return { id: s.id, heading: (s.querySelector("h2") || {}).textContent || "", grid: grid ? image(grid) : null };
  });
  verdict.grids = [...doc.querySelectorAll("img.grid")].map(image);
  verdict.images = [...doc.images].map(image);
  verdict.links = [];
  for (const a of doc.querySelectorAll("a[href]")) verdict.links.push(await link(a));
  return verdict;
}
const frame = document.createElement("iframe");
frame.style.width = "1200px";
frame.style.height = "800px";
frame.onload = async () => {
  let verdict;
  try { verdict = await check(frame); } catch (e) { verdict = { error: String(e) }; }
  document.getElementById("verdict").textContent = JSON.stringify(verdict);
};
frame.src = new URLSearchParams(location.search).get("page");
document.body.appendChild(frame);
</script></body></html>
"#;

/// What the browser found on a page.
struct Verdict(Value);

impl Verdict {
    fn list(&self, key: &str) -> &Vec<Value> {
        self.0[key].as_array().unwrap_or_else(|| panic!("verdict has no {key}: {}", self.0))
    }

    /// `src` of every image that did not load (or loaded empty).
    fn broken_images(&self) -> Vec<String> {
        self.list("images").iter().filter(|i| !image_loaded(i)).map(|i| i["src"].as_str().unwrap().to_string()).collect()
    }

    /// (href, reason) of every dead link.
    fn dead_links(&self) -> Vec<(String, String)> {
        self.list("links")
            .iter()
            .filter(|l| l["ok"] != Value::Bool(true))
            .map(|l| (l["href"].as_str().unwrap().to_string(), l["reason"].as_str().unwrap().to_string()))
            .collect()
    }

    fn links(&self) -> Vec<String> {
        self.list("links").iter().map(|l| l["href"].as_str().unwrap().to_string()).collect()
    }

    /// Section id → its grid image.
    fn section_grids(&self) -> BTreeMap<String, Value> {
        self.list("sections").iter().map(|s| (s["id"].as_str().unwrap().to_string(), s["grid"].clone())).collect()
    }
}

fn image_loaded(image: &Value) -> bool {
    image["complete"] == Value::Bool(true) && image["naturalWidth"].as_u64().unwrap_or(0) > 0
}

fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("chromium")).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("no `chromium` on PATH: run scripts/install_chromium.sh (CI installs it) to check the report pages"))
}

/// Opens `page` in headless Chromium through the checker and returns what it found.
fn check_in_browser(page: &Path) -> Verdict {
    let page = page.canonicalize().unwrap();
    let work = tempfile::tempdir().unwrap();
    let checker = work.path().join("checker.html");
    std::fs::write(&checker, CHECKER).unwrap();
    let url = format!("file://{}?page={}", checker.display(), percent_encode(&format!("file://{}", page.display())));
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--no-first-run"])
        .args(["--disable-dev-shm-usage", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", work.path().join("profile").display()))
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    // Generous: the machines running the tests are often busy.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish checking {} within 120 s", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = out_reader.join().unwrap().unwrap();
    let log = err_reader.join().unwrap().unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}) on {}:\n{log}", page.display());
    let start = dom.find("<pre id=\"verdict\">").unwrap_or_else(|| panic!("no verdict in the DOM dump:\n{dom}\n{log}"));
    let rest = &dom[start + "<pre id=\"verdict\">".len()..];
    let text = unescape(&rest[..rest.find("</pre>").expect("verdict ends")]);
    assert!(!text.is_empty(), "the checker wrote no verdict (the page never finished loading?):\n{dom}\n{log}");
    let verdict: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("verdict {text:?}: {e}"));
    assert!(verdict.get("error").is_none(), "the checker failed: {}", verdict["error"]);
    Verdict(verdict)
}

fn percent_encode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Undoes the escaping of a text node in Chromium's serialisation.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&")
}

/// A 96 × 80 PNG whose colours vary with the position and with `seed`.
fn write_image(path: &Path, seed: u8) {
    let image = image::RgbImage::from_fn(96, 80, |x, y| image::Rgb([(x * 2) as u8 ^ seed, (y * 3) as u8, seed.wrapping_mul(37)]));
    image.save(path).unwrap();
}

/// A label's result over `images`: `clusters` clusters of `per_cluster` 16-pixel boxes each, boxes
/// walking over the images, typicality falling with the rank.
fn label_result(label: &str, images: &[PathBuf], clusters: usize, per_cluster: usize) -> LabelResult {
    let mut patches = Vec::new();
    let mut ranked = Vec::new();
    for c in 0..clusters {
        let mut members = Vec::new();
        for r in 0..per_cluster {
            let i = patches.len();
            let patch = PatchBox { x: (i * 20) % 80, y: (i * 12) % 64, size: 16, score: 1.0 - (c * per_cluster + r) as f32 * 0.01 };
            patches.push(MinedPatch { path: images[i % images.len()].clone(), patch, cluster_rank: c, rank_in_cluster: r, distance: r as f32 * 0.5 });
            members.push(i);
        }
        ranked.push(RankedCluster { id: clusters - 1 - c, members, median_typicality: 1.0 - c as f32 * 0.1 });
    }
    let image_sizes = images.iter().map(|p| (p.clone(), (80, 96))).collect();
    LabelResult { label: label.into(), patches, clusters: ranked, image_sizes, in_memory: Default::default(), times: Default::default() }
}

const LABELS: [&str; 3] = ["Effusion", "Mass", "Pleural thickening"];
const SLUGS: [&str; 3] = ["Effusion", "Mass", "Pleural_thickening"];

/// Images plus the results of two models: "pretrained" mined every label, "finetuned" all but the last.
fn results(dir: &Path) -> (Vec<LabelResult>, Vec<LabelResult>) {
    let images: Vec<PathBuf> = (0..3u8)
        .map(|k| {
            let path = dir.join(format!("image{k}.png"));
            write_image(&path, k * 70);
            path
        })
        .collect();
    let pretrained = LABELS.iter().map(|l| label_result(l, &images, 3, 4)).collect();
    let finetuned = LABELS[..2].iter().map(|l| label_result(l, &images, 2, 3)).collect();
    (pretrained, finetuned)
}

fn options() -> ReportOptions {
    ReportOptions { min_members: 1, ..ReportOptions::default() }
}

fn report(dir: &Path) -> PathBuf {
    let (pretrained, _) = results(dir);
    let out = dir.join("report");
    write_report(&pretrained, &options(), &out).unwrap();
    out
}

fn comparison(dir: &Path) -> PathBuf {
    let (pretrained, finetuned) = results(dir);
    let out = dir.join("comparison");
    write_comparison(&[("pretrained", &pretrained), ("finetuned", &finetuned)], &options(), &out).unwrap();
    out
}

#[test]
fn report_page_loads_in_chromium_with_every_labels_grid_shown_every_image_loaded_and_no_dead_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = report(dir.path());
    let verdict = check_in_browser(&out.join("index.html"));
    assert_eq!(verdict.0["readyState"], "complete");
    assert_eq!(verdict.0["title"], "libdiffmine mining report");
    let grids = verdict.section_grids();
    assert_eq!(grids.keys().map(String::as_str).collect::<Vec<_>>(), SLUGS.to_vec(), "one section per label");
    let headings: Vec<&str> = verdict.list("sections").iter().map(|s| s["heading"].as_str().unwrap()).collect();
    assert_eq!(headings, LABELS.to_vec());
    for (slug, grid) in &grids {
        assert_eq!(grid["src"], format!("grid_{slug}.png"));
        assert!(image_loaded(grid), "grid of {slug} did not load: {grid}");
        assert_eq!(grid["shown"], true, "grid of {slug} is not shown: {grid}");
        // Three clusters of four crops, each crop 64 px plus a 2 px gap.
        assert_eq!((grid["naturalWidth"].as_u64(), grid["naturalHeight"].as_u64()), (Some(4 * 66), Some(3 * 66)), "{slug}");
    }
    // A grid and three strips per label, all loaded.
    assert_eq!(verdict.list("images").len(), 4 * LABELS.len());
    assert_eq!(verdict.broken_images(), Vec::<String>::new());
    assert_eq!(verdict.links(), vec!["patches.csv".to_string()]);
    assert_eq!(verdict.dead_links(), vec![]);
}

#[test]
fn comparison_page_loads_in_chromium_with_each_models_grid_per_label_and_links_reaching_the_sections() {
    let dir = tempfile::tempdir().unwrap();
    let out = comparison(dir.path());
    let verdict = check_in_browser(&out.join("index.html"));
    assert_eq!(verdict.0["readyState"], "complete");
    assert_eq!(verdict.0["title"], "libdiffmine mining comparison");
    let grids: Vec<&str> = verdict.list("grids").iter().map(|g| g["src"].as_str().unwrap()).collect();
    assert_eq!(
        grids,
        vec![
            "pretrained/grid_Effusion.png",
            "finetuned/grid_Effusion.png",
            "pretrained/grid_Mass.png",
            "finetuned/grid_Mass.png",
            "pretrained/grid_Pleural_thickening.png",
        ],
        "one grid per label and model that mined it"
    );
    for grid in verdict.list("grids") {
        assert!(image_loaded(grid) && grid["shown"] == true, "grid not shown: {grid}");
    }
    assert_eq!(verdict.broken_images(), Vec::<String>::new());
    let links = verdict.links();
    assert_eq!(links.len(), 5);
    assert!(links.contains(&"finetuned/index.html#Mass".to_string()), "{links:?}");
    assert_eq!(verdict.dead_links(), vec![]);
    // The pages the comparison links to pass too.
    for model in ["pretrained", "finetuned"] {
        let run = check_in_browser(&out.join(model).join("index.html"));
        assert_eq!(run.broken_images(), Vec::<String>::new(), "{model}");
        assert_eq!(run.dead_links(), vec![], "{model}");
        assert_eq!(run.section_grids().len(), if model == "pretrained" { 3 } else { 2 }, "{model}");
    }
}

#[test]
fn browser_check_reports_a_deleted_grid_png_as_a_broken_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = report(dir.path());
    std::fs::remove_file(out.join("grid_Mass.png")).unwrap();
    let verdict = check_in_browser(&out.join("index.html"));
    assert_eq!(verdict.broken_images(), vec!["grid_Mass.png".to_string()]);
    let grids = verdict.section_grids();
    assert!(!image_loaded(&grids["Mass"]), "{}", grids["Mass"]);
    assert_eq!(grids["Mass"]["naturalWidth"], 0);
    assert!(image_loaded(&grids["Effusion"]) && image_loaded(&grids["Pleural_thickening"]));
}

#[test]
fn browser_check_reports_a_missing_link_target_and_a_missing_section_as_dead_links() {
    let dir = tempfile::tempdir().unwrap();
    let out = comparison(dir.path());
    std::fs::remove_file(out.join("pretrained/patches.csv")).unwrap();
    let run = check_in_browser(&out.join("pretrained/index.html"));
    assert_eq!(run.dead_links(), vec![("patches.csv".to_string(), "target missing".to_string())]);

    // The finetuned report loses its Mass section: the comparison's link to it is dead.
    let finetuned = out.join("finetuned/index.html");
    let html = std::fs::read_to_string(&finetuned).unwrap();
    assert!(html.contains("<section id=\"Mass\">"));
    std::fs::write(&finetuned, html.replace("<section id=\"Mass\">", "<section id=\"gone\">")).unwrap();
    let verdict = check_in_browser(&out.join("index.html"));
    assert_eq!(verdict.dead_links(), vec![("finetuned/index.html#Mass".to_string(), "no element #Mass".to_string())]);
    assert_eq!(verdict.broken_images(), Vec::<String>::new());
}

/// A co-typicality report over 3 parallel sets of 2 versions: 3 clusters of 2, 3 and 4 members with
/// 16-pixel boxes, the last cluster not shown (2 strips).
fn parallel_report(dir: &Path) -> PathBuf {
    let versions = VersionStore::create(dir.join("versions")).unwrap();
    for set in 0..3 {
        for v in 0..2 {
            write_image(&versions.version_path(set, v), (set * 2 + v) as u8 * 40);
        }
    }
    let mut result = CotypicalResult { elements: Vec::new(), clusters: Vec::new() };
    for (rank, members) in [2, 3, 4].into_iter().enumerate() {
        let first = result.elements.len();
        for r in 0..members {
            let i = result.elements.len();
            let patch = PatchBox { x: (i * 20) % 80, y: (i * 12) % 64, size: 16, score: 1.0 - i as f32 * 0.01 };
            result.elements.push(CotypicalElement { set: i % 3, patch, cluster_rank: rank, rank_in_cluster: r, distance: r as f32 });
        }
        result.clusters.push(RankedCluster { id: rank, members: (first..first + members).collect(), median_typicality: 1.0 - rank as f32 * 0.1 });
    }
    let sources: Vec<ReportSource> = (0..3).map(|s| ReportSource { name: format!("source {s}.png"), label: s % 2 }).collect();
    let labels = vec!["Effusion".to_string(), "Pleural thickening".to_string()];
    let out = dir.join("parallel");
    let options = ParallelReportOptions { strips: 2, per_strip: 3 };
    assert_eq!(write_parallel_report(&result, &sources, &labels, &versions, &options, &out).unwrap(), 2);
    out
}

#[test]
fn co_typicality_page_loads_in_chromium_with_a_strip_per_shown_cluster_and_no_dead_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = parallel_report(dir.path());
    let verdict = check_in_browser(&out.join("index.html"));
    assert_eq!(verdict.0["readyState"], "complete");
    assert_eq!(verdict.0["title"], "libdiffmine co-typicality report");
    let sections: Vec<&str> = verdict.list("sections").iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(sections, ["cluster_00", "cluster_01"]);
    let strips: Vec<(&str, u64, u64, bool)> = verdict
        .list("images")
        .iter()
        .map(|i| (i["src"].as_str().unwrap(), i["naturalWidth"].as_u64().unwrap(), i["naturalHeight"].as_u64().unwrap(), i["shown"] == true))
        .collect();
    // Two versions of 16 + 2 pixels side by side; rows: 2 members, then 3 of 3 (per_strip).
    assert_eq!(strips, [("strip_00.png", 36, 36, true), ("strip_01.png", 36, 54, true)]);
    assert_eq!(verdict.broken_images(), Vec::<String>::new());
    assert_eq!(verdict.links(), vec!["elements.csv".to_string()]);
    assert_eq!(verdict.dead_links(), vec![]);
}
