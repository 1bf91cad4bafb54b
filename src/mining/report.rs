//! The visual summary of a mining run, as a folder a person opens offline (`index.html`, no network
//! needed): per label, the top clusters in rank order, each with its size and median typicality and
//! its members closest to the centroid, beside strips of the label's most typical, random and least
//! typical elements (as the paper's figures show them). A click on an element opens its source image
//! and the image's typicality heat map, the element's box drawn on both. Beside the page:
//! `patches.csv` (every kept box with its typicality, cluster and rank), per label a grid PNG with a
//! row per shown cluster (`grid_<label>.png`, for papers and the comparison page), and the images the
//! page shows: `elements/<label>/<n>.png` (the crop of kept box n, numbered as in `patches.csv`'s
//! rows of the label) and `sources/<label>/<m>.jpg` and `<m>_heat.jpg` (a shown element's source image
//! as it was mined, and its heat map), written only for the elements shown, so the folder stays small
//! whatever the number of images mined.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{imageops, RgbImage};

use super::miner::{LabelResult, MinedPatch};
use super::page::{escape, number, viewer, write_page};
use crate::dataset::{load_image_or_pixels, Pixels};
use crate::error::{Error, Result};
use crate::heatmap;
use crate::image::to_rgb_image;
use crate::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Clusters with fewer members are not shown (6).
    pub min_members: usize,
    /// Clusters shown per label, from the best (8).
    pub clusters: usize,
    /// Elements shown per cluster, closest to the centroid first, and per strip (12).
    pub per_row: usize,
    /// Side of a crop in pixels in the files (crops are scaled to it, nearest neighbour; 64).
    pub crop_px: u32,
    /// Seed of the random strip.
    pub seed: u64,
    /// Resize applied to images when they were mined (so boxes land where they were found).
    pub resize: Option<usize>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { min_members: 6, clusters: 8, per_row: 12, crop_px: 64, seed: 0, resize: None }
    }
}

/// Quality of the JPEG copies of source images and heat maps: their pixels barely differ from the
/// source's, at a fifth of a PNG's size.
const JPEG_QUALITY: u8 = 92;

/// The heat map's colour bar, beside the page.
const LEGEND: &str = "legend.png";

/// Writes the report of `results` into `out`.
pub fn write_report(results: &[LabelResult], options: &ReportOptions, out: &Path) -> Result<()> {
    create_dir(out)?;
    write_csv(results, &out.join("patches.csv"))?;
    save(&heatmap::legend(256, 1), &out.join(LEGEND))?;
    let mut sections = String::new();
    for result in results {
        let shown = Shown::choose(result, options);
        let files = write_label_images(result, &shown, options, out)?;
        write_section(&mut sections, result, &shown, &files, options);
    }
    let nav: String = results.iter().map(|r| format!("<a href=\"#{}\">{}</a>", slug(&r.label), escape(&r.label))).collect::<Vec<_>>().join("");
    let body = format!("<nav class=\"labels\">{nav}</nav>\n{sections}{}", viewer(LEGEND));
    let subtitle = format!(
        "Typical visual elements of {} label{}, clusters ranked by the median typicality of their members. \
         Click an element to see it in its image and the image's typicality map. Every kept box: <a href=\"patches.csv\">patches.csv</a>.{}",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        skipped_note(results)
    );
    write_page(&out.join("index.html"), "libdiffmine mining report", &subtitle, &body)
}

/// The count of unreadable images left out (each once, whatever its labels), for the page's top.
fn skipped_note(results: &[LabelResult]) -> String {
    let skipped: BTreeSet<&PathBuf> = results.iter().flat_map(|r| r.skipped.iter().map(|s| &s.path)).collect();
    match skipped.len() {
        0 => String::new(),
        n => format!(" <span class=\"skipped\" data-skipped=\"{n}\">{n} unreadable image{} skipped.</span>", if n == 1 { "" } else { "s" }),
    }
}

/// Writes the reports of several models mined on the same images side by side, as the paper's Fig. 3b
/// compares a pretrained and a finetuned model: each model's full report in `out/<model>/`, and
/// `out/index.html` with one row per label and one column per model (its cluster grid, linked to
/// that model's section). `models` holds (name, results) pairs.
pub fn write_comparison(models: &[(&str, &[LabelResult])], options: &ReportOptions, out: &Path) -> Result<()> {
    let mut labels: Vec<&str> = Vec::new();
    for (name, results) in models {
        write_report(results, options, &out.join(slug(name)))?;
        for r in results.iter() {
            if !labels.contains(&r.label.as_str()) {
                labels.push(&r.label);
            }
        }
    }
    let header: String = models.iter().map(|(name, _)| format!("<th>{}</th>", escape(name))).collect();
    let mut rows = String::new();
    for label in labels {
        let label_slug = slug(label);
        let _ = write!(rows, "<tr><th>{}</th>", escape(label));
        for (name, results) in models {
            if results.iter().any(|r| r.label == label) {
                let dir = slug(name);
                let _ = write!(
                    rows,
                    "<td><a href=\"{dir}/index.html#{label_slug}\"><img class=\"grid\" alt=\"clusters of {} by {}\" src=\"{dir}/grid_{label_slug}.png\"></a></td>",
                    escape(label),
                    escape(name)
                );
            } else {
                rows.push_str("<td>not mined</td>");
            }
        }
        rows.push_str("</tr>\n");
    }
    let body = format!("<table class=\"compare\"><tr><th>label</th>{header}</tr>\n{rows}</table>\n");
    let subtitle = "Each cell: a model's clusters of the label, one row per cluster from the highest median typicality; \
                    a click opens that model's report.";
    write_page(&out.join("index.html"), "libdiffmine mining comparison", subtitle, &body)
}

/// What a label's section shows, as indices into the label's patches.
struct Shown {
    /// The shown clusters, best first: (rank, its members shown, closest to the centroid first).
    clusters: Vec<(usize, Vec<usize>)>,
    /// (id, heading, members) of the most typical, random and least typical strips.
    strips: Vec<(&'static str, &'static str, Vec<usize>)>,
}

impl Shown {
    fn choose(result: &LabelResult, options: &ReportOptions) -> Self {
        let clusters = result
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.members.len() >= options.min_members)
            .take(options.clusters)
            .map(|(rank, c)| (rank, c.members.iter().copied().take(options.per_row).collect()))
            .collect();
        Shown { clusters, strips: strips(result, options) }
    }

    /// Every element shown, each once.
    fn elements(&self) -> BTreeSet<usize> {
        let in_clusters = self.clusters.iter().flat_map(|(_, members)| members);
        in_clusters.chain(self.strips.iter().flat_map(|(_, _, members)| members)).copied().collect()
    }
}

/// The most typical, a random selection, and the least typical of the kept patches.
fn strips(result: &LabelResult, options: &ReportOptions) -> Vec<(&'static str, &'static str, Vec<usize>)> {
    let mut by_score: Vec<usize> = (0..result.patches.len()).collect();
    by_score.sort_by(|&a, &b| result.patches[b].patch.score.total_cmp(&result.patches[a].patch.score));
    let n = options.per_row.min(by_score.len());
    let mut rng = SplitMix64::new(options.seed);
    let mut shuffled = by_score.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    vec![
        ("top", "Most typical", by_score[..n].to_vec()),
        ("random", "Random", shuffled[..n].to_vec()),
        ("least", "Least typical", by_score[by_score.len() - n..].iter().rev().copied().collect()),
    ]
}

/// Where the page finds the images of a label's shown elements.
#[derive(Default)]
struct LabelFiles {
    /// Shown element → the number of its source image.
    source_of: BTreeMap<usize, usize>,
    /// Width and height of each source image, by number.
    sizes: Vec<(u32, u32)>,
}

/// Writes the crops, source images and heat maps of a label's shown elements, and its grid PNG. Each
/// source image is opened once, whatever the number of its elements shown.
fn write_label_images(result: &LabelResult, shown: &Shown, options: &ReportOptions, out: &Path) -> Result<LabelFiles> {
    let slug = slug(&result.label);
    let (elements_dir, sources_dir) = (out.join("elements").join(&slug), out.join("sources").join(&slug));
    create_dir(&elements_dir)?;
    create_dir(&sources_dir)?;
    let mut by_image: BTreeMap<&PathBuf, Vec<usize>> = BTreeMap::new();
    for i in shown.elements() {
        by_image.entry(&result.patches[i].path).or_default().push(i);
    }
    let mut files = LabelFiles::default();
    let mut crops = BTreeMap::new();
    for (n, (path, members)) in by_image.into_iter().enumerate() {
        let image = rgb_image(path, result.in_memory.get(path), options.resize)?;
        for i in members {
            let element = crop(&image, &result.patches[i], options.crop_px);
            save(&element, &elements_dir.join(element_file(i)))?;
            crops.insert(i, element);
            files.source_of.insert(i, n);
        }
        let map = result.maps.get(path).ok_or_else(|| Error::InvalidArgument(format!("no typicality map of {} for the report", path.display())))?;
        save_jpeg(&heatmap::overlay_resized(&image, map)?, &sources_dir.join(heat_file(n)))?;
        save_jpeg(&image, &sources_dir.join(source_file(n)))?;
        files.sizes.push(image.dimensions());
    }
    let rows: Vec<&[usize]> = shown.clusters.iter().map(|(_, members)| members.as_slice()).collect();
    save(&sheet(&rows, &crops, options.crop_px), &out.join(format!("grid_{slug}.png")))?;
    Ok(files)
}

fn element_file(patch: usize) -> String {
    format!("{patch}.png")
}

fn source_file(n: usize) -> String {
    format!("{n}.jpg")
}

fn heat_file(n: usize) -> String {
    format!("{n}_heat.jpg")
}

fn write_section(html: &mut String, result: &LabelResult, shown: &Shown, files: &LabelFiles, options: &ReportOptions) {
    let slug = slug(&result.label);
    let label = escape(&result.label);
    let images = result.patches.iter().map(|p| &p.path).collect::<BTreeSet<_>>().len();
    let _ = write!(
        html,
        "<section class=\"label\" id=\"{slug}\" data-label=\"{label}\"><h2>{label}</h2>\n\
         <p class=\"summary\">{} kept boxes from {images} images in {} clusters; the top {} shown (clusters of fewer than {} members \
         left out), each with its members closest to the centroid.</p>\n",
        result.patches.len(),
        result.clusters.len(),
        shown.clusters.len(),
        options.min_members
    );
    skipped_list(html, result);
    html.push_str("<div class=\"label-body\"><div class=\"clusters\"><h3 class=\"column\">Top clusters</h3>\n");
    for (rank, members) in &shown.clusters {
        let cluster = &result.clusters[*rank];
        let _ = write!(
            html,
            "<div class=\"cluster\" data-rank=\"{rank}\" data-size=\"{size}\" data-median=\"{median}\"><div class=\"cluster-head\">\
             <span class=\"rank\">#{}</span><span class=\"size\">{size} elements</span><span class=\"median\">median typicality {}</span>\
             </div><div class=\"elements\">",
            rank + 1,
            number(cluster.median_typicality),
            size = cluster.members.len(),
            median = cluster.median_typicality,
        );
        for &i in members {
            element_button(html, result, i, files, &slug);
        }
        html.push_str("</div></div>\n");
    }
    if shown.clusters.is_empty() {
        html.push_str("<p class=\"note\">No cluster has enough members to show.</p>\n");
    }
    html.push_str("</div><aside class=\"strips\">\n");
    for (id, heading, members) in &shown.strips {
        let _ = write!(html, "<div class=\"strip\" data-strip=\"{id}\"><h3 class=\"column\">{heading}</h3><div class=\"elements\">");
        for &i in members {
            element_button(html, result, i, files, &slug);
        }
        html.push_str("</div></div>\n");
    }
    html.push_str("</aside></div></section>\n");
}

/// The label's unreadable images, by name with the reason, folded away.
fn skipped_list(html: &mut String, result: &LabelResult) {
    let n = result.skipped.len();
    if n == 0 {
        return;
    }
    let items: String = result.skipped.iter().map(|s| format!("<li>{}: {}</li>", escape(&s.path.display().to_string()), escape(&s.reason))).collect();
    let plural = if n == 1 { "" } else { "s" };
    let _ = writeln!(html, "<details class=\"skipped\" data-skipped=\"{n}\"><summary>{n} unreadable image{plural} skipped</summary><ul>{items}</ul></details>");
}

/// An element as a button that opens the viewer; its data attributes hold what the viewer shows.
fn element_button(html: &mut String, result: &LabelResult, i: usize, files: &LabelFiles, slug: &str) {
    let p = &result.patches[i];
    let b = p.patch;
    let n = files.source_of[&i];
    let (width, height) = files.sizes[n];
    let title = format!(
        "{}: cluster #{}, element {} of {}",
        result.label,
        p.cluster_rank + 1,
        p.rank_in_cluster + 1,
        result.clusters.get(p.cluster_rank).map_or(0, |c| c.members.len())
    );
    let details = format!(
        "Box at ({}, {}), {} pixels a side, in the image as mined ({width}×{height}); typicality {}; distance to the cluster's centroid {}.",
        b.x,
        b.y,
        b.size,
        number(b.score),
        number(p.distance)
    );
    let _ = write!(
        html,
        "<button type=\"button\" class=\"element\" data-patch=\"{i}\" data-title=\"{}\" data-source=\"{}\" data-details=\"{}\" \
         data-image=\"sources/{slug}/{}\" data-heat=\"sources/{slug}/{}\" data-box=\"{},{},{}\" data-dims=\"{width},{height}\" \
         title=\"typicality {}\"><img src=\"elements/{slug}/{}\" alt=\"element {i}\"></button>",
        escape(&title),
        escape(&p.path.display().to_string()),
        escape(&details),
        source_file(n),
        heat_file(n),
        b.x,
        b.y,
        b.size,
        number(b.score),
        element_file(i)
    );
}

/// A sheet with one row of crops per entry of `rows`, 2 px apart on a white ground.
fn sheet(rows: &[&[usize]], crops: &BTreeMap<usize, RgbImage>, crop_px: u32) -> RgbImage {
    let cell = crop_px + 2;
    let width = (rows.iter().map(|r| r.len()).max().unwrap_or(0) as u32).max(1) * cell;
    let mut sheet = RgbImage::from_pixel(width, (rows.len() as u32).max(1) * cell, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, i) in row.iter().enumerate() {
            imageops::replace(&mut sheet, &crops[i], (c as u32 * cell) as i64, (r as u32 * cell) as i64);
        }
    }
    sheet
}

fn rgb_image(path: &Path, pixels: Option<&Pixels>, resize: Option<usize>) -> Result<RgbImage> {
    to_rgb_image(&load_image_or_pixels(path, pixels, resize)?)
}

fn crop(image: &RgbImage, p: &MinedPatch, px: u32) -> RgbImage {
    let b = p.patch;
    let view = imageops::crop_imm(image, b.x as u32, b.y as u32, b.size as u32, b.size as u32).to_image();
    imageops::resize(&view, px, px, imageops::FilterType::Nearest)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

pub(crate) fn save(image: &RgbImage, path: &Path) -> Result<()> {
    crate::io::write_image(image, path)
}

fn save_jpeg(image: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    image.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)).map_err(|e| Error::io(path, e))?;
    crate::io::write_atomic(path, &bytes)
}

fn write_csv(results: &[LabelResult], path: &Path) -> Result<()> {
    let mut csv = String::from("label,image,x,y,size,typicality,cluster,rank_in_cluster,distance_to_centroid\n");
    for r in results {
        for p in &r.patches {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{},{},{},{}",
                csv_field(&r.label),
                csv_field(&p.path.display().to_string()),
                p.patch.x,
                p.patch.y,
                p.patch.size,
                p.patch.score,
                p.cluster_rank,
                p.rank_in_cluster,
                p.distance
            );
        }
    }
    crate::io::write_atomic(path, csv.as_bytes())
}

pub(crate) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A label as a file-name part: letters and digits kept, anything else as '_'.
fn slug(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mining::cluster::RankedCluster;
    use crate::mining::miner::SkippedImage;
    use crate::mining::patches::PatchBox;
    use ndarray::Array2;

    /// A label named with HTML's special characters over three 32 × 24 images (one named likewise),
    /// each with two 8-pixel boxes; three clusters of two members.
    fn result(dir: &Path) -> LabelResult {
        let paths: Vec<PathBuf> = ["a.png", "b & <c>.png", "d.png"].iter().map(|n| dir.join(n)).collect();
        for (k, path) in paths.iter().enumerate() {
            RgbImage::from_fn(32, 24, |x, y| image::Rgb([(x * 8) as u8, (y * 10) as u8, 80 * k as u8])).save(path).unwrap();
        }
        let patches: Vec<MinedPatch> = (0..6)
            .map(|i| MinedPatch {
                path: paths[i / 2].clone(),
                patch: PatchBox { x: 8 * (i % 2), y: 4, size: 8, score: 1.0 - i as f32 / 10.0 },
                cluster_rank: i / 2,
                rank_in_cluster: i % 2,
                distance: 0.5,
            })
            .collect();
        let clusters = (0..3).map(|c| RankedCluster { id: c, members: vec![2 * c, 2 * c + 1], median_typicality: 1.0 - c as f32 / 5.0 }).collect();
        let maps = paths.iter().map(|p| (p.clone(), Array2::from_shape_fn((6, 8), |(y, x)| (x + y) as f32))).collect();
        LabelResult {
            label: "Mass <b> & \"x\"".into(),
            patches,
            clusters,
            image_sizes: paths.iter().map(|p| (p.clone(), (24, 32))).collect(),
            in_memory: BTreeMap::new(),
            maps,
            skipped: vec![SkippedImage { path: dir.join("e <broken>.png"), reason: "not a PNG".into() }],
            times: Default::default(),
        }
    }

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn the_page_escapes_labels_and_file_names_and_copies_only_the_shown_elements_images() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        // Two clusters of one element shown (patches 0 and 2, of images a and b), strips of one (the
        // most typical is patch 0, the least patch 5 of image d, and a random one): at most 4 of the
        // 6 elements and the 3 images.
        let options = ReportOptions { min_members: 1, clusters: 2, per_row: 1, ..ReportOptions::default() };
        write_report(&[result(dir.path())], &options, &out).unwrap();
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.contains("<h2>Mass &lt;b&gt; &amp; &quot;x&quot;</h2>"), "{html}");
        assert!(html.contains("b &amp; &lt;c&gt;.png\""), "file names escaped");
        assert!(!html.contains("<b>") && !html.contains("<c>"));
        assert!(html.contains("1 unreadable image skipped") && html.contains("e &lt;broken&gt;.png: not a PNG"), "skipped images named");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing from the network");
        let slug = "Mass__b_____x_";
        assert!((3..=4).contains(&count(&out.join("elements").join(slug))));
        assert_eq!(count(&out.join("sources").join(slug)), 2 * 3, "an image and its heat map per shown source");
        let grid = image::open(out.join(format!("grid_{slug}.png"))).unwrap();
        assert_eq!((grid.width(), grid.height()), (66, 132), "two rows of one 64-pixel crop");
        assert_eq!(std::fs::read_to_string(out.join("patches.csv")).unwrap().lines().count(), 7);
    }

    #[test]
    fn a_shown_element_without_its_map_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut result = result(dir.path());
        result.maps.clear();
        let err = write_report(&[result], &ReportOptions { min_members: 1, ..ReportOptions::default() }, &dir.path().join("r")).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("no typicality map of"), "{err}");
    }
}
