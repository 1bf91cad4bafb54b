//! DICOM ingestion: a file or an in-memory buffer → an owned image in [0, 1] that the model takes
//! (through [`OwnedImage::view`]), plus the metadata a caller needs to put results back in the right
//! study. PNG and JPEG files load into the same image type, so callers handle one kind of image.
//!
//! dicom-object parses the data set; the pixel pipeline is ours, over the codec crates (jpeg-decoder,
//! charls, jpeg2k/openjp2), because dicom-pixeldata 0.10 has gaps a PACS caller must not inherit silently:
//! it never inverts MONOCHROME1, reads Rescale Slope/Intercept stored as UN as raw bytes, swaps the
//! halves of big-endian 32-bit samples, skips sign extension when Bits Stored < Bits Allocated,
//! ignores Modality LUT tables and decodes RGB JPEG without a JFIF/Adobe marker as YCbCr.
//!
//! Pipeline (PS3.4 N.2), one frame at a time:
//! stored values (Bits Stored masked, sign-extended) → colour to RGB (YBR_FULL, YBR_FULL_422, ICT/RCT)
//! → Modality LUT for grey (rescale or table) → VOI (the file's window or table, else min–max, or the
//! caller's) → MONOCHROME1 inverted → [0, 1]. Colour is scaled by 2^Bits Stored − 1; PALETTE COLOR goes
//! through its palette.
//!
//! Transfer syntaxes: implicit/explicit VR little endian, explicit big endian, deflated, encapsulated
//! uncompressed, RLE, JPEG baseline/extended (8-bit)/lossless, JPEG-LS, JPEG 2000. 12-bit lossy JPEG,
//! HTJ2K and the video syntaxes give an "unsupported" error naming the transfer syntax.
//!
//! Robustness: every declared element length is checked against the bytes present before parsing
//! (`scan`), decoders run behind a panic boundary and see sizes checked against their headers first,
//! and a frame is at most 2^26 samples, so a corrupt file costs an error, not a crash or gigabytes.
//!
//! Maps go back to the PACS with [`DicomFile::write_map`] (`write`).
mod attributes;
mod codecs;
mod enhanced;
mod format;
mod frames;
mod lut;
mod scan;
mod write;

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};

use self::attributes::Attributes;
pub use self::format::Photometric;
use self::format::{Codec, PixelFormat};
pub use self::lut::VoiFunction;
use self::lut::{ModalityLut, Palette, Voi};
pub use self::write::{new_uid, validate_uid, write_grey_image, GreyImageAttributes, MapKind, MapObjectOptions, WrittenInstance};
use crate::error::{Error, Result};
use crate::image::{ImageView, PixelType};

/// How grey values become display levels in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Window {
    /// The file's first VOI LUT or window when it has one, else the frame's min–max.
    #[default]
    File,
    /// The frame's own min–max, whatever the file says.
    MinMax,
    /// The caller's window, in modality units (after rescale).
    Explicit { center: f64, width: f64, function: VoiFunction },
}

/// What to read out of a DICOM file.
#[derive(Debug, Clone, Copy, Default)]
pub struct DicomOptions {
    /// The frame of a multi-frame image, from 0.
    pub frame: usize,
    pub window: Window,
}

/// What a caller needs to file a result next to its source image. Text fields are None when the
/// data set lacks them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub modality: Option<String>,
    pub view_position: Option<String>,
    /// Millimetres between pixel centres (row spacing, column spacing): Pixel Spacing, else Imager
    /// Pixel Spacing (projection radiographs often have only that).
    pub pixel_spacing: Option<[f64; 2]>,
    pub transfer_syntax_uid: String,
    /// Frames of the image; 0 when the data set has no readable image.
    pub frames: usize,
}

/// A parsed DICOM file. Reading pixels is separate, so a data set without an image (a structured
/// report, an RT plan) still opens and gives its metadata.
pub struct DicomFile {
    object: FileDicomObject<InMemDicomObject>,
    source: String,
}

/// The stored values of a frame after the Modality LUT, as pydicom's `apply_modality_lut(pixel_array)`
/// gives them: grey in modality units, colour as RGB samples, palette images as palette indices.
#[derive(Debug, Clone)]
pub struct ModalityFrame {
    pub width: usize,
    pub height: usize,
    /// 1 (grey or palette indices) or 3 (RGB), interleaved.
    pub channels: usize,
    pub values: Vec<f64>,
    /// What the values are: Monochrome1/2, Rgb or Palette.
    pub photometric: Photometric,
}

/// An owned image with samples in [0, 1], 1 (grey) or 3 (RGB) channels interleaved, and the
/// metadata of its DICOM source (None for PNG/JPEG).
#[derive(Debug, Clone)]
pub struct OwnedImage {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<f32>,
    pub metadata: Option<Metadata>,
}

impl OwnedImage {
    /// The image as the borrowed view the model and the C API take.
    pub fn view(&self) -> ImageView<'_> {
        ImageView {
            data: bytemuck::cast_slice(&self.pixels),
            width: self.width,
            height: self.height,
            channels: self.channels,
            stride: self.width * self.channels * 4,
            pixel: PixelType::F32,
        }
    }
}

/// DICOM Part 10 files carry "DICM" after a 128-byte preamble.
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM")
}

/// Whether the file at `path` is DICOM by its content (unreadable files are not).
pub fn file_is_dicom(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && is_dicom(&head)
}

/// Opens a DICOM, PNG or JPEG file (recognised by content) as an image; `options` apply to DICOM.
pub fn open_image(path: &Path, options: &DicomOptions) -> Result<OwnedImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    image_from_bytes(&bytes, &path.display().to_string(), options)
}

/// An image from the bytes of a DICOM, PNG or JPEG file; `source` names it in errors.
pub fn image_from_bytes(bytes: &[u8], source: &str, options: &DicomOptions) -> Result<OwnedImage> {
    if is_dicom(bytes) {
        return DicomFile::from_bytes(bytes, source)?.image(options);
    }
    let decoded = image::load_from_memory(bytes).map_err(|e| Error::InvalidData(format!("{source}: neither DICOM nor a readable PNG/JPEG ({e})")))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    let (channels, pixels) = if decoded.color().has_color() { (3, decoded.to_rgb32f().into_raw()) } else { (1, decoded.to_luma32f().into_raw()) };
    Ok(OwnedImage { width, height, channels, pixels, metadata: None })
}

impl std::fmt::Debug for DicomFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomFile").field("source", &self.source).field("transfer_syntax", &self.transfer_syntax()).finish()
    }
}

impl DicomFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses a DICOM Part 10 stream (with or without its 128-byte preamble); `source` names it in
    /// errors.
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        scan::check_lengths(bytes, source)?;
        let object =
            OpenFileOptions::new().from_reader(bytes).map_err(|e| Error::InvalidData(format!("{source}: not a readable DICOM file ({})", error_chain(&e))))?;
        Ok(DicomFile { object, source: source.to_string() })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn transfer_syntax(&self) -> &str {
        self.object.meta().transfer_syntax().trim_end_matches(['\0', ' '])
    }

    fn attributes(&self) -> Attributes<'_> {
        // Explicit VR Big Endian is the only big-endian transfer syntax (retired, still seen).
        let big_endian = self.transfer_syntax() == "1.2.840.10008.1.2.2";
        Attributes::new(&self.object, big_endian, &self.source)
    }

    pub fn metadata(&self) -> Result<Metadata> {
        let attrs = self.attributes();
        let spacing = |tag, what| -> Result<Option<[f64; 2]>> {
            Ok(match attrs.decimals(tag, what)?.as_slice() {
                [row, column, ..] => Some([*row, *column]),
                _ => None,
            })
        };
        let pixel_spacing = match spacing(tags::PIXEL_SPACING, "Pixel Spacing")? {
            Some(s) => Some(s),
            None => spacing(tags::IMAGER_PIXEL_SPACING, "Imager Pixel Spacing")?,
        };
        Ok(Metadata {
            patient_id: attrs.text(tags::PATIENT_ID),
            patient_name: attrs.text(tags::PATIENT_NAME),
            study_instance_uid: attrs.text(tags::STUDY_INSTANCE_UID),
            series_instance_uid: attrs.text(tags::SERIES_INSTANCE_UID),
            sop_instance_uid: attrs.text(tags::SOP_INSTANCE_UID),
            sop_class_uid: attrs.text(tags::SOP_CLASS_UID),
            modality: attrs.text(tags::MODALITY),
            view_position: attrs.text(tags::VIEW_POSITION),
            pixel_spacing,
            transfer_syntax_uid: self.transfer_syntax().to_string(),
            frames: self.pixel_format().map(|f| f.frames).unwrap_or(0),
        })
    }

    fn pixel_format(&self) -> Result<PixelFormat> {
        let attrs = self.attributes();
        if attrs.element(tags::PIXEL_DATA).is_none() {
            let other = [tags::FLOAT_PIXEL_DATA, tags::DOUBLE_FLOAT_PIXEL_DATA].iter().any(|&t| attrs.element(t).is_some());
            let problem = if other { "has float pixel data, which is not supported" } else { "has no Pixel Data" };
            return Err(Error::InvalidData(format!("{}: {problem}", self.source)));
        }
        let format = PixelFormat::read(&attrs)?;
        frames::check_frame_count(&attrs, &format)?;
        Ok(format)
    }

    /// The number of frames of the image.
    pub fn frame_count(&self) -> Result<usize> {
        Ok(self.pixel_format()?.frames)
    }

    /// Frame `frame` after the Modality LUT (see [`ModalityFrame`]).
    pub fn modality_frame(&self, frame: usize) -> Result<ModalityFrame> {
        let attrs = self.attributes();
        let format = self.pixel_format()?;
        if frame >= format.frames {
            return Err(Error::InvalidArgument(format!("{}: frame {frame} requested, the image has {}", self.source, format.frames)));
        }
        let codec = Codec::of(self.transfer_syntax(), &self.source)?;
        let bytes = frames::frame_bytes(&attrs, &format, codec, frame)?;
        let samples = codecs::decode(&bytes, &format.unpacked(), codec, &self.source)?;
        // into_iter().map().collect() reuses the samples' allocation (i64 and f64 are the same size).
        let values = if samples.photometric.is_grey() {
            let lut = ModalityLut::read(&attrs, frame)?;
            samples.values.into_iter().map(|v| lut.apply(v)).collect()
        } else {
            samples.values.into_iter().map(|v| v as f64).collect()
        };
        Ok(ModalityFrame { width: format.columns, height: format.rows, channels: format.samples, values, photometric: samples.photometric })
    }

    /// The frame `options.frame` as display levels in [0, 1] (see the module documentation).
    pub fn image(&self, options: &DicomOptions) -> Result<OwnedImage> {
        let frame = self.modality_frame(options.frame)?;
        let attrs = self.attributes();
        let format = self.pixel_format()?;
        let pixels = match frame.photometric {
            Photometric::Monochrome1 | Photometric::Monochrome2 => self.grey_levels(&attrs, frame.values, options)?,
            Photometric::Palette => {
                let palette = Palette::read(&attrs)?;
                frame.values.iter().flat_map(|&v| palette.rgb(v as i64)).map(|v| v as f32).collect()
            }
            _ => {
                let max = ((1u64 << format.bits_stored) - 1) as f64;
                frame.values.iter().map(|&v| (v / max).clamp(0.0, 1.0) as f32).collect()
            }
        };
        let channels = if frame.photometric == Photometric::Palette { 3 } else { frame.channels };
        Ok(OwnedImage { width: frame.width, height: frame.height, channels, pixels, metadata: Some(self.metadata()?) })
    }

    fn grey_levels(&self, attrs: &Attributes, mut values: Vec<f64>, options: &DicomOptions) -> Result<Vec<f32>> {
        let voi = match options.window {
            Window::File => Voi::read(attrs, options.frame)?.unwrap_or(Voi::MinMax),
            Window::MinMax => Voi::MinMax,
            Window::Explicit { center, width, function } => Voi::Window { center, width, function },
        };
        voi.validate(&self.source)?;
        voi.apply(&mut values);
        let invert = self.pixel_format()?.photometric == Photometric::Monochrome1;
        Ok(values.into_iter().map(|v| if invert { 1.0 - v } else { v } as f32).collect())
    }
}

/// An error with its causes, as dicom-rs nests the useful part ("unexpected end of file") inside.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}
