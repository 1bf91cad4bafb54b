//! The Image Pixel module (PS3.3 C.7.6.3) and the transfer syntax: what the pixel data bytes mean.
use dicom_dictionary_std::tags;

use super::attributes::Attributes;
use crate::error::{Error, Result};

/// The largest frame accepted, in samples (about 5800 × 5800 grey): bigger than any radiograph or
/// mammogram, small enough that a few kilobytes of JPEG 2000 claiming Rows × Columns cannot make a
/// frame take more than about a gigabyte at its peak.
const MAX_FRAME_SAMPLES: usize = 1 << 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Photometric {
    /// Grey, the minimum value white (inverted for display).
    Monochrome1,
    /// Grey, the minimum value black.
    Monochrome2,
    Rgb,
    /// Luma and chroma at full resolution (8 bits, JPEG's YCbCr).
    YbrFull,
    /// YBR_FULL with the chroma of each pixel pair shared (uncompressed data is stored subsampled).
    YbrFull422,
    /// JPEG 2000's irreversible and reversible colour transforms (the decoder inverts them).
    YbrIct,
    YbrRct,
    /// Indices into the Red/Green/Blue Palette Color Lookup Tables.
    Palette,
}

impl Photometric {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "MONOCHROME1" => Photometric::Monochrome1,
            "MONOCHROME2" => Photometric::Monochrome2,
            "RGB" => Photometric::Rgb,
            "YBR_FULL" => Photometric::YbrFull,
            "YBR_FULL_422" => Photometric::YbrFull422,
            "YBR_ICT" => Photometric::YbrIct,
            "YBR_RCT" => Photometric::YbrRct,
            "PALETTE COLOR" => Photometric::Palette,
            _ => return None,
        })
    }

    pub fn is_grey(self) -> bool {
        matches!(self, Photometric::Monochrome1 | Photometric::Monochrome2)
    }

    fn samples(self) -> usize {
        match self {
            Photometric::Monochrome1 | Photometric::Monochrome2 | Photometric::Palette => 1,
            _ => 3,
        }
    }
}

/// How the transfer syntax stores the pixel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed samples in the data set (implicit/explicit VR, little/big endian, deflated).
    Native,
    /// Uncompressed samples, one fragment per frame (Encapsulated Uncompressed Explicit VR LE).
    EncapsulatedNative,
    Rle,
    /// JPEG baseline (8-bit), extended (8-bit; 12-bit is refused by the decoder) and lossless.
    Jpeg,
    /// JPEG-LS lossless and near-lossless, through CharLS.
    JpegLs,
    Jpeg2000,
}

impl Codec {
    /// The codec of a transfer syntax, or an "unsupported transfer syntax" error naming it.
    pub fn of(transfer_syntax: &str, source: &str) -> Result<Self> {
        Ok(match transfer_syntax {
            "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.2" => Codec::Native,
            "1.2.840.10008.1.2.1.98" => Codec::EncapsulatedNative,
            "1.2.840.10008.1.2.5" => Codec::Rle,
            "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => Codec::Jpeg,
            "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => Codec::JpegLs,
            "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => Codec::Jpeg2000,
            other => {
                let why = match other {
                    "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => " (High-Throughput JPEG 2000)",
                    _ => "",
                };
                return Err(Error::Unsupported(format!("{source}: unsupported transfer syntax {other}{why}")));
            }
        })
    }
}

/// The geometry and sample encoding of a data set's pixel data.
#[derive(Debug, Clone, Copy)]
pub struct PixelFormat {
    pub rows: usize,
    pub columns: usize,
    /// Samples per pixel: 1 (grey or palette) or 3 (colour).
    pub samples: usize,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    /// Planar Configuration 1: all of the first sample's values, then the second's, ...
    pub planar: bool,
    pub photometric: Photometric,
    pub frames: usize,
}

impl PixelFormat {
    pub fn read(attrs: &Attributes) -> Result<Self> {
        let rows = attrs.required_u16(tags::ROWS, "Rows")? as usize;
        let columns = attrs.required_u16(tags::COLUMNS, "Columns")? as usize;
        let samples = attrs.optional_u16(tags::SAMPLES_PER_PIXEL, "Samples per Pixel")?.unwrap_or(1) as usize;
        let bits_allocated = attrs.required_u16(tags::BITS_ALLOCATED, "Bits Allocated")?;
        let bits_stored = attrs.optional_u16(tags::BITS_STORED, "Bits Stored")?.unwrap_or(bits_allocated);
        let signed = match attrs.optional_u16(tags::PIXEL_REPRESENTATION, "Pixel Representation")?.unwrap_or(0) {
            0 => false,
            1 => true,
            other => return Err(attrs.invalid("Pixel Representation", format!("= {other} is neither 0 (unsigned) nor 1 (two's complement)"))),
        };
        let planar = attrs.optional_u16(tags::PLANAR_CONFIGURATION, "Planar Configuration")?.unwrap_or(0) == 1;
        let photometric_text = attrs.text(tags::PHOTOMETRIC_INTERPRETATION).ok_or_else(|| attrs.invalid("has no", "Photometric Interpretation"))?;
        let photometric = Photometric::parse(&photometric_text)
            .ok_or_else(|| Error::Unsupported(format!("{}: unsupported Photometric Interpretation {photometric_text:?}", attrs.source)))?;
        let frames = match attrs.decimal(tags::NUMBER_OF_FRAMES, "Number of Frames")? {
            None => 1,
            Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= u32::MAX as f64 => n as usize,
            Some(n) => return Err(attrs.invalid("Number of Frames", format!("= {n} is not a positive integer"))),
        };
        let format = PixelFormat { rows, columns, samples, bits_allocated, bits_stored, signed, planar, photometric, frames };
        format.validate(attrs)?;
        // PS3.3 C.7.6.3.1: High Bit is one less than Bits Stored (samples sit in the low bits), the
        // only layout the stored values are read in; older files that put them elsewhere would be read
        // wrong, so they are refused rather than guessed at.
        if let Some(high_bit) = attrs.optional_u16(tags::HIGH_BIT, "High Bit")? {
            if u32::from(high_bit) + 1 != u32::from(bits_stored) {
                return Err(attrs.invalid("High Bit", format!("= {high_bit} is not Bits Stored - 1 = {}", bits_stored - 1)));
            }
        }
        Ok(format)
    }

    fn validate(&self, attrs: &Attributes) -> Result<()> {
        if self.rows == 0 || self.columns == 0 {
            return Err(attrs.invalid("image", format!("has a zero side ({} rows × {} columns)", self.rows, self.columns)));
        }
        if self.samples != self.photometric.samples() {
            return Err(attrs.invalid("Samples per Pixel", format!("= {} does not fit Photometric Interpretation {:?}", self.samples, self.photometric)));
        }
        if !matches!(self.bits_allocated, 1 | 8 | 16 | 32) {
            return Err(Error::Unsupported(format!("{}: Bits Allocated {} is not supported (1, 8, 16 or 32)", attrs.source, self.bits_allocated)));
        }
        if self.bits_stored == 0 || self.bits_stored > self.bits_allocated {
            return Err(attrs.invalid("Bits Stored", format!("= {} does not fit Bits Allocated {}", self.bits_stored, self.bits_allocated)));
        }
        if self.frame_samples() > MAX_FRAME_SAMPLES {
            return Err(Error::Unsupported(format!(
                "{}: a {}×{}×{} frame is larger than the supported maximum",
                attrs.source, self.rows, self.columns, self.samples
            )));
        }
        Ok(())
    }

    pub fn pixels(&self) -> usize {
        self.rows * self.columns
    }

    pub fn frame_samples(&self) -> usize {
        self.pixels() * self.samples
    }

    pub fn bytes_per_sample(&self) -> usize {
        self.bits_allocated as usize / 8
    }

    /// The bytes of one uncompressed frame; uncompressed YBR_FULL_422 stores two samples per pixel.
    pub fn native_frame_len(&self) -> usize {
        let samples = if self.photometric == Photometric::YbrFull422 { self.pixels() * 2 } else { self.frame_samples() };
        samples * self.bytes_per_sample()
    }

    /// The format of a frame as `frames::frame_bytes` returns it: bit-packed (1-bit) samples come
    /// out one per byte.
    pub fn unpacked(self) -> Self {
        if self.bits_allocated == 1 {
            PixelFormat { bits_allocated: 8, ..self }
        } else {
            self
        }
    }

    /// The stored value of a sample from its raw bits: the low Bits Stored bits, sign-extended when
    /// the data are signed. The unused high bits may hold anything (PS3.5 8.1.1), e.g. overlays.
    pub fn stored_value(&self, raw: u64) -> i64 {
        stored_value(raw, self.bits_stored as u32, self.signed)
    }
}

/// The low `bits` bits of `raw` as an unsigned or two's-complement integer.
pub fn stored_value(raw: u64, bits: u32, signed: bool) -> i64 {
    let shift = 64 - bits;
    if signed {
        ((raw << shift) as i64) >> shift
    } else {
        ((raw << shift) >> shift) as i64
    }
}
