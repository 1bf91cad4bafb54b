//! The grey-scale pipeline of PS3.4 N.2: stored values → Modality LUT (rescale, or a lookup table) →
//! VOI LUT (window centre/width with its function, or a lookup table) → [0, 1]; and the palette of
//! PALETTE COLOR images.
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::attributes::Attributes;
use crate::error::{Error, Result};

/// A lookup table (PS3.3 C.11.1.1.1): inputs below `first` map to the first entry, beyond the end
/// to the last.
#[derive(Debug, Clone)]
pub struct Table {
    pub first: i64,
    pub entries: Vec<u16>,
    /// Bits per entry (the third LUT Descriptor value): entries lie in 0 .. 2^bits - 1.
    pub bits: u32,
}

impl Table {
    fn read(attrs: &Attributes, what: &str) -> Result<Self> {
        let descriptor = attrs.words(tags::LUT_DESCRIPTOR, what)?;
        let data = attrs.words(tags::LUT_DATA, what)?;
        Self::from_descriptor(attrs, what, &descriptor, data)
    }

    /// A table from its descriptor (entry count, first mapped value, bits per entry: US or SS, so the
    /// first mapped value may be negative while count and bits are unsigned) and its data.
    fn from_descriptor(attrs: &Attributes, what: &str, descriptor: &[i64], data: Vec<i64>) -> Result<Self> {
        let &[count, first, bits] = descriptor else {
            return Err(attrs.invalid(what, format!("LUT Descriptor has {} values, 3 expected", descriptor.len())));
        };
        Self::from_parts(attrs, what, count & 0xFFFF, first, bits & 0xFFFF, data)
    }

    fn from_parts(attrs: &Attributes, what: &str, count: i64, first: i64, bits: i64, data: Vec<i64>) -> Result<Self> {
        // A count of 0 means 65536 entries.
        let count = if count == 0 { 65536 } else { count as usize };
        if !(1..=16).contains(&bits) {
            return Err(attrs.invalid(what, format!("LUT Descriptor gives {bits} bits per entry (1 to 16 supported)")));
        }
        if data.len() < count {
            return Err(attrs.invalid(what, format!("LUT Data has {} entries, its descriptor says {count}", data.len())));
        }
        let entries = data[..count].iter().map(|&v| v as u16).collect();
        Ok(Table { first, entries, bits: bits as u32 })
    }

    pub fn lookup(&self, value: i64) -> u16 {
        let index = (value - self.first).clamp(0, self.entries.len() as i64 - 1);
        self.entries[index as usize]
    }

    fn max_output(&self) -> f64 {
        ((1u64 << self.bits) - 1) as f64
    }
}

/// The Modality LUT of a grey image: what turns stored values into modality units (HU, OD, ...).
#[derive(Debug, Clone)]
pub enum ModalityLut {
    Identity,
    Rescale { slope: f64, intercept: f64 },
    Table(Table),
}

impl ModalityLut {
    /// The data set's Modality LUT for `frame`: a Modality LUT Sequence, else Rescale Slope and
    /// Intercept (both required, as pydicom requires them), else the enhanced multi-frame Pixel Value
    /// Transformation of the frame (per-frame, then shared functional groups).
    pub fn read(attrs: &Attributes, frame: usize) -> Result<Self> {
        if let Some(item) = attrs.items(tags::MODALITY_LUT_SEQUENCE).first() {
            return Ok(ModalityLut::Table(Table::read(&attrs.item(item), "Modality LUT Sequence")?));
        }
        if let Some(rescale) = rescale(attrs)? {
            return Ok(rescale);
        }
        for group in frame_groups(attrs, frame) {
            let group = attrs.item(group);
            if let Some(item) = group.items(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).first() {
                if let Some(rescale) = rescale(&group.item(item))? {
                    return Ok(rescale);
                }
            }
        }
        Ok(ModalityLut::Identity)
    }

    pub fn apply(&self, value: i64) -> f64 {
        match self {
            ModalityLut::Identity => value as f64,
            ModalityLut::Rescale { slope, intercept } => value as f64 * slope + intercept,
            ModalityLut::Table(table) => table.lookup(value) as f64,
        }
    }
}

fn rescale(attrs: &Attributes) -> Result<Option<ModalityLut>> {
    let slope = attrs.decimal(tags::RESCALE_SLOPE, "Rescale Slope")?;
    let intercept = attrs.decimal(tags::RESCALE_INTERCEPT, "Rescale Intercept")?;
    Ok(match (slope, intercept) {
        (Some(slope), Some(intercept)) => Some(ModalityLut::Rescale { slope, intercept }),
        _ => None,
    })
}

/// The functional-group items that apply to `frame`: its per-frame item, then the shared one.
fn frame_groups<'a>(attrs: &Attributes<'a>, frame: usize) -> Vec<&'a InMemDicomObject> {
    let per_frame = attrs.items(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).get(frame);
    let shared = attrs.items(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    per_frame.into_iter().chain(shared).collect()
}

/// The shape of a window's transfer function (VOI LUT Function, PS3.3 C.11.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VoiFunction {
    /// The default: DICOM's linear window, whose ends sit at centre - 0.5 ± (width - 1) / 2.
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

/// A value-of-interest transform: how modality values map to display grey levels in [0, 1].
#[derive(Debug, Clone)]
pub enum Voi {
    Window {
        center: f64,
        width: f64,
        function: VoiFunction,
    },
    Table(Table),
    /// The frame's own range, stretched to [0, 1].
    MinMax,
}

impl Voi {
    /// The data set's first VOI for `frame` (VOI LUT Sequence, else Window Center/Width with its
    /// function, else the enhanced multi-frame Frame VOI LUT), or None when it has none.
    pub fn read(attrs: &Attributes, frame: usize) -> Result<Option<Self>> {
        if let Some(item) = attrs.items(tags::VOILUT_SEQUENCE).first() {
            return Ok(Some(Voi::Table(Table::read(&attrs.item(item), "VOI LUT Sequence")?)));
        }
        if let Some(window) = window(attrs)? {
            return Ok(Some(window));
        }
        for group in frame_groups(attrs, frame) {
            let group = attrs.item(group);
            if let Some(item) = group.items(tags::FRAME_VOILUT_SEQUENCE).first() {
                if let Some(window) = window(&group.item(item))? {
                    return Ok(Some(window));
                }
            }
        }
        Ok(None)
    }

    /// Checks the parameters a caller or a file gave (PS3.3 C.11.2.1.2 and C.11.2.1.3).
    pub fn validate(&self, source: &str) -> Result<()> {
        if let Voi::Window { center, width, function } = *self {
            let least = if function == VoiFunction::Linear { 1.0 } else { f64::MIN_POSITIVE };
            if !center.is_finite() || !width.is_finite() || width < least {
                return Err(Error::InvalidArgument(format!("{source}: window centre {center}, width {width} is not a valid {function:?} window")));
            }
        }
        Ok(())
    }

    /// Maps the modality values of a frame to [0, 1] in place.
    pub fn apply(&self, values: &mut [f64]) {
        match self {
            Voi::Window { center, width, function } => {
                for v in values.iter_mut() {
                    *v = window_value(*v, *center, *width, *function);
                }
            }
            // The table's input is the modality value (an integer where a table applies).
            Voi::Table(table) => {
                let max = table.max_output();
                for v in values.iter_mut() {
                    *v = table.lookup(v.round() as i64) as f64 / max;
                }
            }
            Voi::MinMax => {
                let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let range = hi - lo;
                for v in values.iter_mut() {
                    *v = if range > 0.0 { (*v - lo) / range } else { 0.0 };
                }
            }
        }
    }
}

fn window(attrs: &Attributes) -> Result<Option<Voi>> {
    let center = attrs.decimal(tags::WINDOW_CENTER, "Window Center")?;
    let width = attrs.decimal(tags::WINDOW_WIDTH, "Window Width")?;
    let (Some(center), Some(width)) = (center, width) else { return Ok(None) };
    let function = match attrs.text(tags::VOILUT_FUNCTION).as_deref() {
        None | Some("LINEAR") => VoiFunction::Linear,
        Some("LINEAR_EXACT") => VoiFunction::LinearExact,
        Some("SIGMOID") => VoiFunction::Sigmoid,
        Some(other) => return Err(attrs.invalid("VOI LUT Function", format!("{other:?} is not LINEAR, LINEAR_EXACT or SIGMOID"))),
    };
    let voi = Voi::Window { center, width, function };
    voi.validate(attrs.source).map_err(|e| Error::InvalidData(e.to_string()))?;
    Ok(Some(voi))
}

/// One value through a window, output in [0, 1] (PS3.3 C.11.2.1.2.1, C.11.2.1.3; pydicom's
/// `apply_windowing` with its output range scaled to [0, 1]).
fn window_value(x: f64, center: f64, width: f64, function: VoiFunction) -> f64 {
    let (c, w) = match function {
        VoiFunction::Linear => (center - 0.5, width - 1.0),
        VoiFunction::LinearExact => (center, width),
        VoiFunction::Sigmoid => return 1.0 / (1.0 + (-4.0 * (x - center) / width).exp()),
    };
    if x <= c - w / 2.0 {
        0.0
    } else if x > c + w / 2.0 {
        1.0
    } else {
        (x - c) / w + 0.5
    }
}

/// The Red, Green and Blue Palette Color Lookup Tables of a PALETTE COLOR image.
pub struct Palette {
    tables: [Table; 3],
}

impl Palette {
    pub fn read(attrs: &Attributes) -> Result<Self> {
        let channels = [
            (tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA, tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA),
            (
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
            (
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            ),
        ];
        let what = "Palette Color Lookup Table";
        let read = |(descriptor_tag, data_tag, segmented_tag)| -> Result<Table> {
            let descriptor = attrs.words(descriptor_tag, what)?;
            let data = if attrs.element(segmented_tag).is_some() {
                if descriptor.get(2) != Some(&16) {
                    return Err(Error::Unsupported(format!("{}: segmented palette tables with 8-bit entries", attrs.source)));
                }
                expand_segmented(&attrs.words(segmented_tag, what)?, 0).ok_or_else(|| attrs.invalid(what, "has a corrupt segmented table"))?
            } else {
                unpack_bytes(attrs, &descriptor, attrs.words(data_tag, what)?)
            };
            Table::from_descriptor(attrs, what, &descriptor, data)
        };
        let [r, g, b] = channels;
        Ok(Palette { tables: [read(r)?, read(g)?, read(b)?] })
    }

    /// The colour of a palette index, each channel in [0, 1].
    pub fn rgb(&self, index: i64) -> [f64; 3] {
        self.tables.each_ref().map(|t| t.lookup(index) as f64 / t.max_output())
    }
}

/// 8-bit palette entries may come packed two to a 16-bit word, in the file's byte order (pydicom
/// reads them so too).
fn unpack_bytes(attrs: &Attributes, descriptor: &[i64], words: Vec<i64>) -> Vec<i64> {
    let packed = descriptor.get(2) == Some(&8) && descriptor.first().is_some_and(|&n| n > 0 && words.len() * 2 == n as usize);
    if !packed {
        return words;
    }
    let (first, second) = if attrs.big_endian { (8, 0) } else { (0, 8) };
    words.iter().flat_map(|&w| [(w >> first) & 0xFF, (w >> second) & 0xFF]).collect()
}

/// The most entries a lookup table has, and how deep indirect segments may nest (a corrupt table
/// must not expand without end).
const MAX_ENTRIES: usize = 65536;
const MAX_INDIRECTION: usize = 4;

/// Expands a segmented palette table of 16-bit entries (PS3.3 C.7.9.2), as pydicom's
/// `_expand_segmented_lut` does: discrete, linear (interpolated from the previous entry, rounded
/// half to even) and indirect segments. None when the table is corrupt.
fn expand_segmented(data: &[i64], depth: usize) -> Option<Vec<i64>> {
    expand_segments(data, None, None, depth)
}

fn expand_segments(data: &[i64], max_segments: Option<usize>, previous: Option<i64>, depth: usize) -> Option<Vec<i64>> {
    let mut lut: Vec<i64> = Vec::new();
    let (mut offset, mut segments) = (0, 0);
    // `offset + 1` allows for a trailing padding word.
    while offset + 1 < data.len() && lut.len() <= MAX_ENTRIES {
        let (opcode, length) = (data[offset], data[offset + 1] as usize);
        offset += 2;
        match opcode {
            0 => {
                lut.extend_from_slice(data.get(offset..offset + length)?);
                offset += length;
            }
            1 => {
                let y0 = lut.last().copied().or(previous)?;
                let y1 = *data.get(offset)?;
                offset += 1;
                lut.extend(linear_segment(y0, y1, length.min(MAX_ENTRIES)));
            }
            2 if depth < MAX_INDIRECTION => {
                let target = (*data.get(offset + 1)? as usize) << 16 | *data.get(offset)? as usize;
                offset += 2;
                let last = *lut.last()?;
                lut.extend(expand_segments(data.get(target..)?, Some(length), Some(last), depth + 1)?);
            }
            _ => return None,
        }
        segments += 1;
        if Some(segments) == max_segments {
            break;
        }
    }
    (lut.len() <= MAX_ENTRIES).then_some(lut)
}

/// `length` entries rising from just after `y0` to `y1`: numpy's linspace(y0 + step, y1, length),
/// rounded half to even.
fn linear_segment(y0: i64, y1: i64, length: usize) -> impl Iterator<Item = i64> {
    let start = y0 as f64 + (y1 - y0) as f64 / length as f64;
    let delta = if length > 1 { (y1 as f64 - start) / (length - 1) as f64 } else { 0.0 };
    (0..length).map(move |i| if i + 1 == length { y1 } else { (start + i as f64 * delta).round_ties_even() as i64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_matches_the_standard() {
        // PS3.3 C.11.2.1.2.1 with centre 2048, width 4096: ends at 0 and 4095.
        assert_eq!(window_value(0.0, 2048.0, 4096.0, VoiFunction::Linear), 0.0);
        assert_eq!(window_value(4095.0, 2048.0, 4096.0, VoiFunction::Linear), 1.0);
        assert!((window_value(2047.5, 2048.0, 4096.0, VoiFunction::Linear) - 0.5).abs() < 1e-12);
        // A width of 1 is a threshold at the centre.
        assert_eq!(window_value(9.0, 10.0, 1.0, VoiFunction::Linear), 0.0);
        assert_eq!(window_value(10.0, 10.0, 1.0, VoiFunction::Linear), 1.0);
        assert!((window_value(10.0, 10.0, 4.0, VoiFunction::Sigmoid) - 0.5).abs() < 1e-12);
        assert_eq!(window_value(12.0, 10.0, 4.0, VoiFunction::LinearExact), 1.0);
    }

    #[test]
    fn segmented_tables_expand_discrete_linear_and_indirect_segments() {
        // Discrete [0, 10], linear to 40 in 3 steps, then an indirect copy of the first segment.
        let data = [0, 2, 0, 10, 1, 3, 40, 2, 1, 0, 0];
        assert_eq!(expand_segmented(&data, 0), Some(vec![0, 10, 20, 30, 40, 0, 10]));
        assert_eq!(expand_segmented(&[1, 2, 5], 0), None, "a linear first segment has nothing to start from");
        assert_eq!(expand_segmented(&[0, 2, 0, 10, 2, 1, 100, 0], 0), None, "an indirect offset outside the table");
    }

    #[test]
    fn min_max_of_a_flat_frame_is_black() {
        let mut values = [3.0, 3.0];
        Voi::MinMax.apply(&mut values);
        assert_eq!(values, [0.0, 0.0]);
    }
}
