//! Typicality maps back to the PACS: a Secondary Capture instance in the source image's study (same
//! Study Instance UID and patient/study attributes, a new series and SOP Instance UID, the source in
//! its Source Image Sequence), either as a colour overlay of the map on the image or as the raw map
//! (16-bit grey whose Rescale Slope/Intercept give back the map's values).
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::{DicomFile, DicomOptions};
use crate::error::{Error, Result};

/// How the map is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// RGB, the map (min–max scaled, a heat colour scale) blended half and half on the image.
    Overlay,
    /// MONOCHROME2, 16 bits: stored value v means map value v · Rescale Slope + Rescale Intercept,
    /// the map's range spread over 0..65535 (its error is at most half a slope).
    Raw,
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
    /// as a new instance of this file's study, in a new series unless `series_instance_uid` is given
    /// (to put an overlay and a raw map in one series).
    pub fn write_map(
        &self,
        frame: usize,
        map: &[f32],
        [width, height]: [usize; 2],
        kind: MapKind,
        series_instance_uid: Option<&str>,
        path: &Path,
    ) -> Result<WrittenInstance> {
        if width == 0 || height == 0 || width > u16::MAX as usize || height > u16::MAX as usize || map.len() != width * height {
            return Err(Error::InvalidArgument(format!("a {width}×{height} map cannot be written from {} values", map.len())));
        }
        if let Some(bad) = map.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("the map holds the non-finite value {bad}")));
        }
        if let Some(uid) = series_instance_uid {
            validate_uid(uid, "the Series Instance UID")?;
        }
        let written = WrittenInstance { series_instance_uid: series_instance_uid.map_or_else(new_uid, str::to_string), sop_instance_uid: new_uid() };
        let mut object = self.derived_header(frame, kind, &written, [width, height])?;
        match kind {
            MapKind::Overlay => self.put_overlay(&mut object, frame, map, [width, height])?,
            MapKind::Raw => put_raw(&mut object, map),
        }
        let file = object
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .map_err(|e| Error::InvalidArgument(format!("DICOM meta group for {}: {e}", path.display())))?;
        write_part10(&file, path)?;
        Ok(written)
    }

    /// Everything but the pixels: SOP common, patient, study, series, equipment and image modules.
    fn derived_header(&self, frame: usize, kind: MapKind, written: &WrittenInstance, [width, height]: [usize; 2]) -> Result<InMemDicomObject> {
        let source = self.metadata()?;
        let source_sop = source.sop_instance_uid.clone().ok_or_else(|| Error::InvalidData(format!("{}: has no SOP Instance UID to refer to", self.source)))?;
        if source.study_instance_uid.is_none() {
            return Err(Error::InvalidData(format!("{}: has no Study Instance UID to file the map under", self.source)));
        }
        let mut object = InMemDicomObject::new_empty();
        let mut put = |tag: Tag, vr: VR, value: PrimitiveValue| {
            object.put(DataElement::new(tag, vr, value));
        };
        put(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".into());
        put(tags::SOP_CLASS_UID, VR::UI, uids::SECONDARY_CAPTURE_IMAGE_STORAGE.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, written.sop_instance_uid.as_str().into());
        put(tags::SERIES_INSTANCE_UID, VR::UI, written.series_instance_uid.as_str().into());
        put(tags::IMAGE_TYPE, VR::CS, PrimitiveValue::Strs(["DERIVED", "SECONDARY"].iter().map(|s| s.to_string()).collect()));
        put(tags::MODALITY, VR::CS, "OT".into());
        put(tags::CONVERSION_TYPE, VR::CS, "WSD".into());
        put(tags::SERIES_NUMBER, VR::IS, "9000".into());
        put(tags::INSTANCE_NUMBER, VR::IS, if kind == MapKind::Overlay { "1" } else { "2" }.into());
        put(tags::PATIENT_ORIENTATION, VR::CS, PrimitiveValue::Empty);
        let description = match kind {
            MapKind::Overlay => "libdiffmine typicality map (overlay)",
            MapKind::Raw => "libdiffmine typicality map (raw values)",
        };
        put(tags::SERIES_DESCRIPTION, VR::LO, description.into());
        put(tags::DERIVATION_DESCRIPTION, VR::ST, "Typicality map of a diffusion model (Siglidis et al., ECCV 2024)".into());
        put(tags::BURNED_IN_ANNOTATION, VR::CS, "NO".into());
        put(tags::ROWS, VR::US, PrimitiveValue::from(height as u16));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(width as u16));
        if let Some([row, column]) = source.pixel_spacing {
            let format = self.pixel_format()?;
            let (sy, sx) = (format.rows as f64 / height as f64, format.columns as f64 / width as f64);
            put(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::Strs([format!("{:.6}", row * sy), format!("{:.6}", column * sx)].into_iter().collect()));
        }
        for tag in COPIED {
            object.put(self.object.get(tag).cloned().unwrap_or_else(|| DataElement::new(tag, type2_vr(tag), PrimitiveValue::Empty)));
        }
        object.put(DataElement::new(tags::SOURCE_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![self.reference(&source_sop, frame)])));
        Ok(object)
    }

    /// A Source Image Sequence item pointing at frame `frame` of this file.
    fn reference(&self, sop_instance_uid: &str, frame: usize) -> InMemDicomObject {
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
        let (lo, hi) = range(map);
        let rgb: Vec<u8> = grey
            .pixels()
            .zip(map)
            .flat_map(|(g, &m)| {
                let level = if hi > lo { (m - lo) / (hi - lo) } else { 0.0 };
                heat(level).map(|h| (255.0 * (0.5 * g.0[0].clamp(0.0, 1.0) + 0.5 * h)).round() as u8)
            })
            .collect();
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
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(stored.into()));
}

fn put_image_pixel_module(object: &mut InMemDicomObject, photometric: &str, samples: u16, bits: u16) {
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
fn format_ds(value: f64) -> String {
    (1..=16).rev().map(|digits| format!("{value:.digits$e}")).find(|s| s.len() <= 16).unwrap_or_else(|| "0".into())
}

fn range(map: &[f32]) -> (f32, f32) {
    map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)))
}

/// A black–red–yellow–white colour scale for a level in [0, 1].
fn heat(level: f32) -> [f32; 3] {
    [(3.0 * level).clamp(0.0, 1.0), (3.0 * level - 1.0).clamp(0.0, 1.0), (3.0 * level - 2.0).clamp(0.0, 1.0)]
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
    fn decimal_strings_fit_sixteen_characters() {
        for v in [1.0 / 65535.0, -123456.789, 1e-300, 0.0, 3.0] {
            let s = format_ds(v);
            assert!(s.len() <= 16, "{s}");
            assert!((s.parse::<f64>().unwrap() - v).abs() <= 1e-9 * v.abs().max(1e-300), "{s} vs {v}");
        }
    }
}
