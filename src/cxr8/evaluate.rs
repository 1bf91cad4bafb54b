//! The ChestX-ray8 evaluation loop: for each boxed image and disease, the typicality map of the image
//! under "Chest X-Ray with {disease}." against "Chest X-Ray." at the working size, from a finetuned
//! model and optionally a baseline, scored against the disease's boxes; plus overlay images of each
//! disease's best and worst case.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::metrics::auc_pr;
use super::report::{ImageResult, Report};
use super::tables::{boxes_by_image, boxes_confirmed_by, canonical_finding, read_bbox_list, read_data_entry, BoundingBox, BoxEntry, BOXED_DISEASES};
use crate::dicom::{open_image, DicomOptions};
use crate::error::{Error, Result};
use crate::heatmap;
use crate::model::StableDiffusion;
use crate::typicality::{typicality, LatentMode, TypicalityOptions};

/// The caption of an X-ray with `disease`, as the model is finetuned with ("Chest X-Ray with {disease}.").
pub fn prompt_for(disease: &str) -> String {
    format!("Chest X-Ray with {disease}.")
}
pub const NULL_PROMPT: &str = "Chest X-Ray.";

#[derive(Debug, Clone)]
pub struct EvaluationOptions {
    /// Side the images are resized to (their shorter side), and the maps' size: 512 as the authors.
    pub working_size: usize,
    /// Canonical disease names to evaluate (default: the 8 with boxes).
    pub diseases: Vec<String>,
    /// At most this many image–disease pairs, in image-name order (None: all).
    pub limit: Option<usize>,
    /// Typicality samples N per map (default 100).
    pub samples: usize,
    /// Range of t as fractions of the training steps (default the full [0, 1)).
    pub t_min: f64,
    pub t_max: f64,
    pub seed: u64,
    /// Samples per UNet call.
    pub batch: usize,
}

impl Default for EvaluationOptions {
    fn default() -> Self {
        EvaluationOptions {
            working_size: 512,
            diseases: BOXED_DISEASES.iter().map(|d| d.to_string()).collect(),
            limit: None,
            samples: 100,
            t_min: 0.0,
            t_max: 1.0,
            seed: 42,
            batch: 10,
        }
    }
}

impl EvaluationOptions {
    /// Checks what the caller asked for before any work: at least one disease, each one ChestX-ray8
    /// has boxes for (as the data entry or the box list names it). An unknown name would otherwise
    /// match no box and give an empty report.
    pub fn validate(&self) -> Result<()> {
        if self.diseases.is_empty() {
            return Err(Error::InvalidArgument("no disease to evaluate".into()));
        }
        match self.diseases.iter().find(|d| !BOXED_DISEASES.contains(&canonical_finding(d))) {
            Some(unknown) => Err(Error::InvalidArgument(format!("unknown disease {unknown:?}: ChestX-ray8 has boxes for {}", BOXED_DISEASES.join(", ")))),
            None => Ok(()),
        }
    }
}

/// One image–disease pair to evaluate.
struct Case<'a> {
    image: &'a str,
    disease: &'a str,
    boxes: &'a [BoundingBox],
}

/// A rendered case kept for the overlays: the image at the working size and the finetuned map.
#[derive(Clone)]
struct Shown {
    ap: f64,
    image: String,
    rgb: Vec<u8>,
    map: Vec<f32>,
    size: [usize; 2],
    boxes: Vec<BoundingBox>,
}

pub struct Evaluation {
    pub results: Vec<ImageResult>,
    /// Per disease: (best, worst) case by the finetuned model's average precision.
    extremes: BTreeMap<String, (Shown, Shown)>,
}

/// The files of an evaluation run: ChestX-ray8's images folder and tables, and the report folder.
#[derive(Debug, Clone, Copy)]
pub struct EvaluationFiles<'a> {
    pub images: &'a Path,
    pub bbox_list: &'a Path,
    /// When given, only the boxes whose image it lists with the boxed finding are evaluated.
    pub data_entry: Option<&'a Path>,
    pub out: &'a Path,
}

/// What [`evaluate_files`] did.
#[derive(Debug, Clone)]
pub struct EvaluationRun {
    pub report: Report,
    pub results: Vec<ImageResult>,
    pub overlays: Vec<PathBuf>,
    /// Boxes left out because the data entry does not confirm them.
    pub unconfirmed_boxes: usize,
}

/// The whole evaluation from files to a report folder, as the CLI, C and Python run it: reads the
/// tables, evaluates, writes `report.md`/`.csv`/`.json` and `overlays/` into `files.out`.
pub fn evaluate_files(
    finetuned: &StableDiffusion,
    baseline: Option<&StableDiffusion>,
    files: &EvaluationFiles,
    options: &EvaluationOptions,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<EvaluationRun> {
    if files.out.as_os_str().is_empty() {
        return Err(Error::InvalidArgument("the report folder path is empty".into()));
    }
    options.validate()?;
    let mut boxes = read_bbox_list(files.bbox_list)?;
    let mut unconfirmed_boxes = 0;
    if let Some(path) = files.data_entry {
        let (confirmed, unconfirmed) = boxes_confirmed_by(boxes, &read_data_entry(path)?);
        if let Some(first) = unconfirmed.first() {
            tracing::warn!(
                "{} boxes left out: {} does not list their image with that finding (first: {} {})",
                unconfirmed.len(),
                path.display(),
                first.image,
                first.finding
            );
        }
        (boxes, unconfirmed_boxes) = (confirmed, unconfirmed.len());
    }
    let evaluation = evaluate(finetuned, baseline, files.images, &boxes, options, progress)?;
    let report = Report::from_results(&evaluation.results);
    report.write(&evaluation.results, files.out)?;
    let overlays = evaluation.write_overlays(&files.out.join("overlays"))?;
    Ok(EvaluationRun { report, results: evaluation.results, overlays, unconfirmed_boxes })
}

/// Evaluates the images under `images_dir` (PNG, JPEG or DICOM, named as in the box list, directly in
/// it or in subfolders: NIH ships them in `images_001/images/` … `images_012/images/`). `progress` gets
/// (maps done, maps in all) after each map; returning false cancels.
pub fn evaluate(
    finetuned: &StableDiffusion,
    baseline: Option<&StableDiffusion>,
    images_dir: &Path,
    boxes: &[BoxEntry],
    options: &EvaluationOptions,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Evaluation> {
    options.validate()?;
    let by_image = boxes_by_image(boxes);
    let files = image_files(images_dir)?;
    let cases: Vec<Case> = by_image
        .iter()
        .flat_map(|(image, diseases)| diseases.iter().map(move |(disease, boxes)| Case { image, disease, boxes }))
        .filter(|c| options.diseases.iter().any(|d| canonical_finding(d) == c.disease))
        .take(options.limit.unwrap_or(usize::MAX))
        .collect();
    let models: Vec<&StableDiffusion> = std::iter::once(finetuned).chain(baseline).collect();
    let total = (cases.len() * models.len()) as u64;
    let mut evaluation = Evaluation { results: Vec::new(), extremes: BTreeMap::new() };
    for (i, case) in cases.iter().enumerate() {
        let path = files.find(case.image).ok_or_else(|| {
            Error::InvalidData(format!("{}: no image named {} (or of that stem) under it (named in the box list)", images_dir.display(), case.image))
        })?;
        let image = open_image(path, &DicomOptions::default())?;
        let input = image.view().to_model_input_resized(Some(options.working_size))?;
        let (_, _, height, width) = input.size4()?;
        let size = [width as usize, height as usize];
        let scaled: Vec<BoundingBox> = case.boxes.iter().map(|b| b.scaled([image.width, image.height], size)).collect();
        let mut figures = Vec::new();
        for (m, model) in models.iter().enumerate() {
            let map = disease_map(model, &input, case.disease, options)?;
            figures.push(auc_pr(&map, size[0], size[1], &scaled, &path.display().to_string())?);
            if m == 0 {
                if let Some(f) = figures[0] {
                    let shown =
                        Shown { ap: f.average_precision, image: case.image.to_string(), rgb: crate::image::to_rgb8(&input)?, map, size, boxes: scaled.clone() };
                    evaluation.keep_extreme(case.disease, shown);
                }
            }
            if !progress((i * models.len() + m + 1) as u64, total) {
                return Err(Error::Cancelled);
            }
        }
        evaluation.results.push(ImageResult {
            image: case.image.to_string(),
            disease: case.disease.to_string(),
            finetuned: figures[0],
            baseline: figures.get(1).copied().flatten(),
        });
    }
    Ok(evaluation)
}

/// The files under the images folder, by file name and by stem: the box list names NIH's PNGs, and a
/// PACS export of the same images names them `<stem>.dcm` or `<stem>` alone.
struct ImageFiles {
    by_name: BTreeMap<String, PathBuf>,
    by_stem: BTreeMap<String, Vec<PathBuf>>,
}

impl ImageFiles {
    /// The file named `name`, else the first file of its stem that holds an image (DICOM by content,
    /// or a PNG/JPEG/BMP).
    fn find(&self, name: &str) -> Option<&PathBuf> {
        self.by_name.get(name).or_else(|| self.by_stem.get(stem(Path::new(name)).as_str())?.iter().find(|p| crate::dataset::is_image(p)))
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// Every file under `dir`, recursively; a name found twice keeps the first in path order.
fn image_files(dir: &Path) -> Result<ImageFiles> {
    let mut files = ImageFiles { by_name: BTreeMap::new(), by_stem: BTreeMap::new() };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                pending.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                files.by_stem.entry(stem(&path)).or_default().push(path.clone());
                files.by_name.entry(name.to_string()).or_insert(path);
            }
        }
    }
    Ok(files)
}

fn disease_map(model: &StableDiffusion, input: &tch::Tensor, disease: &str, options: &EvaluationOptions) -> Result<Vec<f32>> {
    let typicality_options = TypicalityOptions {
        samples: options.samples,
        t_min: options.t_min,
        t_max: options.t_max,
        seed: options.seed,
        batch: options.batch,
        latent: LatentMode::Sample,
        ..TypicalityOptions::default()
    };
    let map = typicality(model, input, &prompt_for(disease), NULL_PROMPT, &typicality_options, &mut |_, _| true)?.map;
    Ok(Vec::<f32>::try_from(map.f_flatten(0, -1)?)?)
}

impl Evaluation {
    fn keep_extreme(&mut self, disease: &str, shown: Shown) {
        match self.extremes.get_mut(disease) {
            None => {
                self.extremes.insert(disease.to_string(), (shown.clone(), shown));
            }
            Some((best, worst)) => {
                if shown.ap > best.ap {
                    *best = shown;
                } else if shown.ap < worst.ap {
                    *worst = shown;
                }
            }
        }
    }

    /// Writes `<disease>_best_<image>.png` and `<disease>_worst_<image>.png` into `dir`: the map blended
    /// on the X-ray in the library's heat-map colours ([`heatmap::overlay`]), the boxes in white
    /// (white is no colour of the scale). Returns the files.
    pub fn write_overlays(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut written = Vec::new();
        for (disease, (best, worst)) in &self.extremes {
            for (shown, which) in [(best, "best"), (worst, "worst")] {
                let stem = Path::new(&shown.image).file_stem().map_or_else(|| shown.image.clone(), |s| s.to_string_lossy().into_owned());
                let path = dir.join(format!("{disease}_{which}_{stem}.png"));
                crate::io::write_image(&overlay(shown)?, &path)?;
                written.push(path);
            }
        }
        Ok(written)
    }
}

const BOX_COLOUR: image::Rgb<u8> = image::Rgb([255, 255, 255]);

fn overlay(shown: &Shown) -> Result<image::RgbImage> {
    let [width, height] = shown.size;
    let image = image::RgbImage::from_raw(width as u32, height as u32, shown.rgb.clone()).expect("W × H × 3 bytes");
    let mut out = heatmap::overlay(&image, &shown.map)?;
    for b in &shown.boxes {
        let clamp = |v: f64, limit: usize| (v.round().max(0.0) as usize).min(limit - 1) as u32;
        let (x0, y0, x1, y1) = (clamp(b.x, width), clamp(b.y, height), clamp(b.x + b.w, width), clamp(b.y + b.h, height));
        for x in x0..=x1 {
            out.put_pixel(x, y0, BOX_COLOUR);
            out.put_pixel(x, y1, BOX_COLOUR);
        }
        for y in y0..=y1 {
            out.put_pixel(x0, y, BOX_COLOUR);
            out.put_pixel(x1, y, BOX_COLOUR);
        }
    }
    Ok(out)
}
