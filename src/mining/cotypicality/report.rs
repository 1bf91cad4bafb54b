//! The report of a co-typicality mining run (the paper's Section 5.1), as a folder a person opens:
//! `elements.csv` (every kept element: its parallel set, source image and label, box, co-typicality
//! and place in the clustering), one strip figure per shown cluster (`strip_NN.png`, NN its rank: a row
//! per member, each row the element's box in every version of its parallel set side by side in label
//! order, the source image's own version framed in red) and `index.html` showing them.
//!
//! The strips need the versions of every element's parallel set, but a run makes thousands of sets one
//! at a time and keeps none of them (see [`super`]). A [`VersionStore`] therefore saves each
//! set's versions as PNGs as the set is made, so memory stays bounded by the miner's kept boxes, and
//! opens the crops again when the report is written.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{CotypicalElement, CotypicalResult, ParallelSet};
use crate::error::{Error, Result};
use crate::image::to_rgb_image;
use crate::mining::patches::PatchBox;
use crate::mining::report::{csv_field, escape, save, write_page};
use image::{imageops, Rgb, RgbImage};

/// A folder of parallel sets' versions: version `v` of set `s` is the 8-bit RGB PNG `{s:05}_{v}.png`.
#[derive(Debug, Clone)]
pub struct VersionStore {
    dir: PathBuf,
}

impl VersionStore {
    /// The store in `dir`, created if missing. Saving a set overwrites that set's versions from an
    /// earlier run.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(VersionStore { dir })
    }

    /// Where version `version` of set `set` is saved.
    pub fn version_path(&self, set: usize, version: usize) -> PathBuf {
        self.dir.join(format!("{set:05}_{version}.png"))
    }

    /// Saves every version of `parallel` as set `set`, in label order.
    pub fn save(&self, set: usize, parallel: &ParallelSet) -> Result<()> {
        for v in 0..parallel.versions.size()[0] {
            save(&to_rgb_image(&parallel.versions.f_narrow(0, v, 1)?)?, &self.version_path(set, v as usize))?;
        }
        Ok(())
    }

    /// Version `version` of set `set`.
    pub fn open(&self, set: usize, version: usize) -> Result<RgbImage> {
        let path = self.version_path(set, version);
        Ok(image::open(&path).map_err(|e| Error::io(&path, e))?.to_rgb8())
    }

    /// The box `patch` of version `version` of set `set`. A box outside the saved image (a store from
    /// another run) is an error, not a silently clipped crop.
    pub fn crop(&self, set: usize, version: usize, patch: &PatchBox) -> Result<RgbImage> {
        let image = self.open(set, version)?;
        let (w, h) = image.dimensions();
        let (x, y, size) = (patch.x as u32, patch.y as u32, patch.size as u32);
        if x + size > w || y + size > h {
            return Err(Error::InvalidData(format!(
                "the box at ({x}, {y}) of side {size} lies outside {} ({w}×{h})",
                self.version_path(set, version).display()
            )));
        }
        Ok(imageops::crop_imm(&image, x, y, size, size).to_image())
    }
}

/// How much of the clustering the report draws.
#[derive(Debug, Clone)]
pub struct ParallelReportOptions {
    /// Strip figures written, one per cluster from the best (32).
    pub strips: usize,
    /// Rows of a strip: the cluster's members closest to its centroid (8).
    pub per_strip: usize,
}

impl Default for ParallelReportOptions {
    fn default() -> Self {
        ParallelReportOptions { strips: 32, per_strip: 8 }
    }
}

/// A parallel set's source image as the report names it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSource {
    /// Its path or name.
    pub name: String,
    /// Its label, as an index into the labels.
    pub label: usize,
}

/// The frame around the source image's own version in a strip.
const SOURCE_FRAME: Rgb<u8> = Rgb([220, 30, 30]);

/// Writes the report of `result` into `out` (created if missing). `sources[s]` is the source of
/// parallel set `s`, `labels` the labels in version order, and `versions` holds every set's versions.
/// Returns the number of strip figures written.
pub fn write_parallel_report(
    result: &CotypicalResult,
    sources: &[ReportSource],
    labels: &[String],
    versions: &VersionStore,
    options: &ParallelReportOptions,
    out: &Path,
) -> Result<usize> {
    check_inputs(result, sources, labels, options)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_elements_csv(result, sources, labels, &out.join("elements.csv"))?;
    let shown = result.clusters.len().min(options.strips);
    for rank in 0..shown {
        let strip = cluster_strip(&strip_members(result, rank, options), sources, labels.len(), versions)?;
        save(&strip, &out.join(strip_name(rank)))?;
    }
    write_index(result, sources, labels, options, shown, &out.join("index.html"))?;
    Ok(shown)
}

/// Refuses results that do not belong to these sources and labels before anything is written.
fn check_inputs(result: &CotypicalResult, sources: &[ReportSource], labels: &[String], options: &ParallelReportOptions) -> Result<()> {
    if options.per_strip == 0 {
        return Err(Error::InvalidArgument("a strip needs at least 1 row (per_strip)".into()));
    }
    if let Some(e) = result.elements.iter().find(|e| e.set >= sources.len()) {
        return Err(Error::InvalidArgument(format!("an element of parallel set {} but only {} sources", e.set, sources.len())));
    }
    if let Some(s) = sources.iter().find(|s| s.label >= labels.len()) {
        return Err(Error::InvalidArgument(format!("source `{}` has label {} but there are {} labels", s.name, s.label, labels.len())));
    }
    Ok(())
}

fn strip_name(rank: usize) -> String {
    format!("strip_{rank:02}.png")
}

/// The members of cluster `rank` shown in its strip, closest to the centroid first.
fn strip_members<'a>(result: &'a CotypicalResult, rank: usize, options: &ParallelReportOptions) -> Vec<&'a CotypicalElement> {
    result.clusters[rank].members.iter().take(options.per_strip).map(|&m| &result.elements[m]).collect()
}

/// A row per member, a column per version; each crop in a cell one pixel wider than the largest box
/// on every side, on a white ground.
fn cluster_strip(members: &[&CotypicalElement], sources: &[ReportSource], versions: usize, store: &VersionStore) -> Result<RgbImage> {
    let cell = members.iter().map(|e| e.patch.size).max().unwrap_or(1) as u32 + 2;
    let mut strip = RgbImage::from_pixel(cell * versions as u32, cell * members.len() as u32, Rgb([255, 255, 255]));
    for (row, element) in members.iter().enumerate() {
        for v in 0..versions {
            let mut crop = store.crop(element.set, v, &element.patch)?;
            if v == sources[element.set].label {
                frame(&mut crop, SOURCE_FRAME);
            }
            imageops::replace(&mut strip, &crop, (v as u32 * cell + 1) as i64, (row as u32 * cell + 1) as i64);
        }
    }
    Ok(strip)
}

/// A 1-pixel frame along the image's edges.
fn frame(image: &mut RgbImage, colour: Rgb<u8>) {
    let (w, h) = image.dimensions();
    for x in 0..w {
        image.put_pixel(x, 0, colour);
        image.put_pixel(x, h - 1, colour);
    }
    for y in 0..h {
        image.put_pixel(0, y, colour);
        image.put_pixel(w - 1, y, colour);
    }
}

/// One row per kept element, in cluster rank order then rank in the cluster.
fn write_elements_csv(result: &CotypicalResult, sources: &[ReportSource], labels: &[String], path: &Path) -> Result<()> {
    let mut csv = String::from("set,image,source_label,x,y,size,cotypicality,cluster_rank,rank_in_cluster,distance\n");
    for e in &result.elements {
        let source = &sources[e.set];
        let p = &e.patch;
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{}",
            e.set,
            csv_field(&source.name),
            csv_field(&labels[source.label]),
            p.x,
            p.y,
            p.size,
            p.score,
            e.cluster_rank,
            e.rank_in_cluster,
            e.distance
        );
    }
    crate::io::write_atomic(path, csv.as_bytes())
}

fn write_index(
    result: &CotypicalResult,
    sources: &[ReportSource],
    labels: &[String],
    options: &ParallelReportOptions,
    shown: usize,
    path: &Path,
) -> Result<()> {
    let columns: Vec<String> = labels.iter().map(|l| escape(l)).collect();
    let mut body = format!(
        "<h1>Co-typical visual elements</h1>\n<p>{} elements from {} parallel sets in {} clusters; {shown} clusters shown, ranked by median \
         co-typicality. Every kept element: <a href=\"elements.csv\">elements.csv</a>.</p>\n\
         <p>Each strip shows a cluster's members closest to its centroid, one per row; the columns are the versions of the member's \
         parallel set in label order ({}), the source image's own framed in red.</p>\n",
        result.elements.len(),
        sources.len(),
        result.clusters.len(),
        columns.join(", ")
    );
    for (rank, cluster) in result.clusters.iter().take(shown).enumerate() {
        let rows = cluster.members.len().min(options.per_strip);
        let _ = write!(
            body,
            "<section id=\"cluster_{rank:02}\"><h2>Cluster {rank}</h2>\n<p>{} elements, median co-typicality {:.4}; {rows} shown.</p>\n\
             <img class=\"strip\" alt=\"members of cluster {rank} in every version\" src=\"{}\"></section>\n",
            cluster.members.len(),
            cluster.median_typicality,
            strip_name(rank)
        );
    }
    write_page(path, "libdiffmine co-typicality report", "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mining::cluster::RankedCluster;
    use tch::Tensor;

    /// Two sets of two 10×8 versions, each version a flat colour (set s, version v: red 100·s + 10·v).
    fn store(dir: &Path) -> VersionStore {
        let store = VersionStore::create(dir.join("versions")).unwrap();
        for set in 0..2 {
            for v in 0..2 {
                let colour = Rgb([(100 * set + 10 * v) as u8, 50, 60]);
                save(&RgbImage::from_pixel(10, 8, colour), &store.version_path(set, v)).unwrap();
            }
        }
        store
    }

    fn element(set: usize, x: usize, size: usize, cluster_rank: usize, rank_in_cluster: usize) -> CotypicalElement {
        CotypicalElement { set, patch: PatchBox { x, y: 1, size, score: 0.5 }, cluster_rank, rank_in_cluster, distance: 0.25 }
    }

    /// Cluster 0: elements of sets 1 and 0 with 3- and 4-pixel boxes; cluster 1: one element.
    fn result() -> CotypicalResult {
        CotypicalResult {
            elements: vec![element(1, 2, 3, 0, 0), element(0, 0, 4, 0, 1), element(0, 5, 4, 1, 0)],
            clusters: vec![
                RankedCluster { id: 1, members: vec![0, 1], median_typicality: 0.5 },
                RankedCluster { id: 0, members: vec![2], median_typicality: 0.5 },
            ],
        }
    }

    fn sources() -> Vec<ReportSource> {
        vec![ReportSource { name: "a, \"b\".png".into(), label: 0 }, ReportSource { name: "c.png".into(), label: 1 }]
    }

    fn labels() -> Vec<String> {
        vec!["cars".into(), "<cats>".into()]
    }

    #[test]
    fn strips_put_each_version_of_a_member_side_by_side_and_frame_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let out = dir.path().join("report");
        let written = write_parallel_report(&result(), &sources(), &labels(), &store, &ParallelReportOptions::default(), &out).unwrap();
        assert_eq!(written, 2);
        let strip = image::open(out.join("strip_00.png")).unwrap().to_rgb8();
        // Cells of 4 + 2 pixels: 2 versions wide, 2 members high.
        assert_eq!(strip.dimensions(), (12, 12));
        let white = Rgb([255, 255, 255]);
        // Row 0: set 1, source label 1, a 3-pixel box in the cell's corner: version 0 plain, version 1
        // framed; the rest of the cell white.
        assert_eq!(*strip.get_pixel(2, 2), Rgb([100, 50, 60]));
        assert_eq!(*strip.get_pixel(1, 1), Rgb([100, 50, 60]));
        assert_eq!(*strip.get_pixel(4, 4), white);
        assert_eq!(*strip.get_pixel(7, 1), SOURCE_FRAME);
        assert_eq!(*strip.get_pixel(8, 2), Rgb([110, 50, 60]));
        // Row 1: set 0, source label 0: version 0 framed, version 1 plain.
        assert_eq!(*strip.get_pixel(1, 7), SOURCE_FRAME);
        assert_eq!(*strip.get_pixel(2, 8), Rgb([0, 50, 60]));
        assert_eq!(*strip.get_pixel(7, 7 + 3), Rgb([10, 50, 60]));
        assert_eq!(*strip.get_pixel(0, 0), white);
        assert_eq!(image::open(out.join("strip_01.png")).unwrap().to_rgb8().dimensions(), (12, 6));
    }

    #[test]
    fn the_csv_lists_every_element_and_the_index_shows_every_strip() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        let options = ParallelReportOptions { strips: 1, per_strip: 1 };
        assert_eq!(write_parallel_report(&result(), &sources(), &labels(), &store(dir.path()), &options, &out).unwrap(), 1);
        let csv = std::fs::read_to_string(out.join("elements.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "set,image,source_label,x,y,size,cotypicality,cluster_rank,rank_in_cluster,distance");
        assert_eq!(lines[1], "1,c.png,<cats>,2,1,3,0.5,0,0,0.25");
        assert_eq!(lines[2], "0,\"a, \"\"b\"\".png\",cars,0,1,4,0.5,0,1,0.25");
        assert_eq!(lines.len(), 4);
        assert_eq!(image::open(out.join("strip_00.png")).unwrap().to_rgb8().dimensions(), (10, 5), "one row of 3-pixel crops");
        assert!(!out.join("strip_01.png").exists());
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.contains("src=\"strip_00.png\"") && !html.contains("strip_01"));
        assert!(html.contains("(cars, &lt;cats&gt;)"));
        assert!(html.contains("3 elements from 2 parallel sets in 2 clusters; 1 clusters shown"));
    }

    #[test]
    fn mismatched_inputs_and_boxes_outside_the_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let out = dir.path().join("report");
        let options = ParallelReportOptions::default();
        let one_source = &sources()[..1];
        let err = write_parallel_report(&result(), one_source, &labels(), &store, &options, &out).unwrap_err();
        assert!(err.to_string().contains("parallel set 1 but only 1 sources"), "{err}");
        let err = write_parallel_report(&result(), &sources(), &labels()[..1], &store, &options, &out).unwrap_err();
        assert!(err.to_string().contains("has label 1 but there are 1 labels"), "{err}");
        let none = ParallelReportOptions { per_strip: 0, ..options.clone() };
        assert!(matches!(write_parallel_report(&result(), &sources(), &labels(), &store, &none, &out), Err(Error::InvalidArgument(_))));
        assert!(!out.exists(), "nothing written for refused inputs");
        let mut outside = result();
        outside.elements[0].patch.x = 8;
        let err = write_parallel_report(&outside, &sources(), &labels(), &store, &options, &out).unwrap_err();
        assert!(matches!(err, Error::InvalidData(_)) && err.to_string().contains("00001_0.png (10×8)"), "{err}");
    }

    #[test]
    fn a_saved_set_opens_as_its_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = VersionStore::create(dir.path().join("nested/versions")).unwrap();
        // Version 0 black, version 1 white, 3×2 each.
        let versions = Tensor::stack(&[Tensor::full([3, 2, 3], -1.0, tch::kind::FLOAT_CPU), Tensor::full([3, 2, 3], 1.0, tch::kind::FLOAT_CPU)], 0);
        store.save(7, &ParallelSet { source: 0, versions }).unwrap();
        assert_eq!(store.version_path(7, 1), dir.path().join("nested/versions/00007_1.png"));
        assert_eq!(store.open(7, 0).unwrap(), RgbImage::from_pixel(3, 2, Rgb([0, 0, 0])));
        assert_eq!(store.crop(7, 1, &PatchBox { x: 1, y: 0, size: 2, score: 0.0 }).unwrap(), RgbImage::from_pixel(2, 2, Rgb([255, 255, 255])));
        assert!(matches!(store.open(8, 0), Err(Error::Io { .. })));
    }
}
