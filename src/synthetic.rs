//! A labelled, radiograph-like image set whose typical elements are known, for tests and demos (the
//! cargo feature `synthetic`; not part of the production library): the data of the embedded
//! default model. Every image is a synthetic frontal chest radiograph (body, lungs, spine,
//! heart, ribs, clavicles, smooth noise, exposure jitter) carrying
//!
//! - exactly one planted element whose shape depends on the label only ([`Motif`]), at a random place
//!   inside the lungs with a random scale, orientation and contrast: what typicality should find;
//! - distractors drawn the same way for every label (ECG electrodes with their wires, a text marker
//!   block): conspicuous but not typical of any label, so a method that only finds salient things fails.
//!
//! The planted element's bounding box is the ground truth, written like ChestX-ray8's
//! `BBox_List_2017.csv` (with a `Data_Entry_2017.csv` beside it), so the evaluation code that reads the
//! real data set reads this one unchanged. Everything follows from the options: the same options give
//! byte-identical files on any machine (all arithmetic is f64 on the CPU, the stream is [`SplitMix64`]).
use std::f64::consts::{FRAC_PI_2, TAU};
use std::path::{Path, PathBuf};

use crate::dicom::{write_grey_image, GreyImageAttributes};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Disease names from ChestX-ray8, one per motif of [`Motif::ALL`] in that order.
pub const DEFAULT_LABELS: [&str; 4] = ["Nodule", "Effusion", "Cardiomegaly", "Pneumothorax"];

/// The header of ChestX-ray8's box list, three empty columns included (the file came out of a
/// spreadsheet whose bracketed header spans four cells).
pub const BBOX_LIST_HEADER: &str = "Image Index,Finding Label,Bbox [x,y,w,h],,,";

/// The header of ChestX-ray8's `Data_Entry_2017.csv`, its trailing empty column included.
pub const DATA_ENTRY_HEADER: &str =
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],";

#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticOptions {
    pub seed: u64,
    pub images_per_label: usize,
    /// Side of the square images in pixels (at least 32); anatomy, elements and distractors scale with it.
    pub size: usize,
    /// The labels; the i-th gets the i-th motif of [`Motif::ALL`] (so at most that many labels).
    pub labels: Vec<String>,
    /// Patient ID of the first image. Images are named `<patient ID:08>_000.png` as in ChestX-ray8;
    /// disjoint ranges keep the names of different sets apart.
    pub first_patient_id: u32,
    /// Probability of each of an image's two ECG electrode slots being filled.
    pub electrode_rate: f64,
    /// Probability that an image carries a text marker block.
    pub marker_rate: f64,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        SyntheticOptions {
            seed: 0,
            images_per_label: 200,
            size: 64,
            labels: DEFAULT_LABELS.iter().map(|l| l.to_string()).collect(),
            first_patient_id: 1,
            electrode_rate: 0.5,
            marker_rate: 0.7,
        }
    }
}

impl SyntheticOptions {
    /// The options of a held-out set for these (training) options: an independent seed, and patient
    /// IDs that follow the training set's, so names never collide.
    pub fn held_out(&self) -> Self {
        SyntheticOptions {
            seed: derived_seed(self.seed, HELD_OUT_STREAM, 0),
            first_patient_id: self.first_patient_id.saturating_add(self.image_count() as u32),
            ..self.clone()
        }
    }

    pub fn image_count(&self) -> usize {
        self.labels.len() * self.images_per_label
    }

    fn validate(&self) -> Result<()> {
        if self.size < 32 {
            return Err(Error::InvalidArgument(format!("synthetic image size {} is below the minimum of 32 pixels", self.size)));
        }
        if self.images_per_label == 0 {
            return Err(Error::InvalidArgument("images per label must be at least 1".into()));
        }
        if self.labels.is_empty() || self.labels.len() > Motif::ALL.len() {
            return Err(Error::InvalidArgument(format!("{} labels given: 1 to {} are supported (one per motif)", self.labels.len(), Motif::ALL.len())));
        }
        for (i, label) in self.labels.iter().enumerate() {
            // A label is a folder name and a CSV field: no separators, no hidden or empty names.
            if label.is_empty() || label.starts_with('.') || label.contains(['/', '\\', ',', '|', '"', '\n', '\r']) {
                return Err(Error::InvalidArgument(format!("label `{label}` cannot be a folder name and a CSV field")));
            }
            if self.labels[..i].contains(label) {
                return Err(Error::InvalidArgument(format!("label `{label}` is given twice")));
            }
        }
        for (name, rate) in [("electrode rate", self.electrode_rate), ("marker rate", self.marker_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::InvalidArgument(format!("{name} {rate} is not a probability")));
            }
        }
        let last_patient = self.first_patient_id as u64 + self.image_count() as u64 - 1;
        if self.first_patient_id == 0 || last_patient > 99_999_999 {
            return Err(Error::InvalidArgument(format!("patient IDs {}..={last_patient} do not fit ChestX-ray8's 8-digit names", self.first_patient_id)));
        }
        Ok(())
    }
}

/// A planted element's bounding box in pixels (x, y of the top-left corner), ChestX-ray8's convention.
/// It holds every pixel the element touches: the element's support grown by its soft edge, rounded
/// outward to thousandths of a pixel (what the CSV stores, so the file and this value agree exactly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlantedBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// The plausible patient metadata of a `Data_Entry_2017.csv` row. Decoration only: nothing in the
/// pixels depends on it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientRecord {
    pub patient_id: u32,
    pub age: u32,
    /// `M` or `F`.
    pub gender: char,
    /// `PA` or `AP`.
    pub view: &'static str,
    pub original_width: u32,
    pub original_height: u32,
    /// Millimetres per pixel of the original, both axes.
    pub pixel_spacing: f64,
}

#[derive(Debug, Clone)]
pub struct SyntheticImage {
    /// ChestX-ray8-style file name, unique across labels: `00000001_000.png`.
    pub name: String,
    pub label: String,
    pub size: usize,
    /// `size` × `size` 8-bit grey pixels, row-major.
    pub pixels: Vec<u8>,
    pub planted: PlantedBox,
    pub patient: PatientRecord,
    /// How many ECG electrodes and text markers the image carries (the shared distractors).
    pub electrodes: usize,
    pub markers: usize,
}

/// One written image: its path relative to the output folder, its label and its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetEntry {
    pub path: PathBuf,
    pub name: String,
    pub label: String,
    pub planted: PlantedBox,
}

#[derive(Debug, Clone)]
pub struct DatasetSummary {
    pub out_dir: PathBuf,
    pub size: usize,
    pub entries: Vec<DatasetEntry>,
}

/// Renders the `index`-th image of the `label_index`-th label.
pub fn generate_image(options: &SyntheticOptions, label_index: usize, index: usize) -> Result<SyntheticImage> {
    options.validate()?;
    if label_index >= options.labels.len() || index >= options.images_per_label {
        return Err(Error::InvalidArgument(format!(
            "image {index} of label {label_index} is outside the set ({} labels × {} images)",
            options.labels.len(),
            options.images_per_label
        )));
    }
    Ok(render(options, label_index, index).0)
}

/// Writes the whole set into `out_dir` (which must be absent or empty, so no stale image from an
/// earlier run can join a label folder):
///
/// - `<label>/<name>.png`: 8-bit greyscale, a folder per label;
/// - `labels.csv`: `path,label` rows, paths relative to `out_dir`;
/// - `BBox_List_2017.csv`: one row per planted element, in ChestX-ray8's exact layout;
/// - `Data_Entry_2017.csv`: one row per image, in ChestX-ray8's exact layout.
pub fn write_dataset(options: &SyntheticOptions, out_dir: &Path) -> Result<DatasetSummary> {
    options.validate()?;
    ensure_empty_folder(out_dir)?;
    let mut images = Vec::with_capacity(options.image_count());
    for (label_index, label) in options.labels.iter().enumerate() {
        let folder = out_dir.join(label);
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        for index in 0..options.images_per_label {
            let image = render(options, label_index, index).0;
            write_png(&image, &folder.join(&image.name))?;
            images.push(image);
        }
    }
    let entries: Vec<DatasetEntry> = images
        .iter()
        .map(|image| DatasetEntry {
            path: Path::new(&image.label).join(&image.name),
            name: image.name.clone(),
            label: image.label.clone(),
            planted: image.planted,
        })
        .collect();
    write_text(&out_dir.join("labels.csv"), &labels_csv(&entries))?;
    write_text(&out_dir.join("BBox_List_2017.csv"), &bbox_list_csv(&entries))?;
    write_text(&out_dir.join("Data_Entry_2017.csv"), &data_entry_csv(&images))?;
    Ok(DatasetSummary { out_dir: out_dir.to_path_buf(), size: options.size, entries })
}

/// Writes the same images as DICOM files, `out_dir/<label>/<name>.dcm` (8-bit MONOCHROME2 Secondary
/// Capture with the Data_Entry's patient attributes), so the DICOM path can be run on the very
/// pixels the PNG set holds. UIDs are derived from the seed: the same options give the same files.
pub fn write_dicom_copies(options: &SyntheticOptions, out_dir: &Path) -> Result<usize> {
    options.validate()?;
    ensure_empty_folder(out_dir)?;
    let mut written = 0;
    for (label_index, label) in options.labels.iter().enumerate() {
        let folder = out_dir.join(label);
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        for index in 0..options.images_per_label {
            let image = render(options, label_index, index).0;
            let stem = image.name.trim_end_matches(".png");
            write_grey_image(&image.pixels, [image.size, image.size], &dicom_attributes(options, &image), &folder.join(format!("{stem}.dcm")))?;
            written += 1;
        }
    }
    Ok(written)
}

fn dicom_attributes(options: &SyntheticOptions, image: &SyntheticImage) -> GreyImageAttributes {
    let p = &image.patient;
    let uid = |purpose: u64| {
        let high = derived_seed(options.seed, UID_STREAM + purpose, p.patient_id as u64);
        let low = derived_seed(options.seed ^ 0x5EED, UID_STREAM + purpose, p.patient_id as u64);
        format!("2.25.{}", ((high as u128) << 64) | low as u128)
    };
    // The original's spacing scaled to the rendered size (the Data_Entry gives the original's).
    let spacing = p.pixel_spacing * p.original_width.max(p.original_height) as f64 / image.size as f64;
    GreyImageAttributes {
        study_instance_uid: uid(0),
        series_instance_uid: uid(1),
        sop_instance_uid: uid(2),
        patient_id: format!("{:08}", p.patient_id),
        patient_sex: p.gender.to_string(),
        patient_age: format!("{:03}Y", p.age),
        modality: "DX".into(),
        view_position: p.view.to_string(),
        pixel_spacing: [spacing, spacing],
    }
}

fn ensure_empty_folder(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(Error::InvalidArgument(format!("{} is not empty: choose a new folder for the synthetic set", dir.display()))),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn write_png(image: &SyntheticImage, path: &Path) -> Result<()> {
    let side = image.size as u32;
    let buffer = image::GrayImage::from_raw(side, side, image.pixels.clone()).ok_or_else(|| Error::InvalidArgument("synthetic image buffer size".into()))?;
    crate::io::write_image(&buffer, path)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::io::write_atomic(path, text.as_bytes())
}

fn labels_csv(entries: &[DatasetEntry]) -> String {
    let mut text = String::from("path,label\n");
    for entry in entries {
        // Forward slashes on every system, so the file is byte-identical everywhere.
        text.push_str(&format!("{}/{},{}\n", entry.label, entry.name, entry.label));
    }
    text
}

fn bbox_list_csv(entries: &[DatasetEntry]) -> String {
    let mut text = format!("{BBOX_LIST_HEADER}\n");
    for entry in entries {
        let b = entry.planted;
        text.push_str(&format!("{},{},{:.3},{:.3},{:.3},{:.3},,,\n", entry.name, entry.label, b.x, b.y, b.w, b.h));
    }
    text
}

fn data_entry_csv(images: &[SyntheticImage]) -> String {
    let mut text = format!("{DATA_ENTRY_HEADER}\n");
    for image in images {
        let p = &image.patient;
        text.push_str(&format!(
            "{},{},0,{},{},{},{},{},{},{},{},\n",
            image.name, image.label, p.patient_id, p.age, p.gender, p.view, p.original_width, p.original_height, p.pixel_spacing, p.pixel_spacing
        ));
    }
    text
}

// ---------------------------------------------------------------------------------------------------
// Random streams

const IMAGE_STREAM: u64 = 1;
const HELD_OUT_STREAM: u64 = 2;
/// DICOM UIDs use this stream and the two after it (study, series, instance).
const UID_STREAM: u64 = 16;

/// An independent seed for one purpose and index: two SplitMix64 mixes, so neighbouring seeds and
/// indices give unrelated streams.
fn derived_seed(seed: u64, purpose: u64, index: u64) -> u64 {
    let first = SplitMix64::new(seed ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64();
    SplitMix64::new(first ^ index).next_u64()
}

fn uniform_in(rng: &mut SplitMix64, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.uniform()
}

fn chance(rng: &mut SplitMix64, probability: f64) -> bool {
    rng.uniform() < probability
}

// ---------------------------------------------------------------------------------------------------
// Rendering

type Point = [f64; 2];

/// The draws happen in a fixed order from one stream per image (anatomy, element, distractors, noise,
/// exposure, metadata), and none of them depends on the label except the motif's shape: the
/// distractors and the anatomy have the same distribution under every label. The planted element comes
/// back beside the image so tests can check the box against the element alone.
fn render(options: &SyntheticOptions, label_index: usize, index: usize) -> (SyntheticImage, PlantedElement) {
    let global_index = label_index * options.images_per_label + index;
    let mut rng = SplitMix64::new(derived_seed(options.seed, IMAGE_STREAM, global_index as u64));
    let size = options.size;
    let anatomy = Anatomy::draw(&mut rng);
    let mut canvas = anatomy.render(size);
    let element = PlantedElement::draw(&mut rng, Motif::ALL[label_index], &anatomy, size);
    element.add_to(&mut canvas, size);
    let bounds = element.bounds();
    let distractors = Distractors::draw(&mut rng, options, &anatomy, &bounds);
    distractors.add_to(&mut canvas, size);
    add_smooth_noise(&mut rng, &mut canvas, size);
    let pixels = expose(&mut rng, &canvas);
    let patient_id = options.first_patient_id + global_index as u32;
    let image = SyntheticImage {
        name: format!("{patient_id:08}_000.png"),
        label: options.labels[label_index].clone(),
        size,
        pixels,
        planted: outward_box(bounds),
        patient: PatientRecord::draw(&mut rng, patient_id),
        electrodes: distractors.electrodes.len(),
        markers: distractors.markers.len(),
    };
    (image, element)
}

/// Pixel (column, row)'s centre in pixel coordinates.
fn pixel_centre(i: usize, size: usize) -> Point {
    [(i % size) as f64 + 0.5, (i / size) as f64 + 0.5]
}

fn smoothstep(edge0: f64, edge1: f64, x: f64) -> f64 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Coverage of a shape at signed distance `sd` (negative inside) with a soft edge `edge` wide on either
/// side: 1 from `edge` inside, exactly 0 from `edge` outside, so the support is the shape grown by `edge`.
fn soft_inside(sd: f64, edge: f64) -> f64 {
    1.0 - smoothstep(-edge, edge, sd)
}

fn rotate(p: Point, angle: f64) -> Point {
    let (s, c) = angle.sin_cos();
    [c * p[0] - s * p[1], s * p[0] + c * p[1]]
}

fn length(p: Point) -> f64 {
    p[0].hypot(p[1])
}

/// Approximate signed distance to a rotated ellipse (exact on the axes; enough for soft anatomy).
fn ellipse_distance(p: Point, centre: Point, half_axes: Point, angle: f64) -> f64 {
    let local = rotate([p[0] - centre[0], p[1] - centre[1]], -angle);
    let q = (local[0] / half_axes[0]).hypot(local[1] / half_axes[1]);
    (q - 1.0) * half_axes[0].min(half_axes[1])
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: Point, a: Point, b: Point) -> f64 {
    let edge = [b[0] - a[0], b[1] - a[1]];
    let w = [p[0] - a[0], p[1] - a[1]];
    let t = ((w[0] * edge[0] + w[1] * edge[1]) / (edge[0] * edge[0] + edge[1] * edge[1]).max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    length([w[0] - edge[0] * t, w[1] - edge[1] * t])
}

// ---------------------------------------------------------------------------------------------------
// The anatomy: a frontal chest radiograph in unit coordinates (x right, y down, the image is [0, 1]²),
// placed on the image with a small random shift, zoom and tilt. The patient's left (heart side) is on
// the image's right, as in a PA view.

struct Anatomy {
    shift: Point,
    zoom: f64,
    tilt: f64,
    /// Half-axes of the image-left and image-right lung.
    lung_half_axes: [Point; 2],
    heart_scale: f64,
    /// Vertical offset of the rib cage, so ribs do not sit at the same rows in every image.
    rib_offset: f64,
    body_half_width: f64,
}

const LUNG_CENTRES: [Point; 2] = [[0.31, 0.47], [0.69, 0.47]];
/// The lungs' tops lean towards the spine.
const LUNG_TILTS: [f64; 2] = [0.12, -0.12];

impl Anatomy {
    fn draw(rng: &mut SplitMix64) -> Self {
        let mut lung = || [0.15 * uniform_in(rng, 0.92, 1.08), 0.29 * uniform_in(rng, 0.92, 1.08)];
        let lung_half_axes = [lung(), lung()];
        Anatomy {
            lung_half_axes,
            shift: [uniform_in(rng, -0.03, 0.03), uniform_in(rng, -0.03, 0.03)],
            zoom: uniform_in(rng, 0.95, 1.05),
            tilt: uniform_in(rng, -0.04, 0.04),
            heart_scale: uniform_in(rng, 0.9, 1.15),
            rib_offset: uniform_in(rng, -0.015, 0.015),
            body_half_width: uniform_in(rng, 0.42, 0.47),
        }
    }

    /// Image unit coordinates of an anatomy point.
    fn to_image(&self, a: Point) -> Point {
        let r = rotate([a[0] - 0.5, a[1] - 0.5], self.tilt);
        [0.5 + self.shift[0] + self.zoom * r[0], 0.5 + self.shift[1] + self.zoom * r[1]]
    }

    /// Anatomy coordinates of an image unit point.
    fn to_anatomy(&self, u: Point) -> Point {
        let r = rotate([(u[0] - 0.5 - self.shift[0]) / self.zoom, (u[1] - 0.5 - self.shift[1]) / self.zoom], -self.tilt);
        [0.5 + r[0], 0.5 + r[1]]
    }

    fn render(&self, size: usize) -> Vec<f64> {
        (0..size * size)
            .map(|i| {
                let p = pixel_centre(i, size);
                self.intensity(self.to_anatomy([p[0] / size as f64, p[1] / size as f64]))
            })
            .collect()
    }

    /// Radiographic brightness (0 air, 1 metal) at an anatomy point: densities add along the beam.
    fn intensity(&self, a: Point) -> f64 {
        let body = self.body_coverage(a);
        let lungs = self.lung_coverage(a);
        let dx = (a[0] - 0.5).abs();
        let mediastinum = soft_inside(dx - (0.05 + 0.03 * smoothstep(0.3, 0.6, a[1])), 0.02);
        let spine = soft_inside(dx - 0.028, 0.01) * (0.7 + 0.3 * (TAU * (a[1] - self.rib_offset) / 0.055).cos().abs());
        let heart = soft_inside(ellipse_distance(a, [0.565, 0.655], [0.16 * self.heart_scale, 0.125 * self.heart_scale], -0.35), 0.03);
        let bones = self.rib_intensity(a, lungs) + clavicle_intensity(a);
        0.04 + body * (0.46 - 0.27 * lungs + 0.17 * mediastinum + 0.08 * spine + 0.2 * heart * (1.0 - 0.5 * mediastinum) + bones)
    }

    /// The torso (a superellipse narrowing to sloping shoulders) and the neck.
    fn body_coverage(&self, a: Point) -> f64 {
        let half_width = self.body_half_width * (0.72 + 0.28 * smoothstep(0.02, 0.32, a[1]));
        let q = (((a[0] - 0.5) / half_width).powi(4) + ((a[1] - 0.66) / 0.56).powi(4)).powf(0.25);
        let torso = soft_inside((q - 1.0) * half_width, 0.03);
        let neck = soft_inside((a[0] - 0.5).abs() - 0.09, 0.02) * soft_inside(a[1] - 0.2, 0.05);
        torso.max(neck)
    }

    fn lung_coverage(&self, a: Point) -> f64 {
        (0..2)
            .map(|side| {
                let distance = ellipse_distance(a, LUNG_CENTRES[side], self.lung_half_axes[side], LUNG_TILTS[side]);
                // Darkest in the lung's middle, fading towards its rim.
                soft_inside(distance, 0.03) * (0.85 + 0.15 * smoothstep(0.0, 0.06, -distance))
            })
            .fold(0.0, f64::max)
    }

    /// Posterior ribs: bands that leave the spine, rise a little and fall laterally, most visible over
    /// the lungs.
    fn rib_intensity(&self, a: Point, lungs: f64) -> f64 {
        let d = (a[0] - 0.5).abs();
        let along = smoothstep(0.03, 0.07, d) * (1.0 - smoothstep(0.36, 0.42, d));
        if along == 0.0 {
            return 0.0;
        }
        let curve = -0.06 * d + 1.1 * d * d;
        (0..9)
            .map(|k| {
                let row = 0.15 + self.rib_offset + 0.056 * k as f64 + curve;
                (-((a[1] - row) / 0.013).powi(2)).exp()
            })
            .sum::<f64>()
            * 0.05
            * along
            * (0.35 + 0.65 * lungs)
    }

    /// A point inside one of the lungs (the inner 70 % of its ellipse), in image pixel coordinates.
    fn point_in_lungs(&self, rng: &mut SplitMix64, size: usize) -> Point {
        let side = rng.below(2) as usize;
        let (u, v) = loop {
            let (u, v) = (uniform_in(rng, -1.0, 1.0), uniform_in(rng, -1.0, 1.0));
            if u * u + v * v <= 1.0 {
                break (u, v);
            }
        };
        let [ax, ay] = self.lung_half_axes[side];
        let offset = rotate([0.7 * ax * u, 0.7 * ay * v], LUNG_TILTS[side]);
        let image = self.to_image([LUNG_CENTRES[side][0] + offset[0], LUNG_CENTRES[side][1] + offset[1]]);
        [image[0] * size as f64, image[1] * size as f64]
    }
}

fn clavicle_intensity(a: Point) -> f64 {
    let d = (a[0] - 0.5).abs() - 0.04;
    if !(0.0..0.3).contains(&d) {
        return 0.0;
    }
    let row = 0.2 - 0.12 * d + 0.45 * d * d;
    0.12 * (-((a[1] - row) / 0.014).powi(2)).exp() * smoothstep(0.0, 0.03, d) * (1.0 - smoothstep(0.25, 0.3, d))
}

// ---------------------------------------------------------------------------------------------------
// Planted elements

/// The element planted for a label: round, with a radial profile of its own. Each label's profile
/// differs from every other's in sign somewhere (bright or lucent centre, bright or lucent rim), so
/// they stay apart when averaged over the elements' random scales and orientations. That average is
/// what a small UNet learns to tie to a caption first: with outlines that only orientation tells apart
/// (bars, crosses, triangles at any angle), the demo model learnt one label of four, the round one
/// (models/demo/EVALUATION.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motif {
    /// A solid bright disc: a round opacity.
    Disc,
    /// A bright ring around a centre left as it was.
    Ring,
    /// A bright core inside a lucent ring.
    Target,
    /// A lucent (darker) disc: air where tissue should be.
    DarkDisc,
    /// A lucent ring around a centre left as it was.
    DarkRing,
}

/// A radial band of the unit disc (`inner` 0: a full disc) drawn at one strength: 1 adds the element's
/// full contrast, a negative strength darkens.
struct Layer {
    strength: f64,
    inner: f64,
    outer: f64,
}

impl Layer {
    /// Signed distance from a point at `radius` (local units) to the band, negative inside.
    fn distance(&self, radius: f64) -> f64 {
        if self.inner > 0.0 {
            (self.inner - radius).max(radius - self.outer)
        } else {
            radius - self.outer
        }
    }
}

impl Motif {
    pub const ALL: [Motif; 5] = [Motif::Disc, Motif::Ring, Motif::Target, Motif::DarkDisc, Motif::DarkRing];

    fn layers(self) -> Vec<Layer> {
        let (disc, ring) = ((0.0, 0.8), (0.48, 0.92));
        let layer = |strength: f64, (inner, outer): (f64, f64)| Layer { strength, inner, outer };
        match self {
            Motif::Disc => vec![layer(1.0, disc)],
            Motif::Ring => vec![layer(1.0, ring)],
            Motif::Target => vec![layer(1.0, (0.0, 0.36)), layer(-0.8, ring)],
            Motif::DarkDisc => vec![layer(-1.0, disc)],
            Motif::DarkRing => vec![layer(-1.0, ring)],
        }
    }
}

/// A motif placed on the image: the local unit disc maps to a disc of `scale` pixels around `centre`;
/// `amplitude` is the brightness it adds (or takes, where a layer darkens).
struct PlantedElement {
    layers: Vec<Layer>,
    centre: Point,
    scale: f64,
    amplitude: f64,
    /// Change of the brightness per local unit, in image axes: a density that varies across the element
    /// along a random direction (the element's orientation), as in real tissue, instead of a flat stamp
    /// (at most ±25 % at the rim).
    density_slope: Point,
    /// Half-width of the soft edge in pixels.
    edge: f64,
}

impl PlantedElement {
    fn draw(rng: &mut SplitMix64, motif: Motif, anatomy: &Anatomy, size: usize) -> Self {
        let pixel_scale = size as f64 / 64.0;
        let centre = anatomy.point_in_lungs(rng, size);
        let mut element = PlantedElement {
            layers: motif.layers(),
            centre,
            scale: uniform_in(rng, 5.0, 9.5) * pixel_scale,
            amplitude: uniform_in(rng, 0.2, 0.3),
            density_slope: rotate([uniform_in(rng, 0.0, 0.25), 0.0], uniform_in(rng, 0.0, TAU)),
            edge: 0.8 * pixel_scale,
        };
        element.keep_inside(size as f64);
        element
    }

    /// Moves the element so that its box lies inside the image (with a pixel to spare); a lung near the
    /// border could otherwise push a large element out.
    fn keep_inside(&mut self, size: f64) {
        let [x0, y0, x1, y1] = self.bounds();
        for (axis, low, high) in [(0, x0, x1), (1, y0, y1)] {
            self.centre[axis] += (1.0 - low).max(0.0) - (high - (size - 1.0)).max(0.0);
        }
    }

    /// Coverage in [-1, 1] at a pixel-coordinate point: the layer of largest magnitude there (negative
    /// where a lucent layer wins).
    fn coverage(&self, p: Point) -> f64 {
        let radius = length([p[0] - self.centre[0], p[1] - self.centre[1]]) / self.scale;
        self.layers.iter().map(|layer| layer.strength * soft_inside(layer.distance(radius) * self.scale, self.edge)).fold(0.0, |strongest, value| {
            if value.abs() > strongest.abs() {
                value
            } else {
                strongest
            }
        })
    }

    fn add_to(&self, canvas: &mut [f64], size: usize) {
        for (i, value) in canvas.iter_mut().enumerate() {
            let p = pixel_centre(i, size);
            let offset = [(p[0] - self.centre[0]) / self.scale, (p[1] - self.centre[1]) / self.scale];
            let density = 1.0 + offset[0] * self.density_slope[0] + offset[1] * self.density_slope[1];
            *value += self.amplitude * density * self.coverage(p);
        }
    }

    /// [x0, y0, x1, y1] in pixels: the outermost layer's extent grown by the soft edge (outside it the
    /// coverage is exactly zero).
    fn bounds(&self) -> [f64; 4] {
        let outer = self.layers.iter().map(|layer| layer.outer).fold(0.0, f64::max);
        let reach = outer * self.scale + self.edge;
        [self.centre[0] - reach, self.centre[1] - reach, self.centre[0] + reach, self.centre[1] + reach]
    }
}

/// The box rounded outward to thousandths of a pixel, so the CSV's three decimals still cover it.
fn outward_box([x0, y0, x1, y1]: [f64; 4]) -> PlantedBox {
    let (left, top) = ((x0 * 1000.0).floor(), (y0 * 1000.0).floor());
    let (right, bottom) = ((x1 * 1000.0).ceil(), (y1 * 1000.0).ceil());
    PlantedBox { x: left / 1000.0, y: top / 1000.0, w: (right - left) / 1000.0, h: (bottom - top) / 1000.0 }
}

// ---------------------------------------------------------------------------------------------------
// Distractors: drawn the same way under every label, kept off the planted element.

/// An ECG electrode: a metal snap on a faint round pad, with a lead wire running off the image.
struct Electrode {
    centre: Point,
    wire: Vec<Point>,
}

/// A block of 3 × 5 glyphs (the side or technologist marker of real radiographs), top-left at
/// `origin`, `cell` pixels per glyph pixel.
struct Marker {
    origin: [usize; 2],
    cell: usize,
    glyphs: Vec<[u8; 5]>,
}

struct Distractors {
    electrodes: Vec<Electrode>,
    markers: Vec<Marker>,
}

/// Glyph rows, three bits each (4 = left column): L, R, P, A, 1, 2, 7.
const GLYPHS: [[u8; 5]; 7] = [[4, 4, 4, 4, 7], [6, 5, 6, 5, 5], [6, 5, 6, 4, 4], [2, 5, 7, 5, 5], [2, 6, 2, 2, 7], [6, 1, 2, 4, 7], [7, 1, 2, 2, 2]];

/// Placement attempts before a distractor is left out; with the planted box under a tenth of the image
/// this almost never happens, and then under every label alike.
const PLACEMENT_ATTEMPTS: usize = 32;

impl Distractors {
    fn draw(rng: &mut SplitMix64, options: &SyntheticOptions, anatomy: &Anatomy, planted: &[f64; 4]) -> Self {
        let size = options.size as f64;
        let pixel_scale = size / 64.0;
        let mut electrodes = Vec::new();
        for _ in 0..2 {
            if chance(rng, options.electrode_rate) {
                let reach = 4.0 * pixel_scale;
                let centre = (0..PLACEMENT_ATTEMPTS)
                    .map(|_| electrode_site(rng, anatomy, size))
                    .find(|c| !overlaps(planted, [c[0] - reach, c[1] - reach, c[0] + reach, c[1] + reach]));
                if let Some(centre) = centre {
                    electrodes.push(Electrode { centre, wire: lead_wire(rng, centre, size) });
                }
            }
        }
        let mut markers = Vec::new();
        if chance(rng, options.marker_rate) {
            let cell = pixel_scale.round().max(1.0) as usize;
            let glyphs: Vec<[u8; 5]> = (0..2 + rng.below(3)).map(|_| GLYPHS[rng.below(GLYPHS.len() as u64) as usize]).collect();
            let (width, height) = ((4 * glyphs.len() - 1) * cell, 5 * cell);
            let origin = (0..PLACEMENT_ATTEMPTS)
                .map(|_| [1 + rng.below((options.size - width - 2) as u64) as usize, 1 + rng.below((options.size - height - 2) as u64) as usize])
                .find(|o| !overlaps(planted, [o[0] as f64 - 1.0, o[1] as f64 - 1.0, (o[0] + width + 1) as f64, (o[1] + height + 1) as f64]));
            if let Some(origin) = origin {
                markers.push(Marker { origin, cell, glyphs });
            }
        }
        Distractors { electrodes, markers }
    }

    fn add_to(&self, canvas: &mut [f64], size: usize) {
        let pixel_scale = size as f64 / 64.0;
        for electrode in &self.electrodes {
            electrode.add_to(canvas, size, pixel_scale);
        }
        for marker in &self.markers {
            marker.add_to(canvas, size);
        }
    }
}

/// A point on the chest wall region (anywhere over the torso, lungs included), in pixels.
fn electrode_site(rng: &mut SplitMix64, anatomy: &Anatomy, size: f64) -> Point {
    let u = anatomy.to_image([uniform_in(rng, 0.14, 0.86), uniform_in(rng, 0.22, 0.9)]);
    [u[0] * size, u[1] * size]
}

/// A gently curved wire from the electrode towards and past the image border, as a polyline.
fn lead_wire(rng: &mut SplitMix64, start: Point, size: f64) -> Vec<Point> {
    let direction = uniform_in(rng, 0.0, TAU);
    let reach = size;
    let end = [start[0] + reach * direction.cos(), start[1] + reach * direction.sin()];
    let bend = rotate([uniform_in(rng, -0.25, 0.25) * reach, 0.0], direction + FRAC_PI_2);
    let control = [(start[0] + end[0]) / 2.0 + bend[0], (start[1] + end[1]) / 2.0 + bend[1]];
    (0..=24)
        .map(|k| {
            let t = k as f64 / 24.0;
            let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
            [a * start[0] + b * control[0] + c * end[0], a * start[1] + b * control[1] + c * end[1]]
        })
        .collect()
}

fn overlaps(a: &[f64; 4], b: [f64; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

impl Electrode {
    fn add_to(&self, canvas: &mut [f64], size: usize, pixel_scale: f64) {
        for (i, value) in canvas.iter_mut().enumerate() {
            let p = pixel_centre(i, size);
            let from_centre = length([p[0] - self.centre[0], p[1] - self.centre[1]]);
            let wire = self.wire.windows(2).map(|s| segment_distance(p, s[0], s[1])).fold(f64::INFINITY, f64::min);
            *value += 0.12 * soft_inside(from_centre - 3.5 * pixel_scale, 0.6 * pixel_scale) + 0.25 * soft_inside(wire - 0.35 * pixel_scale, 0.5 * pixel_scale);
            // Metal stops the beam: the snap is white whatever lies under it.
            let snap = soft_inside(from_centre - 1.6 * pixel_scale, 0.6 * pixel_scale);
            *value += (0.97 - *value).max(0.0) * snap;
        }
    }
}

impl Marker {
    fn add_to(&self, canvas: &mut [f64], size: usize) {
        for (g, rows) in self.glyphs.iter().enumerate() {
            for (row, bits) in rows.iter().enumerate() {
                for column in (0..3).filter(|c| bits & (4 >> c) != 0) {
                    let (x, y) = (self.origin[0] + (4 * g + column) * self.cell, self.origin[1] + row * self.cell);
                    for dy in 0..self.cell {
                        for dx in 0..self.cell {
                            canvas[(y + dy) * size + x + dx] = 0.93;
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Noise, exposure and metadata

/// Low-frequency mottle (two octaves of smoothly interpolated value noise), as film and scatter give.
fn add_smooth_noise(rng: &mut SplitMix64, canvas: &mut [f64], size: usize) {
    for (cells, amplitude) in [(4usize, 0.03), (9, 0.015)] {
        let grid: Vec<f64> = (0..(cells + 1) * (cells + 1)).map(|_| rng.normal()).collect();
        for (i, value) in canvas.iter_mut().enumerate() {
            let p = pixel_centre(i, size);
            let (gx, gy) = (p[0] / size as f64 * cells as f64, p[1] / size as f64 * cells as f64);
            let (ix, iy) = ((gx as usize).min(cells - 1), (gy as usize).min(cells - 1));
            let (fx, fy) = (smoothstep(0.0, 1.0, gx - ix as f64), smoothstep(0.0, 1.0, gy - iy as f64));
            let at = |x: usize, y: usize| grid[y * (cells + 1) + x];
            let top = at(ix, iy) * (1.0 - fx) + at(ix + 1, iy) * fx;
            let bottom = at(ix, iy + 1) * (1.0 - fx) + at(ix + 1, iy + 1) * fx;
            *value += amplitude * (top * (1.0 - fy) + bottom * fy);
        }
    }
}

/// Global exposure (gamma, contrast, brightness) drawn per image, then quantum grain, then 8 bits.
fn expose(rng: &mut SplitMix64, canvas: &[f64]) -> Vec<u8> {
    let gamma = uniform_in(rng, 0.85, 1.2);
    let contrast = uniform_in(rng, 0.85, 1.15);
    let brightness = uniform_in(rng, -0.05, 0.05);
    canvas
        .iter()
        .map(|&v| {
            let exposed = 0.5 + contrast * (v.clamp(0.0, 1.0).powf(gamma) - 0.5) + brightness + 0.012 * rng.normal();
            (exposed.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect()
}

/// Original sizes and pixel spacings that occur in ChestX-ray8.
const ORIGINAL_SIZES: [(u32, u32); 4] = [(2500, 2048), (2048, 2500), (2992, 2991), (3056, 2544)];
const PIXEL_SPACINGS: [f64; 3] = [0.143, 0.139, 0.168];

impl PatientRecord {
    fn draw(rng: &mut SplitMix64, patient_id: u32) -> Self {
        let (original_width, original_height) = ORIGINAL_SIZES[rng.below(ORIGINAL_SIZES.len() as u64) as usize];
        PatientRecord {
            patient_id,
            age: 18 + rng.below(70) as u32,
            gender: if chance(rng, 0.5) { 'M' } else { 'F' },
            view: if chance(rng, 0.6) { "PA" } else { "AP" },
            original_width,
            original_height,
            pixel_spacing: PIXEL_SPACINGS[rng.below(PIXEL_SPACINGS.len() as u64) as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_options() -> SyntheticOptions {
        SyntheticOptions { seed: 7, images_per_label: 6, ..SyntheticOptions::default() }
    }

    fn folder_bytes(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    files.push((path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap()));
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn the_same_options_write_byte_identical_files() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write_dataset(&small_options(), a.path()).unwrap();
        write_dataset(&small_options(), b.path()).unwrap();
        let (files_a, files_b) = (folder_bytes(a.path()), folder_bytes(b.path()));
        assert_eq!(files_a.len(), 4 * 6 + 3);
        assert!(files_a == files_b, "two runs with the same options differ");
    }

    #[test]
    fn another_seed_and_the_held_out_split_give_other_images_and_names() {
        let train = small_options();
        let held_out = train.held_out();
        assert_ne!(held_out.seed, train.seed);
        let (a, b) = (render(&train, 1, 2).0, render(&held_out, 1, 2).0);
        assert_ne!(a.pixels, b.pixels);
        let train_names: Vec<String> = (0..4).flat_map(|l| (0..6).map(move |i| (l, i))).map(|(l, i)| render(&train, l, i).0.name).collect();
        assert!(!train_names.contains(&b.name), "held-out name {} repeats a training name", b.name);
    }

    #[test]
    fn the_box_lies_inside_the_image_and_tightly_covers_the_element() {
        let all_motifs = (0..Motif::ALL.len()).map(|i| format!("Label{i}")).collect();
        let options = SyntheticOptions { images_per_label: 40, labels: all_motifs, ..small_options() };
        let size = options.size;
        for label_index in 0..options.labels.len() {
            for index in 0..options.images_per_label {
                let (image, element) = render(&options, label_index, index);
                let b = image.planted;
                assert!(b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= size as f64 && b.y + b.h <= size as f64, "{b:?} leaves the image");
                let lit: Vec<Point> = (0..size * size).map(|i| pixel_centre(i, size)).filter(|&p| element.coverage(p) != 0.0).collect();
                assert!(!lit.is_empty());
                for p in &lit {
                    assert!(p[0] >= b.x && p[0] <= b.x + b.w && p[1] >= b.y && p[1] <= b.y + b.h, "{} pixel {p:?} outside {b:?}", image.name);
                }
                // Tight: the lit pixel centres reach to within a pixel of every side of the box.
                let reach = |f: fn(&Point) -> f64| lit.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
                let ((x0, x1), (y0, y1)) = (reach(|p| p[0]), reach(|p| p[1]));
                for gap in [x0 - b.x, b.x + b.w - x1, y0 - b.y, b.y + b.h - y1] {
                    assert!(gap <= 1.5, "{} box {b:?} is loose around pixels {x0}..{x1} × {y0}..{y1}", image.name);
                }
                let side = b.w.max(b.h);
                assert!((9.0..=22.0).contains(&side), "{} element spans {side} px", image.name);
            }
        }
    }

    /// A motif `scale` pixels in radius at the centre of a 64-pixel image.
    fn centred(motif: Motif, scale: f64) -> PlantedElement {
        PlantedElement { layers: motif.layers(), centre: [32.0, 32.0], scale, amplitude: 1.0, density_slope: [0.0, 0.0], edge: 0.8 }
    }

    /// What a model sees of a motif before it knows the element's pose: its coverage averaged over the
    /// scales `PlantedElement::draw` draws from (5 to 9.5 px).
    fn scale_averaged(motif: Motif) -> Vec<f64> {
        let size = 64;
        let scales: Vec<f64> = (0..10).map(|k| 5.0 + 0.5 * k as f64).collect();
        let mut mean = vec![0.0; size * size];
        for &scale in &scales {
            let element = centred(motif, scale);
            for (i, m) in mean.iter_mut().enumerate() {
                *m += element.coverage(pixel_centre(i, size)) / scales.len() as f64;
            }
        }
        mean
    }

    #[test]
    fn motifs_stay_apart_when_averaged_over_their_scales() {
        let averages: Vec<Vec<f64>> = Motif::ALL.iter().map(|&m| scale_averaged(m)).collect();
        for a in 0..averages.len() {
            for b in 0..a {
                let difference: f64 = averages[a].iter().zip(&averages[b]).map(|(x, y)| (x - y).abs()).sum();
                let mass = |v: &[f64]| v.iter().map(|x| x.abs()).sum::<f64>();
                let smaller = mass(&averages[a]).min(mass(&averages[b]));
                assert!(difference > 0.4 * smaller, "{:?} and {:?} differ by {difference:.1} of {smaller:.1}", Motif::ALL[a], Motif::ALL[b]);
            }
        }
    }

    #[test]
    fn lucent_motifs_darken_and_bright_ones_brighten_their_centre() {
        let centre_of = |m: Motif| centred(m, 8.0).coverage([32.0, 32.0]);
        assert_eq!(centre_of(Motif::Disc), 1.0);
        assert_eq!(centre_of(Motif::Target), 1.0);
        assert_eq!(centre_of(Motif::DarkDisc), -1.0);
        assert_eq!(centre_of(Motif::Ring), 0.0, "a ring leaves its centre as it was");
        assert_eq!(centre_of(Motif::DarkRing), 0.0);
        // On the rim (radius 0.7 of the scale) the target's lucent ring wins.
        assert!((centred(Motif::Target, 8.0).coverage([32.0 + 5.6, 32.0]) + 0.8).abs() < 1e-9);
    }

    #[test]
    fn distractors_come_at_the_same_rate_under_every_label() {
        let options = SyntheticOptions { images_per_label: 300, size: 32, ..small_options() };
        let expected_electrodes = 2.0 * options.electrode_rate;
        for label_index in 0..options.labels.len() {
            let images: Vec<SyntheticImage> = (0..options.images_per_label).map(|i| render(&options, label_index, i).0).collect();
            let electrodes = images.iter().map(|im| im.electrodes).sum::<usize>() as f64 / images.len() as f64;
            let markers = images.iter().map(|im| im.markers).sum::<usize>() as f64 / images.len() as f64;
            assert!((electrodes - expected_electrodes).abs() < 0.15, "label {label_index}: {electrodes} electrodes per image");
            assert!((markers - options.marker_rate).abs() < 0.1, "label {label_index}: {markers} markers per image");
        }
    }

    #[test]
    fn the_csv_files_have_chestxray8_layouts_and_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        let options = small_options();
        let summary = write_dataset(&options, dir.path()).unwrap();
        assert_eq!(summary.entries.len(), options.image_count());

        let boxes = std::fs::read_to_string(dir.path().join("BBox_List_2017.csv")).unwrap();
        let mut lines = boxes.lines();
        assert_eq!(lines.next(), Some("Image Index,Finding Label,Bbox [x,y,w,h],,,"));
        for (line, entry) in lines.zip(&summary.entries) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 9, "{line}");
            assert_eq!(&fields[6..], ["", "", ""]);
            assert_eq!((fields[0], fields[1]), (entry.name.as_str(), entry.label.as_str()));
            let numbers: Vec<f64> = fields[2..6].iter().map(|f| f.parse().unwrap()).collect();
            assert_eq!(numbers, [entry.planted.x, entry.planted.y, entry.planted.w, entry.planted.h]);
        }
        assert_eq!(boxes.lines().count(), 1 + summary.entries.len());

        let data = std::fs::read_to_string(dir.path().join("Data_Entry_2017.csv")).unwrap();
        let mut lines = data.lines();
        assert_eq!(
            lines.next(),
            Some("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
        );
        for (line, entry) in lines.zip(&summary.entries) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 12, "{line}");
            assert_eq!((fields[0], fields[1], fields[2], fields[11]), (entry.name.as_str(), entry.label.as_str(), "0", ""));
            let patient: u32 = fields[3].parse().unwrap();
            assert_eq!(entry.name, format!("{patient:08}_000.png"));
            assert!(["M", "F"].contains(&fields[5]) && ["PA", "AP"].contains(&fields[6]), "{line}");
            for number in &fields[7..11] {
                number.parse::<f64>().unwrap();
            }
        }

        let set = crate::dataset::LabelledSet::open(&dir.path().join("labels.csv")).unwrap();
        let folders = crate::dataset::LabelledSet::open(dir.path()).unwrap();
        assert_eq!(set.items.len(), options.image_count());
        for item in &set.items {
            assert!(item.path.is_file() && folders.items.contains(item), "{:?}", item.path);
        }
        let mut labels = options.labels.clone();
        labels.sort();
        assert_eq!(set.labels(), labels);
    }

    #[test]
    fn a_folder_with_files_in_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.png"), b"").unwrap();
        let err = write_dataset(&small_options(), dir.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let too_many = SyntheticOptions { labels: (0..6).map(|i| format!("L{i}")).collect(), ..small_options() };
        let bad_name = SyntheticOptions { labels: vec!["a/b".into()], ..small_options() };
        let twice = SyntheticOptions { labels: vec!["Mass".into(), "Mass".into()], ..small_options() };
        let tiny = SyntheticOptions { size: 16, ..small_options() };
        for options in [too_many, bad_name, twice, tiny] {
            assert!(matches!(generate_image(&options, 0, 0), Err(Error::InvalidArgument(_))), "{options:?}");
        }
    }
}
