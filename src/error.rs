//! The one error type of the safe API. Each variant maps to exactly one C status code (`ffi::status`),
//! so a caller can act on the kind of failure, and carries a message that names the problem.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder that does not exist or cannot be read.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A model folder or component that is not in a supported layout (missing config, wrong format).
    #[error("{0}")]
    InvalidModel(String),
    /// A weight file that is truncated or does not parse as safetensors.
    #[error("{0}")]
    CorruptWeights(String),
    /// A tensor the configuration needs is absent from the weight files.
    #[error("missing tensor `{name}` in {file}")]
    MissingTensor { name: String, file: String },
    /// A tensor whose shape disagrees with what the configuration implies.
    #[error("tensor `{name}` has shape {found:?}, the configuration expects {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<i64>, found: Vec<i64> },
    /// A configuration value the library does not implement (block type, activation, ...).
    #[error("{0}")]
    Unsupported(String),
    /// A caller argument that is out of range or inconsistent (image size, buffer length, timesteps).
    #[error("{0}")]
    InvalidArgument(String),
    /// An input file whose content is malformed: a truncated or corrupt DICOM file, a CSV without a
    /// required column, a bounding box outside its image. The message names the file and the problem.
    #[error("{0}")]
    InvalidData(String),
    /// A device that is unknown or not present on this machine.
    #[error("{0}")]
    Device(String),
    /// CPU or GPU memory could not be allocated.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The progress callback asked to stop.
    #[error("cancelled by the caller")]
    Cancelled,
    /// An error inside libtorch that none of the above explains.
    #[error("libtorch: {0}")]
    Torch(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Error::Io { path: path.into(), message: err.to_string() }
    }
}

impl From<tch::TchError> for Error {
    fn from(err: tch::TchError) -> Self {
        let message = err.to_string();
        // libtorch reports allocation failures as ordinary errors; keep them distinct so a caller
        // can retry with a smaller batch instead of treating the model as broken.
        if message.contains("out of memory") || message.contains("DefaultCPUAllocator: can't allocate") {
            Error::OutOfMemory(first_line(&message))
        } else {
            Error::Torch(first_line(&message))
        }
    }
}

/// libtorch messages carry a C++ backtrace after the first line; callers need only the reason.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}
