//! Typicality maps back to the PACS: a new instance in the source image's study (same Study Instance
//! UID and patient/study attributes, a new series and SOP Instance UID, the source in its Source Image
//! Sequence), one of four kinds ([`MapKind`]): a Secondary Capture colour overlay of the map on the
//! image, a Secondary Capture of the raw map (16-bit grey whose Rescale Slope/Intercept give back the
//! map's values), a fractional Segmentation and a Parametric Map (`enhanced`).
//!
//! Every object carries the options that made it ([`MapObjectOptions`]) as a JSON object in Image
//! Comments (0020,4000); the Segmentation repeats it in its algorithm's Algorithm Parameters.
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::{DicomFile, DicomOptions};
use crate::error::{Error, Result};
use crate::heatmap;
use crate::typicality::TypicalityOptions;

/// What kind of DICOM object the map becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Secondary Capture, RGB: the map blended on the image in the library's heat-map colours
    /// ([`heatmap::overlay`]), at the map's size.
    Overlay,
    /// Secondary Capture, MONOCHROME2, 16 bits: stored value v means map value v · Rescale Slope +
    /// Rescale Intercept, the map's range spread over 0..65535 (its error is at most half a slope).
    Raw,
    /// Segmentation, FRACTIONAL (PROBABILITY, 8 bits): one segment whose probability is the map
    /// min–max scaled to [0, 1] and resampled (bilinear) to the source frame's rows and columns, as
    /// a segmentation overlays its source pixel for pixel; stored value s means (s / 255).
    Segmentation,
    /// Parametric Map: the map's exact 32-bit float values (Float Pixel Data) at the map's size,
    /// with a Real World Value Mapping of slope 1.
    Parametric,
}

/// How a map is written and what the object says about where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MapObjectOptions {
    pub kind: MapKind,
    /// What the map is the typicality of (e.g. "Pneumonia"): the segment's label, the content
    /// description. Empty: "typicality".
    pub label: String,
    /// The prompt and the null prompt the map was computed with (recorded, not used).
    pub prompt: String,
    pub null_prompt: String,
    /// The samples and seed the map was computed with (recorded, not used).
    pub samples: usize,
    pub seed: u64,
    /// The series to put the instance in (e.g. to keep several kinds in one); None: a new series.
    pub series_instance_uid: Option<String>,
    /// None: a description naming the kind.
    pub series_description: Option<String>,
    pub series_number: u32,
}

impl Default for MapObjectOptions {
    fn default() -> Self {
        let typicality = TypicalityOptions::default();
        MapObjectOptions {
            kind: MapKind::Overlay,
            label: String::new(),
            prompt: String::new(),
            null_prompt: String::new(),
            samples: typicality.samples,
            seed: typicality.seed,
            series_instance_uid: None,
            series_description: None,
            series_number: 9000,
        }
    }
}

impl MapObjectOptions {
    /// The label, or "typicality" when none is given.
    pub(super) fn label_or_default(&self) -> &str {
        if self.label.is_empty() {
            "typicality"
        } else {
            &self.label
        }
    }

    /// The options as the JSON object the written instance carries, with `extra` fields (e.g. the
    /// scaling a Segmentation applied).
    pub(super) fn provenance(&self, extra: serde_json::Map<String, serde_json::Value>) -> String {
        let mut fields = serde_json::json!({
            "software": format!("libdiffmine {}", env!("CARGO_PKG_VERSION")),
            "label": self.label,
            "prompt": self.prompt,
            "null_prompt": self.null_prompt,
            "samples": self.samples,
            "seed": self.seed,
        });
        fields.as_object_mut().expect("an object").extend(extra);
        fields.to_string()
    }
}

/// The identity of a written instance.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenInstance {
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
}

/// The patient and study attributes a derived instance copies from its source (PS3.3 C.7.1.1,
/// C.7.2.1); those the source lacks are written empty (type 2).
const COPIED: [Tag; 10] = [
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
];

/// A new globally unique UID under the 2.25 root (PS3.5 B.2): 128 random bits, from the standard
/// library's OS-seeded hasher keys (no extra dependency), as a decimal number.
pub fn new_uid() -> String {
    let mut bits = 0u128;
    for half in 0..2u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(half);
        hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        bits = (bits << 64) | hasher.finish() as u128;
    }
    format!("2.25.{bits}")
}

/// Checks a UID a caller hands in (PS3.5 9.1): at most 64 characters, components of digits separated
/// by dots, none empty and none with a leading zero (a lone "0" is a component). A PACS rejects, or
/// worse files wrongly, an instance whose UIDs break these rules; `what` names the UID in errors.
pub fn validate_uid(uid: &str, what: &str) -> Result<()> {
    let component_ok = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0'));
    let problem = if uid.len() > 64 {
        format!("has {} characters, at most 64 are allowed", uid.len())
    } else if let Some(bad) = uid.split('.').find(|c| !component_ok(c)) {
        format!("has the component {bad:?}; components are numbers without leading zeros, separated by single dots")
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument(format!("{what} {uid:?} is not a DICOM UID: it {problem}")))
}

/// What a new (not derived) grey image instance says about itself: its identity and the patient,
/// study and acquisition attributes a PACS files it by.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyImageAttributes {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub patient_id: String,
    pub patient_sex: String,
    /// PS3.5 AS format, e.g. "058Y".
    pub patient_age: String,
    pub modality: String,
    pub view_position: String,
    /// Millimetres between pixel centres (row, column).
    pub pixel_spacing: [f64; 2],
}

/// Writes 8-bit grey pixels (row-major, `width` × `height`) as a Secondary Capture instance,
/// MONOCHROME2, explicit VR little endian (e.g. the synthetic radiographs, so the DICOM path is
/// exercised with the same pixels as the PNGs).
pub fn write_grey_image(pixels: &[u8], [width, height]: [usize; 2], attributes: &GreyImageAttributes, path: &Path) -> Result<()> {
    if width == 0 || height == 0 || width > u16::MAX as usize || height > u16::MAX as usize || pixels.len() != width * height {
        return Err(Error::InvalidArgument(format!("a {width}×{height} image cannot be written from {} bytes", pixels.len())));
    }
    for (uid, what) in [
        (&attributes.study_instance_uid, "Study Instance UID"),
        (&attributes.series_instance_uid, "Series Instance UID"),
        (&attributes.sop_instance_uid, "SOP Instance UID"),
    ] {
        validate_uid(uid, what)?;
    }
    let mut object = InMemDicomObject::new_empty();
    let a = attributes;
    let texts: [(Tag, VR, &str); 11] = [
        (tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        (tags::SOP_CLASS_UID, VR::UI, uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
        (tags::SOP_INSTANCE_UID, VR::UI, &a.sop_instance_uid),
        (tags::STUDY_INSTANCE_UID, VR::UI, &a.study_instance_uid),
        (tags::SERIES_INSTANCE_UID, VR::UI, &a.series_instance_uid),
        (tags::PATIENT_ID, VR::LO, &a.patient_id),
        (tags::PATIENT_SEX, VR::CS, &a.patient_sex),
        (tags::PATIENT_AGE, VR::AS, &a.patient_age),
        (tags::MODALITY, VR::CS, &a.modality),
        (tags::VIEW_POSITION, VR::CS, &a.view_position),
        (tags::CONVERSION_TYPE, VR::CS, "SYN"),
    ];
    for (tag, vr, value) in texts {
        object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    object.put(DataElement::new(tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(["ORIGINAL", "PRIMARY"].iter().map(|s| s.to_string()).collect())));
    for tag in [
        tags::PATIENT_NAME,
        tags::PATIENT_BIRTH_DATE,
        tags::STUDY_DATE,
        tags::STUDY_TIME,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::STUDY_ID,
        tags::ACCESSION_NUMBER,
    ] {
        object.put(DataElement::new(tag, type2_vr(tag), PrimitiveValue::Empty));
    }
    let [row, column] = a.pixel_spacing;
    object.put(DataElement::new(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::Strs([format_ds(row), format_ds(column)].into_iter().collect())));
    object.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(height as u16)));
    object.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(width as u16)));
    put_image_pixel_module(&mut object, "MONOCHROME2", 1, 8);
    // The linear window that shows stored value v as v / 255 (PS3.3 C.11.2.1.2.1), so a viewer, and
    // the readers of this library, see the grey levels of the 8-bit image as written.
    object.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from("128")));
    object.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from("256")));
    object.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pixels.to_vec().into())));
    let file = object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| Error::InvalidArgument(format!("DICOM meta group for {}: {e}", path.display())))?;
    write_part10(&file, path)
}

/// Writes a Part 10 file (preamble, meta group, data set) atomically: encoded in memory first, so a
/// failure to write is the operating system's, with its reason.
fn write_part10(file: &FileDicomObject<InMemDicomObject>, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| Error::InvalidArgument(format!("{}: cannot be encoded as DICOM ({})", path.display(), super::error_chain(&e))))?;
    crate::io::write_atomic(path, &bytes)
}

impl DicomFile {
    /// Writes `map` (row-major, `width` × `height`, e.g. a typicality map of frame `frame`) to `path`
    /// as a new instance of this file's study, of the kind and in the series `options` give.
    pub fn write_map(&self, frame: usize, map: &[f32], [width, height]: [usize; 2], options: &MapObjectOptions, path: &Path) -> Result<WrittenInstance> {
        if width == 0 || height == 0 || width > u16::MAX as usize || height > u16::MAX as usize || map.len() != width * height {
            return Err(Error::InvalidArgument(format!("a {width}×{height} map cannot be written from {} values", map.len())));
        }
        if let Some(bad) = map.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("the map holds the non-finite value {bad}")));
        }
        validate_options(options)?;
        let frames = self.frame_count()?;
        if frame >= frames {
            return Err(Error::InvalidArgument(format!("{}: a map of frame {frame} requested, the image has {frames}", self.source)));
        }
        let written = WrittenInstance { series_instance_uid: options.series_instance_uid.clone().unwrap_or_else(new_uid), sop_instance_uid: new_uid() };
        let size = match options.kind {
            MapKind::Segmentation => {
                let format = self.pixel_format()?;
                [format.columns, format.rows]
            }
            _ => [width, height],
        };
        let mut object = self.derived_header(frame, options, &written, size)?;
        let mut extra = serde_json::Map::new();
        match options.kind {
            MapKind::Overlay => self.put_overlay(&mut object, frame, map, [width, height])?,
            MapKind::Raw => put_raw(&mut object, map),
            MapKind::Segmentation => extra = self.put_segmentation(&mut object, frame, options, map, [width, height], size)?,
            MapKind::Parametric => self.put_parametric(&mut object, frame, options, map, [width, height])?,
        }
        object.put(DataElement::new(tags::IMAGE_COMMENTS, VR::LT, PrimitiveValue::from(options.provenance(extra))));
        let file = object
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .map_err(|e| Error::InvalidArgument(format!("DICOM meta group for {}: {e}", path.display())))?;
        write_part10(&file, path)?;
        Ok(written)
    }

    /// Everything but the pixels and the kind's own modules: SOP common, patient, study, series,
    /// equipment and general image.
    fn derived_header(&self, frame: usize, options: &MapObjectOptions, written: &WrittenInstance, [width, height]: [usize; 2]) -> Result<InMemDicomObject> {
        let source = self.metadata()?;
        let source_sop = source.sop_instance_uid.clone().ok_or_else(|| Error::InvalidData(format!("{}: has no SOP Instance UID to refer to", self.source)))?;
        if source.study_instance_uid.is_none() {
            return Err(Error::InvalidData(format!("{}: has no Study Instance UID to file the map under", self.source)));
        }
        let kind = options.kind;
        let mut object = InMemDicomObject::new_empty();
        let mut put = |tag: Tag, vr: VR, value: PrimitiveValue| {
            object.put(DataElement::new(tag, vr, value));
        };
        let (sop_class, modality, image_type, description): (&str, &str, &[&str], &str) = match kind {
            MapKind::Overlay => (uids::SECONDARY_CAPTURE_IMAGE_STORAGE, "OT", &["DERIVED", "SECONDARY"], "libdiffmine typicality map (overlay)"),
            MapKind::Raw => (uids::SECONDARY_CAPTURE_IMAGE_STORAGE, "OT", &["DERIVED", "SECONDARY"], "libdiffmine typicality map (raw values)"),
            MapKind::Segmentation => (uids::SEGMENTATION_STORAGE, "SEG", &["DERIVED", "PRIMARY"], "libdiffmine typicality segmentation"),
            MapKind::Parametric => (uids::PARAMETRIC_MAP_STORAGE, "OT", &["DERIVED", "PRIMARY", "VOLUME", "QUANTITY"], "libdiffmine typicality parametric map"),
        };
        let (date, time) = now_date_time();
        put(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".into());
        put(tags::SOP_CLASS_UID, VR::UI, sop_class.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, written.sop_instance_uid.as_str().into());
        put(tags::SERIES_INSTANCE_UID, VR::UI, written.series_instance_uid.as_str().into());
        put(tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(image_type.iter().map(|s| s.to_string()).collect()));
        put(tags::MODALITY, VR::CS, modality.into());
        put(tags::SERIES_NUMBER, VR::IS, options.series_number.to_string().into());
        put(tags::INSTANCE_NUMBER, VR::IS, (kind as u32 + 1).to_string().into());
        put(tags::SERIES_DESCRIPTION, VR::LO, options.series_description.as_deref().unwrap_or(description).into());
        for tag in [tags::INSTANCE_CREATION_DATE, tags::CONTENT_DATE] {
            put(tag, VR::DA, date.as_str().into());
        }
        for tag in [tags::INSTANCE_CREATION_TIME, tags::CONTENT_TIME] {
            put(tag, VR::TM, time.as_str().into());
        }
        // The equipment that made the instance (the Enhanced General Equipment module of the
        // Segmentation and the Parametric Map has all four as type 1).
        put(tags::MANUFACTURER, VR::LO, "libdiffmine".into());
        put(tags::MANUFACTURER_MODEL_NAME, VR::LO, "libdiffmine".into());
        put(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0".into());
        put(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION").into());
        put(tags::BURNED_IN_ANNOTATION, VR::CS, "NO".into());
        put(tags::ROWS, VR::US, PrimitiveValue::from(height as u16));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(width as u16));
        if matches!(kind, MapKind::Overlay | MapKind::Raw) {
            put(tags::CONVERSION_TYPE, VR::CS, "WSD".into());
            put(tags::DERIVATION_DESCRIPTION, VR::ST, "Typicality map of a diffusion model (Siglidis et al., ECCV 2024)".into());
            if let Some([row, column]) = self.spacing_at([width, height])? {
                put(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::Strs([format_ds(row), format_ds(column)].into_iter().collect()));
            }
        }
        for tag in COPIED {
            object.put(self.object.get(tag).cloned().unwrap_or_else(|| DataElement::new(tag, type2_vr(tag), PrimitiveValue::Empty)));
        }
        // Type 2C: the orientation where the image has no plane orientation, the laterality where the
        // body part is paired (a segmentation gives it per segment instead); the source's, which the
        // map shares, else empty.
        let type2c: &[Tag] = if kind == MapKind::Segmentation { &[tags::PATIENT_ORIENTATION] } else { &[tags::PATIENT_ORIENTATION, tags::LATERALITY] };
        for &tag in type2c {
            object.put(self.object.get(tag).cloned().unwrap_or_else(|| DataElement::new(tag, VR::CS, PrimitiveValue::Empty)));
        }
        object.put(DataElement::new(tags::SOURCE_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![self.reference(&source_sop, frame)])));
        Ok(object)
    }

    /// The source's pixel spacing (row, column) scaled to an image of `width` × `height` pixels
    /// covering the same field; None when the source gives none.
    pub(super) fn spacing_at(&self, [width, height]: [usize; 2]) -> Result<Option<[f64; 2]>> {
        let Some([row, column]) = self.metadata()?.pixel_spacing else { return Ok(None) };
        let format = self.pixel_format()?;
        Ok(Some([row * format.rows as f64 / height as f64, column * format.columns as f64 / width as f64]))
    }

    /// A Source Image Sequence item pointing at frame `frame` of this file.
    pub(super) fn reference(&self, sop_instance_uid: &str, frame: usize) -> InMemDicomObject {
        let mut item = InMemDicomObject::new_empty();
        let class = self.metadata().ok().and_then(|m| m.sop_class_uid).unwrap_or_default();
        item.put(DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from(class.as_str())));
        item.put(DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop_instance_uid)));
        if self.frame_count().unwrap_or(1) > 1 {
            item.put(DataElement::new(tags::REFERENCED_FRAME_NUMBER, VR::IS, PrimitiveValue::from((frame + 1).to_string())));
        }
        item
    }

    fn put_overlay(&self, object: &mut InMemDicomObject, frame: usize, map: &[f32], [width, height]: [usize; 2]) -> Result<()> {
        let image = self.image(&DicomOptions { frame, ..Default::default() })?;
        let grey: Vec<f32> = image.pixels.chunks_exact(image.channels).map(|p| p.iter().sum::<f32>() / p.len() as f32).collect();
        let grey = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(image.width as u32, image.height as u32, grey).expect("W × H grey levels");
        let grey = image::imageops::resize(&grey, width as u32, height as u32, image::imageops::FilterType::Triangle);
        let grey =
            image::RgbImage::from_fn(width as u32, height as u32, |x, y| image::Rgb([(255.0 * grey.get_pixel(x, y).0[0].clamp(0.0, 1.0)).round() as u8; 3]));
        let rgb = heatmap::overlay(&grey, map)?.into_raw();
        put_image_pixel_module(object, "RGB", 3, 8);
        object.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16)));
        object.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(rgb.into())));
        Ok(())
    }
}

fn put_raw(object: &mut InMemDicomObject, map: &[f32]) {
    let (lo, hi) = range(map);
    let slope = if hi > lo { (hi as f64 - lo as f64) / 65535.0 } else { 1.0 };
    let stored: Vec<u16> = map.iter().map(|&v| ((v as f64 - lo as f64) / slope).round().clamp(0.0, 65535.0) as u16).collect();
    put_image_pixel_module(object, "MONOCHROME2", 1, 16);
    let mut put = |tag: Tag, vr: VR, value: PrimitiveValue| {
        object.put(DataElement::new(tag, vr, value));
    };
    // DS holds 16 characters: enough for the scale to about 1e-10 relative.
    put(tags::RESCALE_SLOPE, VR::DS, format_ds(slope).into());
    put(tags::RESCALE_INTERCEPT, VR::DS, format_ds(lo as f64).into());
    put(tags::RESCALE_TYPE, VR::LO, "US".into());
    put(tags::WINDOW_CENTER, VR::DS, format_ds((lo as f64 + hi as f64) / 2.0).into());
    put(tags::WINDOW_WIDTH, VR::DS, format_ds((hi as f64 - lo as f64).max(1e-12)).into());
    // A LINEAR window must be at least 1 wide (PS3.3 C.11.2.1.2.1); a typicality map spans far less.
    put(tags::VOILUT_FUNCTION, VR::CS, "LINEAR_EXACT".into());
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(stored.into()));
}

pub(super) fn put_image_pixel_module(object: &mut InMemDicomObject, photometric: &str, samples: u16, bits: u16) {
    for (tag, value) in [
        (tags::SAMPLES_PER_PIXEL, samples),
        (tags::BITS_ALLOCATED, bits),
        (tags::BITS_STORED, bits),
        (tags::HIGH_BIT, bits - 1),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    }
    object.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric)));
}

/// A decimal string of at most 16 characters (the DS limit) for `value`.
pub(super) fn format_ds(value: f64) -> String {
    (1..=16).rev().map(|digits| format!("{value:.digits$e}")).find(|s| s.len() <= 16).unwrap_or_else(|| "0".into())
}

pub(super) fn range(map: &[f32]) -> (f32, f32) {
    map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)))
}

/// Checks the caller's texts against what their DICOM attributes can hold: the label and the series
/// description are LO values (64 characters, no backslash, which separates values, nor control
/// characters).
fn validate_options(options: &MapObjectOptions) -> Result<()> {
    if let Some(uid) = &options.series_instance_uid {
        validate_uid(uid, "the Series Instance UID")?;
    }
    let texts = [("label", Some(options.label.as_str())), ("series description", options.series_description.as_deref())];
    for (what, text) in texts {
        let Some(text) = text else { continue };
        if text.chars().count() > 64 || text.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(Error::InvalidArgument(format!(
                "the {what} {text:?} cannot be a DICOM LO value: at most 64 characters, without backslashes or control characters"
            )));
        }
    }
    Ok(())
}

/// Today's date (DA) and time (TM) in UTC.
fn now_date_time() -> (String, String) {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, second) = (seconds / 86400, seconds % 86400);
    let [year, month, day] = civil_from_days(days as i64);
    (format!("{year:04}{month:02}{day:02}"), format!("{:02}{:02}{:02}", second / 3600, second / 60 % 60, second % 60))
}

/// The Gregorian date `days` after 1970-01-01 (H. Hinnant's days-to-civil algorithm).
fn civil_from_days(days: i64) -> [i64; 3] {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    [yoe + era * 400 + i64::from(month <= 2), month, day]
}

fn type2_vr(tag: Tag) -> VR {
    match tag {
        tags::PATIENT_NAME | tags::REFERRING_PHYSICIAN_NAME => VR::PN,
        tags::PATIENT_BIRTH_DATE | tags::STUDY_DATE => VR::DA,
        tags::STUDY_TIME => VR::TM,
        tags::PATIENT_SEX => VR::CS,
        tags::STUDY_ID | tags::ACCESSION_NUMBER => VR::SH,
        tags::STUDY_INSTANCE_UID => VR::UI,
        _ => VR::LO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_unique_and_valid() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        validate_uid(&a, "new").unwrap();
        assert!(a.len() <= 64 && a.starts_with("2.25.") && a[5..].chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn days_since_1970_are_gregorian_dates() {
        assert_eq!(civil_from_days(0), [1970, 1, 1]);
        assert_eq!(civil_from_days(11016), [2000, 2, 29]);
        assert_eq!(civil_from_days(20792), [2026, 12, 5]);
    }

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        for v in [1.0 / 65535.0, -123456.789, 1e-300, 0.0, 3.0] {
            let s = format_ds(v);
            assert!(s.len() <= 16, "{s}");
            assert!((s.parse::<f64>().unwrap() - v).abs() <= 1e-9 * v.abs().max(1e-300), "{s} vs {v}");
        }
    }
}
