//! Reading the commands' input images and writing their PNG outputs.
use std::path::Path;

use diffmine::dicom::{open_image, DicomOptions};
use diffmine::image::to_rgb_image;
use diffmine::io::write_image;
use diffmine::Result;
use tch::Tensor;

/// A PNG, JPEG, BMP or DICOM file (DICOM frame 0 through its own window) as the model's input,
/// resized so its shorter side is `short_side` when given.
pub fn image_tensor(path: &Path, short_side: Option<usize>) -> Result<Tensor> {
    open_image(path, &DicomOptions::default())?.view().to_model_input_resized(short_side)
}

/// Writes the image whole or not at all.
pub fn write_png(images: &Tensor, path: &Path) -> Result<()> {
    write_image(&to_rgb_image(images)?, path)?;
    println!("wrote {}", path.display());
    Ok(())
}
