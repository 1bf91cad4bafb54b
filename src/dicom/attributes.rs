//! Typed reads of data-set attributes. dicom-object keeps an element whose VR is UN (unknown: a private
//! or explicit-VR-UN encoding) as raw bytes, and its numeric conversions then read those bytes as
//! numbers (a Rescale Slope of "1" becomes 49). Every read here decodes UN bytes as the attribute's
//! real VR instead: text for DS/IS/CS/UI, 16-bit words in the transfer syntax's byte order for US/SS.
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

use crate::error::{Error, Result};

/// A data set (the file's, or a sequence item's) with what is needed to read UN values in it.
#[derive(Clone, Copy)]
pub(crate) struct Attributes<'a> {
    pub object: &'a InMemDicomObject,
    pub big_endian: bool,
    /// The file name, for error messages.
    pub source: &'a str,
}

impl<'a> Attributes<'a> {
    pub fn new(object: &'a InMemDicomObject, big_endian: bool, source: &'a str) -> Self {
        Attributes { object, big_endian, source }
    }

    pub fn element(&self, tag: Tag) -> Option<&'a InMemElement> {
        self.object.get(tag)
    }

    pub fn invalid(&self, what: &str, problem: impl std::fmt::Display) -> Error {
        Error::InvalidData(format!("{}: {what} {problem}", self.source))
    }

    /// A text attribute (CS, UI, LO, SH, ...), trimmed of DICOM padding; None when absent or empty.
    pub fn text(&self, tag: Tag) -> Option<String> {
        let element = self.element(tag)?;
        let text = match (element.vr(), element.value()) {
            (VR::UN, Value::Primitive(PrimitiveValue::U8(bytes))) => String::from_utf8_lossy(bytes).into_owned(),
            _ => element.to_str().ok()?.into_owned(),
        };
        let trimmed = text.trim_matches(|c: char| c == ' ' || c == '\0').to_string();
        (!trimmed.is_empty()).then_some(trimmed)
    }

    /// The values of a decimal-string (DS) or integer-string (IS) attribute; empty when absent. A DS
    /// is a fixed or floating point number (PS3.5 6.2): "NaN" and "inf", which a float parser takes,
    /// are refused.
    pub fn decimals(&self, tag: Tag, what: &str) -> Result<Vec<f64>> {
        let Some(element) = self.element(tag) else { return Ok(Vec::new()) };
        let values = if element.vr() == VR::UN {
            let text = self.text(tag).unwrap_or_default();
            text.split('\\')
                .map(|part| part.trim().parse::<f64>().map_err(|_| self.invalid(what, format!("holds {part:?}, not a number"))))
                .collect::<Result<_>>()?
        } else {
            element.to_multi_float64().map_err(|e| self.invalid(what, format!("is not numeric ({e})")))?
        };
        match values.iter().find(|v| !v.is_finite()) {
            Some(bad) => Err(self.invalid(what, format!("holds {bad}, not a finite number"))),
            None => Ok(values),
        }
    }

    /// The first value of a DS/IS attribute, if present.
    pub fn decimal(&self, tag: Tag, what: &str) -> Result<Option<f64>> {
        Ok(self.decimals(tag, what)?.first().copied())
    }

    /// The values of a US, SS, US-or-SS or OW attribute as integers, signed as parsed (UN words are
    /// read as unsigned); empty when absent.
    pub fn words(&self, tag: Tag, what: &str) -> Result<Vec<i64>> {
        let Some(element) = self.element(tag) else { return Ok(Vec::new()) };
        match element.value() {
            Value::Primitive(PrimitiveValue::U8(bytes)) => Ok(self.words_from_bytes(bytes)),
            _ => element.to_multi_int::<i64>().map_err(|e| self.invalid(what, format!("is not an integer ({e})"))),
        }
    }

    /// A required single 16-bit unsigned attribute (Rows, Bits Allocated, ...).
    pub fn required_u16(&self, tag: Tag, what: &str) -> Result<u16> {
        self.optional_u16(tag, what)?.ok_or_else(|| self.invalid("has no", what))
    }

    pub fn optional_u16(&self, tag: Tag, what: &str) -> Result<Option<u16>> {
        let words = self.words(tag, what)?;
        match words.first() {
            None => Ok(None),
            Some(&value) => u16::try_from(value).map(Some).map_err(|_| self.invalid(what, format!("= {value} is out of range"))),
        }
    }

    /// Items of a sequence attribute; empty when absent.
    pub fn items(&self, tag: Tag) -> &'a [InMemDicomObject] {
        self.element(tag).and_then(|e| e.items()).unwrap_or(&[])
    }

    pub fn item(&self, object: &'a InMemDicomObject) -> Attributes<'a> {
        Attributes { object, ..*self }
    }

    fn words_from_bytes(&self, bytes: &[u8]) -> Vec<i64> {
        let word = |pair: &[u8]| if self.big_endian { u16::from_be_bytes([pair[0], pair[1]]) } else { u16::from_le_bytes([pair[0], pair[1]]) };
        bytes.chunks_exact(2).map(|pair| word(pair) as i64).collect()
    }
}
