//! Frame bytes → stored sample values (interleaved, one i64 per sample), for each codec. Colour
//! frames come out as RGB when the codec itself undoes a colour transform (JPEG's YCbCr, JPEG 2000's
//! ICT/RCT); YBR_FULL data that no codec converted are converted afterwards (`to_rgb`).
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::format::{stored_value, Codec, Photometric, PixelFormat};
use crate::error::{Error, Result};

/// A decoded frame: `format.frame_samples()` stored values, pixel-interleaved, and the photometric
/// interpretation they are now in.
pub struct Samples {
    pub values: Vec<i64>,
    pub photometric: Photometric,
}

pub fn decode(bytes: &[u8], format: &PixelFormat, codec: Codec, source: &str) -> Result<Samples> {
    // The codec crates can panic on corrupt codestreams; a bad file must be an error, not a crash.
    let decoded = catch_unwind(AssertUnwindSafe(|| match codec {
        Codec::Native | Codec::EncapsulatedNative => decode_native(bytes, format, source),
        Codec::Rle => decode_rle(bytes, format, source),
        Codec::Jpeg => decode_jpeg(bytes, format, source),
        Codec::JpegLs => decode_jpeg_ls(bytes, format, source),
        Codec::Jpeg2000 => decode_jpeg2000(bytes, format, source),
    }));
    let samples = decoded.map_err(|_| Error::InvalidData(format!("{source}: the {codec:?} decoder failed on corrupt pixel data")))??;
    if samples.values.len() != format.frame_samples() {
        return Err(corrupt(source, format!("frame decodes to {} samples, the data set describes {}", samples.values.len(), format.frame_samples())));
    }
    to_rgb(samples, format, source)
}

fn corrupt(source: &str, problem: impl std::fmt::Display) -> Error {
    Error::InvalidData(format!("{source}: {problem}"))
}

/// Little-endian samples, pixel- or plane-interleaved; YBR_FULL_422 stored as Y1 Y2 Cb Cr per pair.
fn decode_native(bytes: &[u8], format: &PixelFormat, source: &str) -> Result<Samples> {
    // Native frames were checked when sliced out; an encapsulated-uncompressed fragment was not.
    if bytes.len() < format.native_frame_len() {
        return Err(corrupt(source, format!("uncompressed frame holds {} bytes, {} needed", bytes.len(), format.native_frame_len())));
    }
    let bytes = &bytes[..format.native_frame_len()];
    let width = format.bytes_per_sample();
    let raw: Vec<i64> = bytes.chunks_exact(width).map(|chunk| format.stored_value(chunk.iter().rev().fold(0u64, |acc, &b| (acc << 8) | b as u64))).collect();
    if format.photometric == Photometric::YbrFull422 {
        return Ok(Samples { values: expand_422(&raw, format, source)?, photometric: Photometric::YbrFull });
    }
    let values = if format.planar && format.samples > 1 { interleave_planes(&raw, format.samples) } else { raw };
    Ok(Samples { values, photometric: format.photometric })
}

/// PS3.3 C.7.6.3.1.2: each pair of pixels stores Y1 Y2 Cb Cr; both pixels share the chroma.
fn expand_422(raw: &[i64], format: &PixelFormat, source: &str) -> Result<Vec<i64>> {
    if !format.columns.is_multiple_of(2) {
        return Err(corrupt(source, format!("YBR_FULL_422 data with an odd number of columns ({})", format.columns)));
    }
    Ok(raw.chunks_exact(4).flat_map(|q| [q[0], q[2], q[3], q[1], q[2], q[3]]).collect())
}

fn interleave_planes(planes: &[i64], samples: usize) -> Vec<i64> {
    let pixels = planes.len() / samples;
    (0..pixels).flat_map(|p| (0..samples).map(move |s| planes[s * pixels + p])).collect()
}

/// RLE Lossless (PS3.5 Annex G): a 64-byte header of segment offsets, then one PackBits segment per
/// byte of each sample, most significant byte first.
fn decode_rle(bytes: &[u8], format: &PixelFormat, source: &str) -> Result<Samples> {
    let header = bytes.get(..64).ok_or_else(|| corrupt(source, "RLE frame is shorter than its 64-byte header"))?;
    let word = |i: usize| u32::from_le_bytes(header[4 * i..4 * i + 4].try_into().expect("4 bytes")) as usize;
    let bytes_per_sample = format.bytes_per_sample();
    let segments = format.samples * bytes_per_sample;
    if word(0) != segments {
        return Err(corrupt(source, format!("RLE frame has {} segments, {} expected", word(0), segments)));
    }
    let pixels = format.pixels();
    // PackBits expands at most 128 bytes from 2: a shorter frame cannot hold the image it claims,
    // and is refused before anything is allocated for it.
    if bytes.len() < 64 + segments * pixels.div_ceil(128) * 2 {
        return Err(corrupt(source, format!("RLE frame of {} bytes is too short for {segments} segments of {pixels} bytes", bytes.len())));
    }
    let mut raw = vec![0u64; format.frame_samples()];
    for segment in 0..segments {
        let start = word(1 + segment);
        let end = if segment + 1 < segments { word(2 + segment) } else { bytes.len() };
        let data = bytes.get(start..end).filter(|_| start >= 64).ok_or_else(|| corrupt(source, format!("RLE segment {segment} lies outside the frame")))?;
        let plane = unpack_bits(data, pixels).ok_or_else(|| corrupt(source, format!("RLE segment {segment} decodes to fewer than {pixels} bytes")))?;
        let (sample, byte) = (segment / bytes_per_sample, segment % bytes_per_sample);
        let shift = 8 * (bytes_per_sample - 1 - byte);
        for (p, &b) in plane.iter().enumerate() {
            raw[p * format.samples + sample] |= (b as u64) << shift;
        }
    }
    Ok(Samples { values: raw.into_iter().map(|r| format.stored_value(r)).collect(), photometric: format.photometric })
}

/// PackBits: a header byte n < 128 copies n + 1 literal bytes, n > 128 repeats the next byte
/// 257 - n times, 128 is a no-op. None when the segment ends before `len` bytes.
fn unpack_bits(data: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len && i < data.len() {
        let n = data[i] as usize;
        i += 1;
        if n < 128 {
            out.extend_from_slice(data.get(i..i + n + 1)?);
            i += n + 1;
        } else if n > 128 {
            out.extend(std::iter::repeat_n(*data.get(i)?, 257 - n));
            i += 1;
        }
    }
    (out.len() >= len).then(|| {
        out.truncate(len);
        out
    })
}

fn decode_jpeg(bytes: &[u8], format: &PixelFormat, source: &str) -> Result<Samples> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    // DICOM's Photometric Interpretation says what the components are; a JPEG decoder guesses from
    // the JFIF/Adobe markers and would turn RGB components without either marker into "YCbCr".
    let markers = app_markers(bytes);
    if format.samples == 3 && format.photometric == Photometric::Rgb && !markers.jfif && !markers.adobe {
        decoder.set_color_transform(jpeg_decoder::ColorTransform::RGB);
    }
    // The header's size is checked before decoding, so a corrupt one cannot make the decoder allocate
    // for an image larger than the data set describes.
    decoder.read_info().map_err(|e| jpeg_error(e, source))?;
    let info = decoder.info().ok_or_else(|| corrupt(source, "JPEG stream has no frame header"))?;
    check_size(info.width as usize, info.height as usize, format, source)?;
    let decoded = decoder.decode().map_err(|e| jpeg_error(e, source))?;
    let wide = info.pixel_format == jpeg_decoder::PixelFormat::L16;
    let values: Vec<i64> = if wide {
        // 9- to 16-bit lossless JPEG comes back as native-endian 16-bit words.
        decoded.chunks_exact(2).map(|w| format.stored_value(u16::from_ne_bytes([w[0], w[1]]) as u64)).collect()
    } else {
        decoded.iter().map(|&b| format.stored_value(b as u64)).collect()
    };
    let photometric = if format.samples == 3 { Photometric::Rgb } else { format.photometric };
    Ok(Samples { values, photometric })
}

fn jpeg_error(err: jpeg_decoder::Error, source: &str) -> Error {
    match err {
        jpeg_decoder::Error::Unsupported(jpeg_decoder::UnsupportedFeature::SamplePrecision(bits)) => {
            Error::Unsupported(format!("{source}: {bits}-bit lossy JPEG (JPEG Extended, process 4) is not supported by the JPEG decoder"))
        }
        jpeg_decoder::Error::Unsupported(feature) => Error::Unsupported(format!("{source}: JPEG feature not supported by the decoder: {feature:?}")),
        other => corrupt(source, format!("JPEG decoding failed: {other}")),
    }
}

struct AppMarkers {
    jfif: bool,
    adobe: bool,
}

/// Which of the JFIF (APP0) and Adobe (APP14) segments a JPEG stream has before its first scan.
fn app_markers(bytes: &[u8]) -> AppMarkers {
    let mut markers = AppMarkers { jfif: false, adobe: false };
    let mut i = 2; // after SOI
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        let length = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        let body = bytes.get(i + 4..(i + 2 + length).min(bytes.len())).unwrap_or(&[]);
        match marker {
            0xE0 if body.starts_with(b"JFIF") => markers.jfif = true,
            0xEE if body.starts_with(b"Adobe") => markers.adobe = true,
            0xDA => break, // start of scan
            _ => {}
        }
        i += 2 + length;
    }
    markers
}

fn decode_jpeg2000(bytes: &[u8], format: &PixelFormat, source: &str) -> Result<Samples> {
    let header = jpeg2000_header(bytes).ok_or_else(|| corrupt(source, "JPEG 2000 frame has no readable image and tile size (SIZ) marker"))?;
    check_size(header.width, header.height, format, source)?;
    if header.components != format.samples || header.tiles == 0 || header.tiles > MAX_JPEG2000_TILES {
        return Err(corrupt(
            source,
            format!("JPEG 2000 header gives {} components in {} tiles for {} samples per pixel", header.components, header.tiles, format.samples),
        ));
    }
    let image = jpeg2k::Image::from_bytes(bytes).map_err(|e| corrupt(source, format!("JPEG 2000 decoding failed: {e}")))?;
    let components = image.components();
    if components.len() != format.samples {
        return Err(corrupt(source, format!("JPEG 2000 frame has {} components, {} expected", components.len(), format.samples)));
    }
    for c in components {
        check_size(c.width() as usize, c.height() as usize, format, source)?;
    }
    let mut values = vec![0i64; format.frame_samples()];
    for (s, component) in components.iter().enumerate() {
        // A codestream whose signedness disagrees with Pixel Representation still holds the right
        // bits: re-read its `precision`-bit pattern the way the data set says (as pydicom does).
        let (precision, j2k_signed) = (component.precision().clamp(1, 32), component.is_signed());
        for (p, &v) in component.data().iter().enumerate().take(format.pixels()) {
            values[p * format.samples + s] = if j2k_signed == format.signed { v as i64 } else { stored_value(v as u32 as u64, precision, format.signed) };
        }
    }
    let photometric = match format.photometric {
        Photometric::YbrIct | Photometric::YbrRct => Photometric::Rgb,
        other => other,
    };
    Ok(Samples { values, photometric })
}

/// JPEG-LS (ISO 14495-1) through CharLS. Its header is read and checked against the data set before
/// anything is decoded (CharLS allocates for the size the header declares). CharLS hands the samples
/// back by plane for a stream without interleaving (ILV 0) and by pixel for line- and
/// sample-interleaved ones (ILV 1, 2); 16-bit samples in native byte order. JPEG-LS codes unsigned values: signed data are re-read from their
/// Bits Stored pattern, as pydicom does.
fn decode_jpeg_ls(bytes: &[u8], format: &PixelFormat, source: &str) -> Result<Samples> {
    let info = charls::CharLS::default().get_frame_info(bytes).map_err(|e| corrupt(source, format!("JPEG-LS header: {e}")))?;
    check_size(info.width as usize, info.height as usize, format, source)?;
    if info.component_count as usize != format.samples || !(2..=16).contains(&info.bits_per_sample) {
        return Err(corrupt(
            source,
            format!("JPEG-LS frame has {} components of {} bits for {} samples per pixel", info.component_count, info.bits_per_sample, format.samples),
        ));
    }
    let decoded = charls::CharLS::default().decode(bytes).map_err(|e| corrupt(source, format!("JPEG-LS decoding failed: {e}")))?;
    let raw: Vec<i64> = if info.bits_per_sample <= 8 {
        decoded.iter().map(|&b| b as i64).collect()
    } else {
        decoded.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]]) as i64).collect()
    };
    if raw.len() != format.frame_samples() {
        return Err(corrupt(source, format!("JPEG-LS frame decodes to {} samples, the data set describes {}", raw.len(), format.frame_samples())));
    }
    let pixel_order = match jpeg_ls_interleave(bytes) {
        Some(0) if format.samples > 1 => interleave_planes(&raw, format.samples),
        _ => raw,
    };
    let values = pixel_order.into_iter().map(|v| format.stored_value(v as u64)).collect();
    Ok(Samples { values, photometric: format.photometric })
}

/// The interleave mode (ILV) of a JPEG-LS stream's first scan: the byte after NEAR in its SOS segment.
fn jpeg_ls_interleave(bytes: &[u8]) -> Option<u8> {
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA])?;
    let components = *bytes.get(sos + 4)? as usize;
    bytes.get(sos + 5 + 2 * components + 1).copied()
}

/// What a JPEG 2000 codestream's SIZ marker segment (ISO 15444-1 A.5.1) says, checked before
/// decoding because openjp2 allocates for it: a corrupt header must not make it allocate gigabytes.
struct Jpeg2000Header {
    width: usize,
    height: usize,
    components: usize,
    tiles: usize,
}

/// The most tiles accepted (a 8192² image in 32² tiles); openjp2 keeps state for every tile.
const MAX_JPEG2000_TILES: usize = 1 << 16;

/// The SIZ segment directly follows the start-of-codestream marker; a JP2 file's codestream box is
/// searched for it.
fn jpeg2000_header(bytes: &[u8]) -> Option<Jpeg2000Header> {
    let start = bytes.windows(4).take(4096).position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    // SOC, SIZ, Lsiz and Rsiz (2 bytes each) come before Xsiz.
    let siz = bytes.get(start + 8..start + 42)?;
    let word = |i: usize| u32::from_be_bytes([siz[i], siz[i + 1], siz[i + 2], siz[i + 3]]) as usize;
    // Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, then Csiz (16 bits).
    let (x, y, x_offset, y_offset, tile_w, tile_h, tile_x, tile_y) = (word(0), word(4), word(8), word(12), word(16), word(20), word(24), word(28));
    let across = x.checked_sub(tile_x)?.div_ceil(tile_w.max(1));
    let down = y.checked_sub(tile_y)?.div_ceil(tile_h.max(1));
    Some(Jpeg2000Header {
        width: x.checked_sub(x_offset)?,
        height: y.checked_sub(y_offset)?,
        components: u16::from_be_bytes([siz[32], siz[33]]) as usize,
        tiles: across.saturating_mul(down),
    })
}

fn check_size(width: usize, height: usize, format: &PixelFormat, source: &str) -> Result<()> {
    if (width, height) != (format.columns, format.rows) {
        return Err(corrupt(source, format!("encoded frame is {width}×{height}, the data set says {}×{}", format.columns, format.rows)));
    }
    Ok(())
}

/// YBR_FULL → RGB with pydicom's coefficients and rounding (PS3.3 C.7.6.3.1.2, JPEG's YCbCr).
/// YBR_FULL_422 still here came from a codec that does not subsample (RLE, JPEG 2000): full-resolution
/// YBR, converted the same way, as pydicom does.
fn to_rgb(samples: Samples, format: &PixelFormat, source: &str) -> Result<Samples> {
    if !matches!(samples.photometric, Photometric::YbrFull | Photometric::YbrFull422) {
        return Ok(samples);
    }
    if format.bits_stored > 8 {
        return Err(Error::Unsupported(format!("{source}: YBR_FULL colour with {} bits per sample (8 supported)", format.bits_stored)));
    }
    let (cb_g, cr_g) = (-0.114f32 * 1.772 / 0.587, -0.299f32 * 1.402 / 0.587);
    let round = |x: f32| (x + 0.5).floor().clamp(0.0, 255.0) as i64;
    let mut values = samples.values;
    for pixel in values.chunks_exact_mut(3) {
        let (y, cb, cr) = (pixel[0] as f32, pixel[1] as f32 - 128.0, pixel[2] as f32 - 128.0);
        pixel[0] = round(y + 1.402 * cr);
        pixel[1] = round(y + cb_g * cb + cr_g * cr);
        pixel[2] = round(y + 1.772 * cb);
    }
    Ok(Samples { values, photometric: Photometric::Rgb })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literal_repeat_and_noop() {
        // 2 literals, a run of 3, a no-op, 1 literal.
        let data = [1, 10, 11, 254, 7, 128, 0, 9];
        assert_eq!(unpack_bits(&data, 6), Some(vec![10, 11, 7, 7, 7, 9]));
        assert_eq!(unpack_bits(&data, 7), None);
        assert_eq!(unpack_bits(&[5, 1], 6), None, "a literal run past the end is corrupt");
    }

    #[test]
    fn stored_values_mask_unused_bits_and_sign_extend() {
        assert_eq!(stored_value(0xF801, 12, false), 0x801);
        assert_eq!(stored_value(0x0FFF, 12, true), -1);
        assert_eq!(stored_value(0x07FF, 12, true), 2047);
        assert_eq!(stored_value(0xFFFF_FFFF, 32, true), -1);
        assert_eq!(stored_value(0xFFFF_FFFF, 32, false), 0xFFFF_FFFF);
    }
}
