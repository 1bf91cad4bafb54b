//! A walk over a DICOM stream's element headers before dicom-object parses it. dicom-parser 0.10
//! allocates and zero-fills an element's declared length before reading its value, so a corrupt
//! 2 KB file declaring a 4 GB value takes 4 GB of memory (found by the fuzz target). Here every
//! declared length is checked against the bytes that actually remain in its enclosing item, sequence
//! or file, and sequence nesting is bounded, so the parser never sees an impossible length.
//! The walk rejects only what is certainly wrong; a structure it does not follow is left to the parser.
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use std::io::Read;

use crate::error::{Error, Result};

/// Sequences nested deeper than this are refused (the parser recurses per level).
const MAX_DEPTH: usize = 32;
/// A deflated data set may expand to at most this many bytes.
const MAX_INFLATED: u64 = 1 << 30;
const UNDEFINED: u32 = u32::MAX;

/// Checks the declared lengths of a Part 10 stream (`bytes`, with or without its preamble).
pub fn check_lengths(bytes: &[u8], source: &str) -> Result<()> {
    let start = if bytes.get(128..132) == Some(b"DICM") {
        132
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        return Ok(()); // not a Part 10 stream: the parser says why
    };
    let mut meta = Walker { bytes, pos: start, explicit: true, big_endian: false, source, lost: false };
    let transfer_syntax = meta.meta_group()?;
    let data_set = &bytes[meta.pos.min(bytes.len())..];
    let Some(transfer_syntax) = transfer_syntax else {
        // Without a transfer syntax the parser's choice is unknown: both little-endian encodings must pass.
        Walker { bytes: data_set, pos: 0, explicit: true, big_endian: false, source, lost: false }.data_set(data_set.len(), 0, false)?;
        return Walker { bytes: data_set, pos: 0, explicit: false, big_endian: false, source, lost: false }.data_set(data_set.len(), 0, false);
    };
    match transfer_syntax.as_str() {
        "1.2.840.10008.1.2" => Walker { bytes: data_set, pos: 0, explicit: false, big_endian: false, source, lost: false }.data_set(data_set.len(), 0, false),
        "1.2.840.10008.1.2.2" => Walker { bytes: data_set, pos: 0, explicit: true, big_endian: true, source, lost: false }.data_set(data_set.len(), 0, false),
        "1.2.840.10008.1.2.1.99" => {
            let inflated = inflate(data_set, source)?;
            Walker { bytes: &inflated, pos: 0, explicit: true, big_endian: false, source, lost: false }.data_set(inflated.len(), 0, false)
        }
        _ => Walker { bytes: data_set, pos: 0, explicit: true, big_endian: false, source, lost: false }.data_set(data_set.len(), 0, false),
    }
}

fn inflate(data: &[u8], source: &str) -> Result<Vec<u8>> {
    let mut inflated = Vec::new();
    let mut decoder = flate2::read::DeflateDecoder::new(data).take(MAX_INFLATED + 1);
    decoder.read_to_end(&mut inflated).map_err(|e| Error::InvalidData(format!("{source}: deflated data set does not inflate ({e})")))?;
    if inflated.len() as u64 > MAX_INFLATED {
        return Err(Error::InvalidData(format!("{source}: deflated data set inflates beyond {MAX_INFLATED} bytes")));
    }
    Ok(inflated)
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    explicit: bool,
    big_endian: bool,
    source: &'a str,
    /// Set when the walk meets a structure it does not follow: it stops, accepting what it saw.
    lost: bool,
}

/// What one element header says.
struct Header {
    tag: Tag,
    vr: Option<VR>,
    length: u32,
}

impl Walker<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let b = self.bytes.get(at..at + 2)?;
        Some(if self.big_endian { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.bytes.get(at..at + 4)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// The next element header; None (and the walk lost) at the end of the bytes or on a header the
    /// walk cannot read.
    fn header(&mut self) -> Option<Header> {
        let header = self.read_header();
        self.lost |= header.is_none();
        header
    }

    fn read_header(&mut self) -> Option<Header> {
        let tag = Tag(self.u16_at(self.pos)?, self.u16_at(self.pos + 2)?);
        // Items and delimiters have no VR in any transfer syntax.
        if tag.group() == 0xFFFE || !self.explicit {
            let length = self.u32_at(self.pos + 4)?;
            self.pos += 8;
            return Some(Header { tag, vr: None, length });
        }
        // As dicom-encoding reads it: an unknown VR is UN, and only the VRs of PS3.5 Table 7.1-2 have
        // a 16-bit length.
        let vr = VR::from_binary([*self.bytes.get(self.pos + 4)?, *self.bytes.get(self.pos + 5)?]).unwrap_or(VR::UN);
        let short = matches!(
            vr,
            VR::AE
                | VR::AS
                | VR::AT
                | VR::CS
                | VR::DA
                | VR::DS
                | VR::DT
                | VR::FL
                | VR::FD
                | VR::IS
                | VR::LO
                | VR::LT
                | VR::PN
                | VR::SH
                | VR::SL
                | VR::SS
                | VR::ST
                | VR::TM
                | VR::UI
                | VR::UL
                | VR::US
        );
        let (length, size) = if short { (self.u16_at(self.pos + 6)? as u32, 8) } else { (self.u32_at(self.pos + 8)?, 12) };
        self.pos += size;
        Some(Header { tag, vr: Some(vr), length })
    }

    fn too_long(&self, header: &Header, end: usize) -> Error {
        Error::InvalidData(format!(
            "{}: element {} declares {} bytes where {} remain (corrupt or truncated file)",
            self.source,
            header.tag,
            header.length,
            end.saturating_sub(self.pos)
        ))
    }

    /// The file meta group (explicit VR little endian); returns its Transfer Syntax UID. Like
    /// dicom-object, the group's extent comes from its File Meta Information Group Length when the
    /// group starts with one (whatever tags lie inside), else it runs while the group is 0002.
    fn meta_group(&mut self) -> Result<Option<String>> {
        let mut transfer_syntax = None;
        let mut end = None;
        while end.map_or(self.u16_at(self.pos) == Some(0x0002), |end| self.pos < end) {
            let Some(header) = self.header() else { break };
            let length = header.length as usize;
            if header.length == UNDEFINED || length > self.bytes.len() - self.pos {
                return Err(self.too_long(&header, self.bytes.len()));
            }
            let value = &self.bytes[self.pos..self.pos + length];
            match header.tag {
                Tag(0x0002, 0x0000) if end.is_none() && length == 4 => {
                    end = Some(self.pos + 4 + u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize);
                }
                Tag(0x0002, 0x0010) => transfer_syntax = Some(String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_string()),
                _ => {}
            }
            self.pos += length;
        }
        self.lost = false;
        Ok(transfer_syntax)
    }

    /// Elements up to `end`, or up to an item delimiter when `delimited`.
    fn data_set(&mut self, end: usize, depth: usize, delimited: bool) -> Result<()> {
        while self.pos < end && !self.lost {
            let Some(header) = self.header() else { return Ok(()) };
            if header.tag == Tag(0xFFFE, 0xE00D) && delimited {
                return Ok(());
            }
            if header.length == UNDEFINED {
                self.undefined_length(&header, end, depth)?;
                continue;
            }
            // Any other header, (FFFE,xxxx) ones included, is read by the parser as an element.
            if header.length as usize > end.saturating_sub(self.pos) {
                return Err(self.too_long(&header, end));
            }
            let value_end = self.pos + header.length as usize;
            if self.is_sequence(&header) {
                self.items(value_end, depth + 1, false, false)?;
                self.pos = value_end;
            } else {
                self.pos += self.consumed(&header);
            }
        }
        Ok(())
    }

    /// An undefined-length value: a sequence (items up to a sequence delimiter) or encapsulated pixel
    /// data (fragments). An undefined-length UN (a sequence in implicit VR, PS3.5 6.2.2) is refused:
    /// dicom-parser 0.10 reads its first item tag as a length and allocates ~3.7 GB before failing.
    fn undefined_length(&mut self, header: &Header, end: usize, depth: usize) -> Result<()> {
        if header.vr == Some(VR::UN) {
            return Err(Error::Unsupported(format!(
                "{}: element {} is an undefined-length UN sequence, which the DICOM parser cannot read",
                self.source, header.tag
            )));
        }
        self.items(end, depth + 1, true, header.tag == Tag(0x7FE0, 0x0010))
    }

    /// The VR the parser reads a value with: the header's, else the dictionary's (implicit VR).
    fn vr(&self, header: &Header) -> VR {
        header.vr.unwrap_or_else(|| StandardDataDictionary.by_tag(header.tag).map_or(VR::UN, |entry| entry.vr().relaxed()))
    }

    fn is_sequence(&self, header: &Header) -> bool {
        self.vr(header) == VR::SQ
    }

    /// The bytes the parser consumes for a value: binary numbers are read whole, so a length that is
    /// not a multiple of their size leaves the rest to be read as the next header (dicom-parser 0.10
    /// does this, and the walk must stay where the parser is).
    fn consumed(&self, header: &Header) -> usize {
        let length = header.length as usize;
        let size = match self.vr(header) {
            VR::US | VR::OW | VR::SS => 2,
            VR::UL | VR::OL | VR::SL | VR::FL | VR::OF | VR::AT => 4,
            VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
            _ => 1,
        };
        length - length % size
    }

    /// Items up to `end`, or up to a sequence delimiter when `delimited`; fragment items hold bytes.
    fn items(&mut self, end: usize, depth: usize, delimited: bool, fragments: bool) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::InvalidData(format!("{}: sequences nest deeper than {MAX_DEPTH} levels", self.source)));
        }
        while self.pos < end && !self.lost {
            let Some(header) = self.header() else { return Ok(()) };
            if header.tag == Tag(0xFFFE, 0xE0DD) && delimited {
                return Ok(());
            }
            if header.length != UNDEFINED && header.length as usize > end.saturating_sub(self.pos) {
                return Err(self.too_long(&header, end));
            }
            match header.tag {
                Tag(0xFFFE, 0xE000) => {}
                // A stray item delimiter between items: the parser passes over it, so does the walk.
                Tag(0xFFFE, 0xE00D) => continue,
                // The parser ends the sequence here and reads on in the enclosing data set, past where
                // the sequence's length says it ends; the walk cannot follow both readings, so the
                // file is refused (a fuzz finding: what followed declared a 4 GB element).
                Tag(0xFFFE, 0xE0DD) => {
                    return Err(Error::InvalidData(format!("{}: a sequence delimiter inside a sequence of defined length (corrupt file)", self.source)));
                }
                _ => {
                    self.lost = true; // not an item: the parser stops with an error
                    return Ok(());
                }
            }
            if header.length == UNDEFINED && !fragments {
                self.data_set(end, depth, true)?;
                continue;
            }
            let item_end = self.pos + header.length as usize;
            if !fragments {
                self.data_set(item_end, depth, false)?;
            }
            self.pos = item_end;
        }
        Ok(())
    }
}
