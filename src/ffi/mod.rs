//! The C ABI (`include/diffmine.h`): thin wrappers over the safe Rust API. Conventions: `dm_` prefix,
//! `dm_<type>_<verb>`, opaque handles, a `dm_status` from every call with the message in a thread-local
//! last error, outputs written only on success, every body inside one panic boundary.
#![deny(unsafe_op_in_unsafe_fn)]

mod args;
mod cxr8;
mod dicom;
mod error;
mod finetune;
mod handle;
mod image;
mod log;
mod miner;
mod mining_handle;
mod model;
mod parallel_miner;
mod stages;
mod status;
mod translate;
mod typicality;
mod version;

pub use cxr8::*;
pub use dicom::*;
pub use error::{dm_last_error, dm_last_error_copy};
pub use finetune::*;
pub use image::*;
pub use log::{dm_log_fn, dm_log_set_callback, DM_LOG_DEBUG, DM_LOG_ERROR, DM_LOG_INFO, DM_LOG_TRACE, DM_LOG_WARN};
pub use miner::*;
pub use model::*;
pub use parallel_miner::*;
pub use stages::*;
pub use status::dm_status;
pub use translate::*;
pub use typicality::*;
pub use version::*;
