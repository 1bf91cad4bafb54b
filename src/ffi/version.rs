//! Library version, as macros in the header (checked against Cargo.toml by a test) and at run time.
use std::ffi::c_char;

pub const DM_VERSION_MAJOR: u32 = 0;
pub const DM_VERSION_MINOR: u32 = 1;
pub const DM_VERSION_PATCH: u32 = 0;

/// The library's version as "MAJOR.MINOR.PATCH" (static storage; do not free).
#[no_mangle]
pub extern "C" fn dm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
