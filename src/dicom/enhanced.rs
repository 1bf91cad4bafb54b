//! The multi-frame map objects: a fractional Segmentation (PS3.3 A.51) and a Parametric Map (A.75),
//! each one frame derived from one frame of the source. What they share: the Common Instance
//! Reference (the source's series and instance), Content Identification, the dimension module and a
//! per-frame Derivation Image and Frame Content.
//!
//! A projection radiograph has no Frame of Reference. The Segmentation then goes without one, its
//! frame on the source's pixel grid (Spatial Locations Preserved YES), as readers such as highdicom
//! expect of a segmentation of a DX/CR image. The Parametric Map IOD requires a Frame of Reference
//! and plane position, orientation and pixel measures: the source's where it has them, else a new
//! Frame of Reference of its own with the image in the patient's x–y plane.
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::write::{format_ds, new_uid, put_image_pixel_module, range, MapObjectOptions};
use super::DicomFile;
use crate::error::{Error, Result};
use crate::heatmap;

/// The largest stored value of the Segmentation: stored s means probability s / 255.
const MAX_FRACTIONAL_VALUE: u16 = 255;

/// A code sequence item (PS3.3 8.8): value, scheme, meaning.
fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)));
    item.put(DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from(scheme)));
    item.put(DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)));
    item
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item_with(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    for element in elements {
        item.put(element);
    }
    item
}

fn decimals(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|&v| format_ds(v)).collect())
}

/// How an object's one frame is described.
struct FrameLayout {
    /// The Derivation Code (DCM code value, meaning).
    derivation: (&'static str, &'static str),
    /// The one dimension: its index pointer, that attribute's functional group and a label.
    dimension: (Tag, Tag, &'static str),
    /// The frame's Frame Label, if any.
    frame_label: Option<&'static str>,
    /// Whether the frame lies on the source's pixel grid (Spatial Locations Preserved).
    same_grid: bool,
}

/// Where the frame lies in a Frame of Reference.
struct PlaneGeometry {
    frame_of_reference_uid: String,
    position: [f64; 3],
    orientation: [f64; 6],
    /// The source's Slice Thickness (millimetres), which the pixel measures of a cross-section give.
    slice_thickness: Option<f64>,
}

impl PlaneGeometry {
    /// The geometry of the same field sampled at `spacing` (row, column) instead of `old`: the first
    /// pixel's centre, which Image Position (Patient) gives, moves by half the change of spacing
    /// along the rows and the columns.
    fn resampled(self, old: [f64; 2], spacing: [f64; 2]) -> Self {
        let [rx, ry, rz, cx, cy, cz] = self.orientation;
        let (along_row, along_column) = ((spacing[1] - old[1]) / 2.0, (spacing[0] - old[0]) / 2.0);
        let [x, y, z] = self.position;
        let position = [x + rx * along_row + cx * along_column, y + ry * along_row + cy * along_column, z + rz * along_row + cz * along_column];
        PlaneGeometry { position, ..self }
    }
}

impl DicomFile {
    /// The Segmentation's own modules and pixels; gives the fields its provenance adds (the scaling).
    pub(super) fn put_segmentation(
        &self,
        object: &mut InMemDicomObject,
        frame: usize,
        options: &MapObjectOptions,
        map: &[f32],
        [width, height]: [usize; 2],
        [columns, rows]: [usize; 2],
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let (lo, hi) = range(map);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let probability: Vec<f32> = map.iter().map(|&v| (v - lo) / span).collect();
        let probability = heatmap::resize(probability, height, width, rows, columns);
        let max = MAX_FRACTIONAL_VALUE as f32;
        let stored: Vec<u8> = probability.iter().map(|&p| (p.clamp(0.0, 1.0) * max).round() as u8).collect();
        let extra = serde_json::json!({
            "probability": "(map - map_min) / (map_max - map_min), bilinear to the source's rows and columns, stored as round(255 probability)",
            "map_min": lo,
            "map_max": hi,
            "map_rows": height,
            "map_columns": width,
        });
        let extra = extra.as_object().expect("an object").clone();

        self.put_enhanced_common(object, frame, options, true)?;
        put_image_pixel_module(object, "MONOCHROME2", 1, 8);
        let label = options.label_or_default();
        let algorithm = item_with(vec![
            sequence(tags::ALGORITHM_FAMILY_CODE_SEQUENCE, vec![code("123110", "DCM", "Artificial Intelligence")]),
            DataElement::new(tags::ALGORITHM_NAME, VR::LO, PrimitiveValue::from("libdiffmine")),
            DataElement::new(tags::ALGORITHM_VERSION, VR::LO, PrimitiveValue::from(env!("CARGO_PKG_VERSION"))),
            DataElement::new(tags::ALGORITHM_PARAMETERS, VR::LT, PrimitiveValue::from(options.provenance(extra.clone()))),
        ]);
        let segment = item_with(vec![
            DataElement::new(tags::SEGMENT_NUMBER, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::SEGMENT_LABEL, VR::LO, PrimitiveValue::from(label)),
            DataElement::new(tags::SEGMENT_DESCRIPTION, VR::ST, PrimitiveValue::from(format!("Typicality of {label}: {}", options.prompt))),
            DataElement::new(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, PrimitiveValue::from("AUTOMATIC")),
            DataElement::new(tags::SEGMENT_ALGORITHM_NAME, VR::LO, PrimitiveValue::from("libdiffmine")),
            sequence(tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE, vec![algorithm]),
            sequence(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![code("49755003", "SCT", "Morphologically Abnormal Structure")]),
            sequence(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![code("121071", "DCM", "Finding")]),
        ]);
        let mut put = |tag: Tag, vr: VR, value: PrimitiveValue| {
            object.put(DataElement::new(tag, vr, value));
        };
        put(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00".into());
        put(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY".into());
        put(tags::SEGMENTATION_TYPE, VR::CS, "FRACTIONAL".into());
        put(tags::SEGMENTATION_FRACTIONAL_TYPE, VR::CS, "PROBABILITY".into());
        put(tags::MAXIMUM_FRACTIONAL_VALUE, VR::US, PrimitiveValue::from(MAX_FRACTIONAL_VALUE));
        put(tags::SEGMENTS_OVERLAP, VR::CS, "NO".into());
        object.put(sequence(tags::SEGMENT_SEQUENCE, vec![segment]));
        let segment_identification = sequence(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![item_with(vec![DataElement::new(tags::REFERENCED_SEGMENT_NUMBER, VR::US, PrimitiveValue::from(1u16))])],
        );
        let geometry = self.plane_geometry(frame)?;
        let spacing = self.spacing_at([columns, rows])?;
        let mut shared = vec![segment_identification];
        shared.extend(geometry.as_ref().map(orientation_group));
        shared.extend(geometry.as_ref().zip(spacing).map(|(g, spacing)| pixel_measures_group(spacing, g.slice_thickness)));
        let layout = FrameLayout {
            derivation: ("113076", "Segmentation"),
            dimension: (tags::REFERENCED_SEGMENT_NUMBER, tags::SEGMENT_IDENTIFICATION_SEQUENCE, "Referenced Segment Number"),
            frame_label: None,
            same_grid: true,
        };
        self.put_functional_groups(object, frame, shared, geometry.as_ref(), &layout)?;
        object.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(stored.into())));
        Ok(extra)
    }

    /// The Parametric Map's own modules and its float pixels.
    pub(super) fn put_parametric(&self, object: &mut InMemDicomObject, frame: usize, options: &MapObjectOptions, map: &[f32], size: [usize; 2]) -> Result<()> {
        self.put_enhanced_common(object, frame, options, false)?;
        let (lo, hi) = range(map);
        let label = options.label_or_default();
        let mut put = |tag: Tag, vr: VR, value: PrimitiveValue| {
            object.put(DataElement::new(tag, vr, value));
        };
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
        put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2".into());
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(32u16));
        put(tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME".into());
        put(tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH".into());
        put(tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO".into());
        put(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00".into());
        put(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY".into());
        object.put(sequence(tags::ACQUISITION_CONTEXT_SEQUENCE, vec![]));

        let mapping = item_with(vec![
            DataElement::new(tags::LUT_LABEL, VR::SH, PrimitiveValue::from("TYPICALITY")),
            DataElement::new(tags::LUT_EXPLANATION, VR::LO, PrimitiveValue::from(truncated(&format!("Typicality of {label}"), 64))),
            sequence(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code("1", "UCUM", "no units")]),
            DataElement::new(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_FIRST_VALUE_MAPPED, VR::FD, PrimitiveValue::from(lo as f64)),
            DataElement::new(tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_LAST_VALUE_MAPPED, VR::FD, PrimitiveValue::from(hi as f64)),
            DataElement::new(tags::REAL_WORLD_VALUE_INTERCEPT, VR::FD, PrimitiveValue::from(0.0f64)),
            DataElement::new(tags::REAL_WORLD_VALUE_SLOPE, VR::FD, PrimitiveValue::from(1.0f64)),
        ]);
        let window = item_with(vec![
            DataElement::new(tags::WINDOW_CENTER, VR::DS, decimals(&[(lo as f64 + hi as f64) / 2.0])),
            DataElement::new(tags::WINDOW_WIDTH, VR::DS, decimals(&[(hi as f64 - lo as f64).max(1e-12)])),
            DataElement::new(tags::VOILUT_FUNCTION, VR::CS, PrimitiveValue::from("LINEAR_EXACT")),
        ]);
        let identity = item_with(vec![
            DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("0")),
            DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("1")),
            DataElement::new(tags::RESCALE_TYPE, VR::LO, PrimitiveValue::from("US")),
        ]);
        let frame_type = item_with(vec![DataElement::new(
            tags::FRAME_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["DERIVED", "PRIMARY", "VOLUME", "QUANTITY"].iter().map(|s| s.to_string()).collect()),
        )]);
        let source_size = self.pixel_size()?;
        // Without a spacing from the source, a source pixel counts as a millimetre.
        let source_spacing = self.spacing_at(source_size)?.unwrap_or([1.0, 1.0]);
        let spacing = [source_spacing[0] * source_size[1] as f64 / size[1] as f64, source_spacing[1] * source_size[0] as f64 / size[0] as f64];
        let geometry = match self.plane_geometry(frame)? {
            Some(g) => g.resampled(source_spacing, spacing),
            None => PlaneGeometry { frame_of_reference_uid: new_uid(), position: [0.0; 3], orientation: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], slice_thickness: None },
        };
        let shared = vec![
            sequence(tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE, vec![mapping]),
            sequence(tags::FRAME_VOILUT_SEQUENCE, vec![window]),
            sequence(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, vec![identity]),
            sequence(tags::PARAMETRIC_MAP_FRAME_TYPE_SEQUENCE, vec![frame_type]),
            orientation_group(&geometry),
            pixel_measures_group(spacing, geometry.slice_thickness),
        ];
        let layout = FrameLayout {
            derivation: ("112187", "Unspecified method of calculation"),
            dimension: (tags::FRAME_LABEL, tags::FRAME_CONTENT_SEQUENCE, "Frame Label"),
            frame_label: Some("TYPICALITY"),
            same_grid: size == source_size,
        };
        self.put_functional_groups(object, frame, shared, Some(&geometry), &layout)?;
        let bytes: Vec<u8> = map.iter().flat_map(|v| v.to_le_bytes()).collect();
        object.put(DataElement::new(tags::FLOAT_PIXEL_DATA, VR::OF, PrimitiveValue::U8(bytes.into())));
        Ok(())
    }

    /// The source frame's columns and rows.
    fn pixel_size(&self) -> Result<[usize; 2]> {
        let format = self.pixel_format()?;
        Ok([format.columns, format.rows])
    }

    /// Common Instance Reference, Content Identification and Number of Frames.
    fn put_enhanced_common(&self, object: &mut InMemDicomObject, frame: usize, options: &MapObjectOptions, segmentation: bool) -> Result<()> {
        let source = self.metadata()?;
        let series = source.series_instance_uid.ok_or_else(|| Error::InvalidData(format!("{}: has no Series Instance UID to refer to", self.source)))?;
        let instance = self.reference(source.sop_instance_uid.as_deref().unwrap_or_default(), frame);
        let referenced_series = item_with(vec![
            sequence(tags::REFERENCED_INSTANCE_SEQUENCE, vec![instance]),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series)),
        ]);
        object.put(sequence(tags::REFERENCED_SERIES_SEQUENCE, vec![referenced_series]));
        let content_label = if segmentation { "TYPICALITY_SEG" } else { "TYPICALITY_MAP" };
        object.put(DataElement::new(tags::CONTENT_LABEL, VR::CS, PrimitiveValue::from(content_label)));
        let description = truncated(&format!("Typicality of {}", options.label_or_default()), 64);
        object.put(DataElement::new(tags::CONTENT_DESCRIPTION, VR::LO, PrimitiveValue::from(description)));
        object.put(DataElement::new(tags::CONTENT_CREATOR_NAME, VR::PN, PrimitiveValue::Empty));
        object.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("1")));
        Ok(())
    }

    /// The source frame's Frame of Reference, position and orientation, when it has all three
    /// (cross-sectional images; projection radiographs have none).
    fn plane_geometry(&self, frame: usize) -> Result<Option<PlaneGeometry>> {
        let attrs = self.attributes();
        let Some(frame_of_reference_uid) = attrs.text(tags::FRAME_OF_REFERENCE_UID) else { return Ok(None) };
        let position = attrs.decimals(tags::IMAGE_POSITION_PATIENT, "Image Position (Patient)")?;
        let orientation = attrs.decimals(tags::IMAGE_ORIENTATION_PATIENT, "Image Orientation (Patient)")?;
        // A multi-frame source keeps its positions per frame, in functional groups: not read here.
        if self.frame_count()? > 1 || frame > 0 {
            return Ok(None);
        }
        let slice_thickness = attrs.decimals(tags::SLICE_THICKNESS, "Slice Thickness")?.first().copied();
        Ok(match (position.as_slice(), orientation.as_slice()) {
            (&[x, y, z], &[a, b, c, d, e, f]) => {
                Some(PlaneGeometry { frame_of_reference_uid, position: [x, y, z], orientation: [a, b, c, d, e, f], slice_thickness })
            }
            _ => None,
        })
    }

    /// The dimension module (the layout's one dimension), the Frame of Reference when there is a
    /// geometry, the shared functional groups and the one frame's: where it comes from, its dimension
    /// index, its label and its plane position.
    fn put_functional_groups(
        &self,
        object: &mut InMemDicomObject,
        frame: usize,
        shared: Vec<DataElement<InMemDicomObject>>,
        geometry: Option<&PlaneGeometry>,
        layout: &FrameLayout,
    ) -> Result<()> {
        let (pointer, group, dimension_label) = layout.dimension;
        let organization = new_uid();
        object.put(sequence(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item_with(vec![DataElement::new(tags::DIMENSION_ORGANIZATION_UID, VR::UI, PrimitiveValue::from(organization.as_str()))])],
        ));
        object.put(sequence(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![item_with(vec![
                DataElement::new(tags::DIMENSION_ORGANIZATION_UID, VR::UI, PrimitiveValue::from(organization.as_str())),
                DataElement::new(tags::DIMENSION_INDEX_POINTER, VR::AT, PrimitiveValue::Tags([pointer].into_iter().collect())),
                DataElement::new(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, PrimitiveValue::Tags([group].into_iter().collect())),
                DataElement::new(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, PrimitiveValue::from(dimension_label)),
            ])],
        ));
        if let Some(g) = geometry {
            object.put(DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, PrimitiveValue::from(g.frame_of_reference_uid.as_str())));
            object.put(DataElement::new(tags::POSITION_REFERENCE_INDICATOR, VR::LO, PrimitiveValue::Empty));
        }
        object.put(sequence(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![item_with(shared)]));

        let source_sop = self.metadata()?.sop_instance_uid.unwrap_or_default();
        let mut source = self.reference(&source_sop, frame);
        source.put(DataElement::new(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, PrimitiveValue::from(if layout.same_grid { "YES" } else { "NO" })));
        source.put(sequence(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![code("121322", "DCM", "Source image for image processing operation")]));
        let (derivation, derivation_meaning) = layout.derivation;
        let derivation = item_with(vec![
            sequence(tags::SOURCE_IMAGE_SEQUENCE, vec![source]),
            sequence(tags::DERIVATION_CODE_SEQUENCE, vec![code(derivation, "DCM", derivation_meaning)]),
        ]);
        let mut content = vec![DataElement::new(tags::DIMENSION_INDEX_VALUES, VR::UL, PrimitiveValue::from(1u32))];
        content.extend(layout.frame_label.map(|l| DataElement::new(tags::FRAME_LABEL, VR::LO, PrimitiveValue::from(l))));
        let mut per_frame = vec![sequence(tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]), sequence(tags::FRAME_CONTENT_SEQUENCE, vec![item_with(content)])];
        per_frame.extend(geometry.map(|g| {
            sequence(tags::PLANE_POSITION_SEQUENCE, vec![item_with(vec![DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, decimals(&g.position))])])
        }));
        object.put(sequence(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, vec![item_with(per_frame)]));
        Ok(())
    }
}

fn orientation_group(geometry: &PlaneGeometry) -> DataElement<InMemDicomObject> {
    sequence(
        tags::PLANE_ORIENTATION_SEQUENCE,
        vec![item_with(vec![DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, decimals(&geometry.orientation))])],
    )
}

fn pixel_measures_group(spacing: [f64; 2], slice_thickness: Option<f64>) -> DataElement<InMemDicomObject> {
    let mut measures = vec![DataElement::new(tags::PIXEL_SPACING, VR::DS, decimals(&spacing))];
    measures.extend(slice_thickness.map(|t| DataElement::new(tags::SLICE_THICKNESS, VR::DS, decimals(&[t]))));
    sequence(tags::PIXEL_MEASURES_SEQUENCE, vec![item_with(measures)])
}

/// At most `limit` characters of `text`.
fn truncated(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}
