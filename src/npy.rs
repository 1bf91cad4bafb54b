//! NumPy `.npy` files (format version 1.0, little-endian float32, C order): how maps leave the library
//! for Python and other tools (`numpy.load` reads them).
use std::path::Path;

use crate::{Error, Result};

/// The whole file: the magic string, the header length, the header (padded so the data starts on a
/// 64-byte boundary) and the values.
pub fn npy_bytes(values: &[f32], shape: &[usize]) -> Result<Vec<u8>> {
    let count: usize = shape.iter().product();
    if count != values.len() {
        return Err(Error::InvalidArgument(format!("an array of shape {shape:?} holds {count} values, got {}", values.len())));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // The 10-byte preamble, the header and its final newline together fill a multiple of 64 bytes.
    let padding = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(padding));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| Error::InvalidArgument(format!("shape {shape:?} has too many dimensions for a .npy header")))?;
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * values.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(bytes)
}

/// Writes the array to `path` whole or not at all (through [`crate::io::write_atomic`]).
pub fn write_npy(path: &Path, values: &[f32], shape: &[usize]) -> Result<()> {
    crate::io::write_atomic(path, &npy_bytes(values, shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_numpys_and_the_data_starts_on_a_64_byte_boundary() {
        let bytes = npy_bytes(&[1.0, -2.5, 0.0, 3.0, 4.0, 5.0], &[2, 3]).unwrap();
        // numpy 2.x: np.save(f, np.zeros((2, 3), '<f4')) writes exactly this header.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert!(std::str::from_utf8(&bytes[10..10 + header_len]).unwrap().starts_with(header));
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        assert_eq!(&bytes[10 + header_len + 4..10 + header_len + 8], &(-2.5f32).to_le_bytes());
    }

    #[test]
    fn a_shape_that_disagrees_with_the_values_is_refused() {
        assert!(matches!(npy_bytes(&[1.0, 2.0], &[3]), Err(Error::InvalidArgument(_))));
    }
}
