//! Non-finite values (NaN, ±infinity) are errors, not results: one NaN pixel or weight spreads through
//! every convolution and mean after it, and a map of NaN returned as a success is a silent wrong
//! answer. Each check names where the value was found.
use tch::Tensor;

use crate::error::{Error, Result};

/// `Error::InvalidData` naming `what` when `tensor` holds a NaN or an infinity.
pub fn check_tensor(tensor: &Tensor, what: &str) -> Result<()> {
    if tensor.f_isfinite()?.f_all()?.int64_value(&[]) != 0 {
        return Ok(());
    }
    let nan = tensor.f_isnan()?.f_any()?.int64_value(&[]) != 0;
    Err(Error::InvalidData(format!("{what} holds {} values", if nan { "NaN" } else { "infinite" })))
}

/// `Error::InvalidData` naming `what` and the first non-finite value's row and column when the
/// row-major `values` (`width` per row) hold a NaN or an infinity.
pub fn check_values(values: &[f32], width: usize, what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::InvalidData(format!("{what} holds {} at row {}, column {}", values[i], i / width.max(1), i % width.max(1)))),
    }
}
