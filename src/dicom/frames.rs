//! One frame's bytes out of the Pixel Data element: a slice of the native samples, or the fragments
//! of an encapsulated frame (PS3.5 A.4), split the way pydicom's `generate_frames` splits them.
use std::borrow::Cow;

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::VR;
use dicom_dictionary_std::tags;

use super::attributes::Attributes;
use super::format::{Codec, PixelFormat};
use crate::error::{Error, Result};

/// The pixel data of frame `frame`: native samples in little-endian byte order (bit-packed samples
/// unpacked to one byte each, see `PixelFormat::unpacked`), or the encoded frame.
pub fn frame_bytes<'a>(attrs: &Attributes<'a>, format: &PixelFormat, codec: Codec, frame: usize) -> Result<Cow<'a, [u8]>> {
    let element = attrs.element(tags::PIXEL_DATA).ok_or_else(|| attrs.invalid("has no", "Pixel Data"))?;
    if format.bits_allocated == 1 && codec != Codec::Native {
        return Err(Error::Unsupported(format!("{}: 1-bit pixel data is supported uncompressed only", attrs.source)));
    }
    match element.value() {
        Value::Primitive(value) if codec == Codec::Native && format.bits_allocated == 1 => bit_frame(attrs, format, value, frame),
        Value::Primitive(value) if codec == Codec::Native => native_frame(attrs, format, value, element.vr(), frame),
        Value::PixelSequence(sequence) if codec != Codec::Native => {
            encapsulated_frame(attrs, format, codec, sequence.fragments(), sequence.offset_table(), frame)
        }
        _ => Err(attrs.invalid("Pixel Data", "is not encoded as its transfer syntax requires (native vs. encapsulated)")),
    }
}

/// Checks Number of Frames against what Pixel Data holds, before anything is sized by it: native
/// data must hold every frame's bytes, and encapsulated data a fragment at least per frame (a
/// fragment never holds parts of two frames, PS3.5 A.4).
pub fn check_frame_count(attrs: &Attributes, format: &PixelFormat) -> Result<()> {
    let Some(element) = attrs.element(tags::PIXEL_DATA) else { return Ok(()) };
    let (held, needed, unit) = match element.value() {
        Value::Primitive(value) if format.bits_allocated == 1 => {
            (binary_len(value) as u128 * 8, format.frame_samples() as u128 * format.frames as u128, "bits")
        }
        Value::Primitive(value) => (binary_len(value) as u128, format.native_frame_len() as u128 * format.frames as u128, "bytes"),
        Value::PixelSequence(sequence) => (sequence.fragments().len() as u128, format.frames as u128, "fragments"),
        _ => return Ok(()),
    };
    if held < needed {
        return Err(attrs.invalid("Number of Frames", format!("= {} needs {needed} {unit} of Pixel Data, which holds {held}", format.frames)));
    }
    Ok(())
}

fn native_frame<'a>(attrs: &Attributes, format: &PixelFormat, value: &'a PrimitiveValue, vr: VR, frame: usize) -> Result<Cow<'a, [u8]>> {
    let all = little_endian_bytes(attrs, value)?;
    let frame_len = format.native_frame_len();
    let start = frame * frame_len;
    if all.len() < start + frame_len {
        return Err(
            attrs.invalid("Pixel Data", format!("holds {} bytes; frame {frame} needs bytes {start}..{} (truncated file?)", all.len(), start + frame_len))
        );
    }
    let mut bytes = match all {
        Cow::Borrowed(b) => Cow::Borrowed(&b[start..start + frame_len]),
        Cow::Owned(b) => Cow::Owned(b[start..start + frame_len].to_vec()),
    };
    // dicom-object reads OW as 16-bit words whatever Bits Allocated says: in a big-endian file a 32-bit
    // sample comes back as two words, each in the right order but the pair swapped.
    if attrs.big_endian && vr == VR::OW && format.bits_allocated == 32 {
        for sample in bytes.to_mut().chunks_exact_mut(4) {
            sample.rotate_left(2);
        }
    }
    Ok(bytes)
}

/// A frame of bit-packed samples (Bits Allocated 1, least significant bit first, frames not
/// necessarily starting on a byte), one sample per byte.
fn bit_frame(attrs: &Attributes, format: &PixelFormat, value: &PrimitiveValue, frame: usize) -> Result<Cow<'static, [u8]>> {
    let all = little_endian_bytes(attrs, value)?;
    let (first_bit, bits) = (frame * format.frame_samples(), format.frame_samples());
    if all.len() * 8 < first_bit + bits {
        return Err(
            attrs.invalid("Pixel Data", format!("holds {} bits; frame {frame} needs bits {first_bit}..{} (truncated file?)", all.len() * 8, first_bit + bits))
        );
    }
    Ok(Cow::Owned((first_bit..first_bit + bits).map(|i| (all[i / 8] >> (i % 8)) & 1).collect()))
}

/// The bytes of a native Pixel Data value (0 for a value that holds no binary samples).
fn binary_len(value: &PrimitiveValue) -> usize {
    match value {
        PrimitiveValue::U8(bytes) => bytes.len(),
        PrimitiveValue::U16(words) => 2 * words.len(),
        PrimitiveValue::I16(words) => 2 * words.len(),
        PrimitiveValue::U32(words) => 4 * words.len(),
        PrimitiveValue::I32(words) => 4 * words.len(),
        _ => 0,
    }
}

/// A native Pixel Data value as little-endian bytes (dicom-object holds OW as native-endian words).
fn little_endian_bytes<'a>(attrs: &Attributes, value: &'a PrimitiveValue) -> Result<Cow<'a, [u8]>> {
    Ok(match value {
        PrimitiveValue::U8(bytes) => Cow::Borrowed(&bytes[..]),
        PrimitiveValue::U16(words) => Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect()),
        PrimitiveValue::I16(words) => Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect()),
        PrimitiveValue::U32(words) => Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect()),
        PrimitiveValue::I32(words) => Cow::Owned(words.iter().flat_map(|w| w.to_le_bytes()).collect()),
        _ => return Err(attrs.invalid("Pixel Data", "does not hold binary samples")),
    })
}

fn encapsulated_frame<'a, F: AsRef<[u8]>>(
    attrs: &Attributes,
    format: &PixelFormat,
    codec: Codec,
    fragments: &'a [F],
    offsets: &[u32],
    frame: usize,
) -> Result<Cow<'a, [u8]>> {
    let frames = format.frames;
    if fragments.is_empty() {
        return Err(attrs.invalid("Pixel Data", "has no fragments"));
    }
    let range = if frames == 1 {
        0..fragments.len()
    } else if fragments.len() == frames {
        frame..frame + 1
    } else if !offsets.is_empty() {
        range_from_offset_table(attrs, fragments, offsets, frames, frame)?
    } else {
        range_from_markers(attrs, codec, fragments, frames, frame)?
    };
    Ok(match &fragments[range] {
        [one] => Cow::Borrowed(one.as_ref()),
        many => Cow::Owned(many.iter().flat_map(|f| f.as_ref().iter().copied()).collect()),
    })
}

/// Fragments of a frame by the Basic Offset Table: offsets count the bytes of the items (an 8-byte
/// item header plus the fragment) from the first fragment.
fn range_from_offset_table<F: AsRef<[u8]>>(
    attrs: &Attributes,
    fragments: &[F],
    offsets: &[u32],
    frames: usize,
    frame: usize,
) -> Result<std::ops::Range<usize>> {
    if offsets.len() != frames {
        return Err(attrs.invalid("Basic Offset Table", format!("has {} entries for {frames} frames", offsets.len())));
    }
    let mut starts = Vec::with_capacity(fragments.len());
    let mut position = 0u64;
    for fragment in fragments {
        starts.push(position);
        position += 8 + fragment.as_ref().len() as u64;
    }
    let begin = offsets[frame] as u64;
    let end = offsets.get(frame + 1).map_or(u64::MAX, |&o| o as u64);
    let first = starts.iter().position(|&s| s == begin);
    let count = starts.iter().filter(|&&s| s >= begin && s < end).count();
    match first {
        Some(first) if count > 0 => Ok(first..first + count),
        _ => Err(attrs.invalid("Basic Offset Table", format!("entry {frame} ({begin}) is not the start of a fragment"))),
    }
}

/// Fragments of a frame found by the codestream's start marker at the start of a fragment.
fn range_from_markers<F: AsRef<[u8]>>(attrs: &Attributes, codec: Codec, fragments: &[F], frames: usize, frame: usize) -> Result<std::ops::Range<usize>> {
    let marker: &[u8] = match codec {
        Codec::Jpeg => &[0xFF, 0xD8],
        Codec::Jpeg2000 => &[0xFF, 0x4F, 0xFF, 0x51],
        _ => return Err(attrs.invalid("Pixel Data", format!("has {} fragments for {frames} frames and no offset table", fragments.len()))),
    };
    let starts: Vec<usize> = fragments.iter().enumerate().filter(|(_, f)| f.as_ref().starts_with(marker)).map(|(i, _)| i).collect();
    if starts.len() != frames || starts.first() != Some(&0) {
        return Err(
            attrs.invalid("Pixel Data", format!("has {} fragments starting a codestream for {frames} frames; the frame boundaries are unknown", starts.len()))
        );
    }
    let end = starts.get(frame + 1).copied().unwrap_or(fragments.len());
    Ok(starts[frame]..end)
}
