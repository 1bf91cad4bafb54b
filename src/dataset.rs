//! Labelled image sets as users hand them in: a folder per label (`ROOT/<label>/*.png|jpg|dcm`) or a
//! CSV of `path,label` rows (paths relative to the CSV; several labels of one image separated by `|`).
//! Images are PNG, JPEG, BMP or DICOM; DICOM is recognised by its content (a PACS export often names
//! its files without an extension) and read as `dicom::open_image` reads it.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::Tensor;

use crate::dicom::{file_is_dicom, open_image, DicomOptions};
use crate::error::{Error, Result};
use crate::image::{ImageView, PixelType};

/// The extensions of the non-DICOM image files a label folder lists.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    /// The image file, or for an image held in memory the name it goes by (in results and reports).
    pub path: PathBuf,
    pub labels: Vec<String>,
    /// The pixels of an image handed in memory (None: read the file at `path`).
    pub pixels: Option<Pixels>,
}

impl LabelledImage {
    pub fn file(path: PathBuf, labels: Vec<String>) -> Self {
        LabelledImage { path, labels, pixels: None }
    }

    /// The image as model input (1, 3, H, W) in [-1, 1], its shorter side resized to `short_side`.
    pub fn load(&self, short_side: Option<usize>) -> Result<Tensor> {
        load_image_or_pixels(&self.path, self.pixels.as_ref(), short_side)
    }
}

/// An owned copy of a caller's pixel buffer, standing in for an image file. Shared, not copied, when
/// cloned (a set and the results mined from it hold the same pixels).
#[derive(Clone, PartialEq)]
pub struct Pixels {
    data: Arc<[u8]>,
    width: usize,
    height: usize,
    channels: usize,
    stride: usize,
    pixel: PixelType,
}

impl Pixels {
    /// Copies a checked view's pixels.
    pub fn copy_of(view: &ImageView) -> Result<Self> {
        view.validate()?;
        let ImageView { data, width, height, channels, stride, pixel } = *view;
        Ok(Pixels { data: Arc::from(data), width, height, channels, stride, pixel })
    }

    pub fn view(&self) -> ImageView<'_> {
        ImageView { data: &self.data, width: self.width, height: self.height, channels: self.channels, stride: self.stride, pixel: self.pixel }
    }
}

// Hashed by content, so a cache entry of an image held in memory follows its pixels.
impl std::hash::Hash for Pixels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.data.hash(state);
        (self.width, self.height, self.channels, self.stride, self.pixel).hash(state);
    }
}

// The bytes themselves would flood any log; their geometry identifies the image well enough.
impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pixels({}×{}×{} {:?})", self.width, self.height, self.channels, self.pixel)
    }
}

#[derive(Debug, Clone, Default)]
pub struct LabelledSet {
    pub items: Vec<LabelledImage>,
}

impl LabelledSet {
    /// Reads a folder-per-label tree or a `path,label` CSV, in a stable (sorted) order.
    pub fn open(path: &Path) -> Result<Self> {
        let set = if path.is_dir() { Self::from_folders(path)? } else { Self::from_csv(path)? };
        if set.items.is_empty() {
            return Err(Error::InvalidArgument(format!("{} holds no labelled images", path.display())));
        }
        Ok(set)
    }

    fn from_folders(root: &Path) -> Result<Self> {
        let mut items = Vec::new();
        for label_dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let label = label_dir.file_name().expect("a folder has a name").to_string_lossy().into_owned();
            for path in sorted_entries(&label_dir)?.into_iter().filter(|p| is_image(p)) {
                items.push(LabelledImage::file(path, vec![label.clone()]));
            }
        }
        Ok(LabelledSet { items })
    }

    fn from_csv(csv: &Path) -> Result<Self> {
        let text = crate::io::read_text(csv)?;
        let base = csv.parent().unwrap_or(Path::new("."));
        let mut items = Vec::new();
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let Some((path, labels)) = line.split_once(',') else {
                return Err(Error::InvalidArgument(format!("{} line {}: expected `path,label`", csv.display(), number + 1)));
            };
            if number == 0 && path.trim() == "path" {
                continue;
            }
            let labels: Vec<String> = labels.split('|').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
            if labels.is_empty() {
                return Err(Error::InvalidArgument(format!("{} line {}: no label", csv.display(), number + 1)));
            }
            items.push(LabelledImage::file(base.join(path.trim()), labels));
        }
        Ok(LabelledSet { items })
    }

    /// The distinct labels, sorted.
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.items.iter().flat_map(|i| i.labels.iter().cloned()).collect();
        labels.sort();
        labels.dedup();
        labels
    }
}

/// Whether `path` is a file of an image: DICOM by its content, else PNG, JPEG or BMP by its extension.
pub(crate) fn is_image(path: &Path) -> bool {
    path.is_file() && (path.extension().is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_lowercase().as_str())) || file_is_dicom(path))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    Ok(entries)
}

/// Reads an image file (PNG, JPEG, BMP or DICOM, recognised by content; DICOM frame 0 through the
/// file's window, as `dm_image_open` reads it by default) as model input (1, 3, H, W) in [-1, 1], its
/// shorter side resized to `short_side` when given.
pub fn load_image(path: &Path, short_side: Option<usize>) -> Result<Tensor> {
    open_image(path, &DicomOptions::default())?.view().to_model_input_resized(short_side)
}

/// Model input from `pixels` when the image is held in memory, else from the file at `path`.
pub fn load_image_or_pixels(path: &Path, pixels: Option<&Pixels>, short_side: Option<usize>) -> Result<Tensor> {
    match pixels {
        Some(pixels) => pixels.view().to_model_input_resized(short_side),
        None => load_image(path, short_side),
    }
}

/// The central `size` × `size` square of a (1, 3, H, W) image (what training crops to).
pub fn center_crop(image: &Tensor, size: i64) -> Result<Tensor> {
    let (_, _, h, w) = image.size4()?;
    if h < size || w < size {
        return Err(Error::InvalidArgument(format!("image {h}×{w} is smaller than the crop {size}×{size}")));
    }
    Ok(image.f_narrow(2, (h - size) / 2, size)?.f_narrow(3, (w - size) / 2, size)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_give_paths_relative_to_the_csv_and_split_multiple_labels() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("set.csv");
        std::fs::write(&csv, "path,label\na.png,Mass\nsub/b.png,Effusion|Mass\n").unwrap();
        let set = LabelledSet::from_csv(&csv).unwrap();
        assert_eq!(set.items[1], LabelledImage::file(dir.path().join("sub/b.png"), vec!["Effusion".into(), "Mass".into()]));
        assert_eq!(set.labels(), vec!["Effusion".to_string(), "Mass".to_string()]);
    }

    #[test]
    fn a_csv_row_without_a_label_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("set.csv");
        std::fs::write(&csv, "a.png,Mass\nb.png,\n").unwrap();
        let err = LabelledSet::from_csv(&csv).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    /// Every extension a label folder lists must be one the `image` crate was built to decode.
    #[test]
    fn every_listed_image_format_loads() {
        let dir = tempfile::tempdir().unwrap();
        let pixels = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 32) as u8, (y * 32) as u8, 255]));
        for extension in IMAGE_EXTENSIONS {
            let path = dir.path().join(format!("image.{extension}"));
            pixels.save(&path).unwrap();
            let loaded = load_image(&path, None).unwrap();
            assert_eq!(loaded.size(), [1, 3, 8, 8], "{extension}");
            // Pixel (7, 0) is red 224, blue 255: [-1, 1] values 224 / 127.5 - 1 and 1 (lossless formats).
            if extension != "jpg" && extension != "jpeg" {
                let red = loaded.double_value(&[0, 0, 0, 7]);
                assert!((red - (224.0 / 127.5 - 1.0)).abs() < 1e-6, "{extension}: {red}");
            }
        }
    }
}
