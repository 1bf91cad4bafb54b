//! Library version, as macros in the header and at run time. Cargo.toml's version is the only place it
//! is written: the macros below are literals because cbindgen copies only literals into the header, so
//! the build fails when they differ from Cargo.toml's (and tests/header.rs when the header is stale).
use std::ffi::c_char;

pub const DM_VERSION_MAJOR: u32 = 0;
pub const DM_VERSION_MINOR: u32 = 1;
pub const DM_VERSION_PATCH: u32 = 0;

const _: () = assert!(
    DM_VERSION_MAJOR == parse_decimal(env!("CARGO_PKG_VERSION_MAJOR"))
        && DM_VERSION_MINOR == parse_decimal(env!("CARGO_PKG_VERSION_MINOR"))
        && DM_VERSION_PATCH == parse_decimal(env!("CARGO_PKG_VERSION_PATCH")),
    "DM_VERSION_* in src/ffi/version.rs differ from Cargo.toml's version: update them and regenerate include/diffmine.h"
);

/// A version component as a number, at compile time.
const fn parse_decimal(digits: &str) -> u32 {
    let bytes = digits.as_bytes();
    let mut value = 0;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// The library's version as "MAJOR.MINOR.PATCH" (static storage; do not free).
#[no_mangle]
pub extern "C" fn dm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
