//! The visual summary of a mining run, as a folder a person opens: `patches.csv` (every kept box with
//! its typicality, cluster and rank), per label a grid PNG with one row per cluster (rank order,
//! clusters with fewer than `min_members` members left out, up to `per_row` crops a row), strips of
//! the most typical, random and least typical patches, and `index.html` showing them all.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{imageops, RgbImage};

use super::miner::{LabelResult, MinedPatch};
use crate::dataset::{load_image_or_pixels, Pixels};
use crate::error::{Error, Result};
use crate::image::to_rgb_image;
use crate::rng::SplitMix64;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Clusters with fewer members are not shown (6).
    pub min_members: usize,
    /// Crops per grid row and per strip (20).
    pub per_row: usize,
    /// Side of a shown crop in pixels (crops are scaled to it).
    pub crop_px: u32,
    /// Seed of the random strip.
    pub seed: u64,
    /// Resize applied to images when they were mined (so boxes land where they were found).
    pub resize: Option<usize>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { min_members: 6, per_row: 20, crop_px: 64, seed: 0, resize: None }
    }
}

/// Writes the report of `results` into `out`.
pub fn write_report(results: &[LabelResult], options: &ReportOptions, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_csv(results, &out.join("patches.csv"))?;
    let mut sections = String::new();
    for result in results {
        let crops = Crops::load(result, options)?;
        let slug = slug(&result.label);
        let grid = grid_rows(result, options);
        save(&crops.sheet(&grid, options), &out.join(format!("grid_{slug}.png")))?;
        let strips = strips(result, options);
        for (name, members) in &strips {
            save(&crops.sheet(std::slice::from_ref(members), options), &out.join(format!("strip_{slug}_{name}.png")))?;
        }
        write_section(&mut sections, result, &slug, grid.len(), &strips);
    }
    let body = format!("<h1>Typical visual elements</h1>\n<p>Every kept box: <a href=\"patches.csv\">patches.csv</a>.</p>\n{sections}");
    write_page(&out.join("index.html"), "libdiffmine mining report", "", &body)
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
    let body = format!(
        "<h1>Typical visual elements, side by side</h1>\n<p>Each cell: a model's clusters of the label, ranked by median typicality (one row per cluster).</p>\n\
         <table><tr><th>label</th>{header}</tr>\n{rows}</table>"
    );
    write_page(&out.join("index.html"), "libdiffmine mining comparison", " td,th{vertical-align:top;padding:.5em}", &body)
}

/// Writes an HTML page of the reports' look: `body` under `title`, with `extra_style` (CSS rules)
/// after the common ones.
pub(crate) fn write_page(path: &Path, title: &str, extra_style: &str, body: &str) -> Result<()> {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}} img{{image-rendering:pixelated;max-width:100%}}{extra_style}</style></head>\n\
         <body>{body}</body></html>\n",
        escape(title)
    );
    crate::io::write_atomic(path, html.as_bytes())
}

fn write_section(html: &mut String, result: &LabelResult, slug: &str, shown: usize, strips: &[(&str, Vec<usize>)]) {
    let label = escape(&result.label);
    let _ = write!(
        html,
        "<section id=\"{slug}\"><h2>{label}</h2>\n<p>{} patches in {} clusters; {shown} clusters shown, ranked by median typicality.</p>\n\
         <img class=\"grid\" alt=\"clusters of {label}\" src=\"grid_{slug}.png\">\n",
        result.patches.len(),
        result.clusters.len()
    );
    for (name, _) in strips {
        let _ = writeln!(html, "<h3>{name}</h3><img class=\"strip\" alt=\"{name} patches of {label}\" src=\"strip_{slug}_{name}.png\">");
    }
    html.push_str("</section>\n");
}

/// Members (indices into `patches`) of the shown clusters, one row each.
fn grid_rows(result: &LabelResult, options: &ReportOptions) -> Vec<Vec<usize>> {
    result.clusters.iter().filter(|c| c.members.len() >= options.min_members).map(|c| c.members.iter().copied().take(options.per_row).collect()).collect()
}

/// The most typical, a random selection, and the least typical of the kept patches.
fn strips(result: &LabelResult, options: &ReportOptions) -> Vec<(&'static str, Vec<usize>)> {
    let mut by_score: Vec<usize> = (0..result.patches.len()).collect();
    by_score.sort_by(|&a, &b| result.patches[b].patch.score.total_cmp(&result.patches[a].patch.score));
    let n = options.per_row.min(by_score.len());
    let mut rng = SplitMix64::new(options.seed);
    let mut shuffled = by_score.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    vec![("top", by_score[..n].to_vec()), ("random", shuffled[..n].to_vec()), ("least", by_score[by_score.len() - n..].iter().rev().copied().collect())]
}

/// The crops of a label's patches, scaled to the display size.
struct Crops(Vec<RgbImage>);

impl Crops {
    fn load(result: &LabelResult, options: &ReportOptions) -> Result<Self> {
        let mut images: BTreeMap<&PathBuf, RgbImage> = BTreeMap::new();
        let mut crops = Vec::with_capacity(result.patches.len());
        for p in &result.patches {
            if !images.contains_key(&p.path) {
                images.insert(&p.path, rgb_image(&p.path, result.in_memory.get(&p.path), options.resize)?);
            }
            crops.push(crop(&images[&p.path], p, options.crop_px));
        }
        Ok(Crops(crops))
    }

    /// A sheet with one row of crops per entry of `rows`, 2 px apart on a white ground.
    fn sheet(&self, rows: &[Vec<usize>], options: &ReportOptions) -> RgbImage {
        let cell = options.crop_px + 2;
        let width = (rows.iter().map(Vec::len).max().unwrap_or(0) as u32).max(1) * cell;
        let mut sheet = RgbImage::from_pixel(width, (rows.len() as u32).max(1) * cell, image::Rgb([255, 255, 255]));
        for (r, row) in rows.iter().enumerate() {
            for (c, &i) in row.iter().enumerate() {
                imageops::replace(&mut sheet, &self.0[i], (c as u32 * cell) as i64, (r as u32 * cell) as i64);
            }
        }
        sheet
    }
}

fn rgb_image(path: &Path, pixels: Option<&Pixels>, resize: Option<usize>) -> Result<RgbImage> {
    to_rgb_image(&load_image_or_pixels(path, pixels, resize)?)
}

fn crop(image: &RgbImage, p: &MinedPatch, px: u32) -> RgbImage {
    let b = p.patch;
    let view = imageops::crop_imm(image, b.x as u32, b.y as u32, b.size as u32, b.size as u32).to_image();
    imageops::resize(&view, px, px, imageops::FilterType::Nearest)
}

pub(crate) fn save(image: &RgbImage, path: &Path) -> Result<()> {
    crate::io::write_image(image, path)
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

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
