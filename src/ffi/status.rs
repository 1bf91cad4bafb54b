//! Status codes. The numbers are part of the ABI: never renumber; retire a code by leaving a comment.
use crate::error::Error;

/// The result of every call. `DM_OK` is 0; on anything else `dm_last_error()` says why.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dm_status {
    DM_OK = 0,
    /// A required pointer argument was NULL.
    DM_ERR_NULL_ARGUMENT = 1,
    /// A handle that was never returned by the library, was already freed, or is of another type.
    DM_ERR_INVALID_HANDLE = 2,
    /// An argument out of range or inconsistent with another (shapes, sizes, options).
    DM_ERR_INVALID_ARGUMENT = 3,
    /// A caller-owned output buffer is smaller than the result. A function with an `out_count` or
    /// `out_needed` parameter writes the size it needs there, so the caller can size a second try.
    DM_ERR_BUFFER_TOO_SMALL = 4,
    /// A file or folder is missing, unreadable or cannot be written (the message gives the operating
    /// system's reason, e.g. "No space left on device"); an output file is then left as it was.
    DM_ERR_IO = 5,
    /// A model folder or component is not in a layout the library reads.
    DM_ERR_INVALID_MODEL = 6,
    /// A weight file is truncated or corrupt.
    DM_ERR_CORRUPT_WEIGHTS = 7,
    /// A tensor the configuration needs is missing from the weights.
    DM_ERR_MISSING_TENSOR = 8,
    /// A tensor's shape disagrees with the configuration.
    DM_ERR_SHAPE_MISMATCH = 9,
    /// A format, architecture or option the library does not implement.
    DM_ERR_UNSUPPORTED = 10,
    /// An unknown device, or one this machine does not have.
    DM_ERR_DEVICE = 11,
    /// CPU or GPU memory could not be allocated.
    DM_ERR_OUT_OF_MEMORY = 12,
    /// The progress callback returned non-zero.
    DM_ERR_CANCELLED = 13,
    /// libtorch failed for a reason none of the above describes.
    DM_ERR_TORCH = 14,
    /// A bug in libdiffmine (a caught panic); the message says where.
    DM_ERR_INTERNAL = 15,
    /// An input file is malformed (truncated or corrupt DICOM, a CSV without a required column, a box
    /// outside its image); the message names the file and the problem.
    DM_ERR_INVALID_DATA = 16,
}

impl From<&Error> for dm_status {
    fn from(err: &Error) -> Self {
        match err {
            Error::Io { .. } => dm_status::DM_ERR_IO,
            Error::InvalidModel(_) => dm_status::DM_ERR_INVALID_MODEL,
            Error::CorruptWeights(_) => dm_status::DM_ERR_CORRUPT_WEIGHTS,
            Error::MissingTensor { .. } => dm_status::DM_ERR_MISSING_TENSOR,
            Error::ShapeMismatch { .. } => dm_status::DM_ERR_SHAPE_MISMATCH,
            Error::Unsupported(_) => dm_status::DM_ERR_UNSUPPORTED,
            Error::InvalidArgument(_) => dm_status::DM_ERR_INVALID_ARGUMENT,
            Error::InvalidData(_) => dm_status::DM_ERR_INVALID_DATA,
            Error::Device(_) => dm_status::DM_ERR_DEVICE,
            Error::OutOfMemory(_) => dm_status::DM_ERR_OUT_OF_MEMORY,
            Error::Cancelled => dm_status::DM_ERR_CANCELLED,
            Error::Torch(_) => dm_status::DM_ERR_TORCH,
        }
    }
}
