//! Reading C arguments: strings, caller buffers, versioned option structs. Each check names the
//! argument in its error.
use std::ffi::{c_char, CStr};

use super::error::{FfiError, FfiResult};

/// A required NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string that outlives the returned reference.
pub(crate) unsafe fn required_str<'a>(ptr: *const c_char, what: &'static str) -> FfiResult<&'a str> {
    // SAFETY: forwarded to the caller's contract.
    unsafe { optional_str(ptr, what) }?.ok_or(FfiError::Null(what))
}

/// An optional NUL-terminated UTF-8 string (NULL means absent).
///
/// # Safety
/// As [`required_str`].
pub(crate) unsafe fn optional_str<'a>(ptr: *const c_char, what: &'static str) -> FfiResult<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map(Some).map_err(|_| FfiError::Invalid(format!("`{what}` is not valid UTF-8")))
}

/// A caller-owned input array of `len` elements.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable, initialised elements.
pub(crate) unsafe fn input_slice<'a, T>(ptr: *const T, len: usize, what: &'static str) -> FfiResult<&'a [T]> {
    if ptr.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: non-NULL with `len` readable elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Copies `result` into the caller's buffer of `len` elements, which must be large enough.
///
/// # Safety
/// `ptr` must be NULL or point to `len` writable elements.
pub(crate) unsafe fn write_output<T: Copy>(result: &[T], ptr: *mut T, len: usize, what: &'static str) -> FfiResult<()> {
    if ptr.is_null() {
        return Err(FfiError::Null(what));
    }
    if len < result.len() {
        return Err(FfiError::BufferTooSmall { what, needed: result.len(), given: len });
    }
    // SAFETY: non-NULL with at least `result.len()` writable elements (checked above).
    unsafe { std::ptr::copy_nonoverlapping(result.as_ptr(), ptr, result.len()) };
    Ok(())
}

/// Writes one output value.
///
/// # Safety
/// `ptr` must be NULL or valid for a write of `T`.
pub(crate) unsafe fn write_value<T>(value: T, ptr: *mut T, what: &'static str) -> FfiResult<()> {
    if ptr.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Writes a versioned output struct (first field `struct_size`) as far as the caller's own
/// `struct_size` says its struct goes: a caller built against an older, smaller struct gets only the
/// fields it knows, and nothing past its struct is written.
///
/// # Safety
/// `ptr` must be NULL or point to a writable struct whose first field is a `size_t` holding the number
/// of writable bytes.
pub(crate) unsafe fn write_sized<T: Copy>(value: T, ptr: *mut T, min_size: usize, what: &'static str) -> FfiResult<()> {
    if ptr.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: the first field of every such struct is a size_t the caller has set.
    let given = unsafe { (ptr as *const usize).read() };
    if given < min_size {
        return Err(FfiError::Invalid(format!("`{what}->struct_size` = {given} is smaller than the first version of the struct ({min_size} bytes)")));
    }
    let n = given.min(std::mem::size_of::<T>());
    // SAFETY: the caller's struct has `given` writable bytes; we write at most that many (and at most
    // the size of T), from a properly initialised local.
    unsafe { std::ptr::copy_nonoverlapping(&value as *const T as *const u8, ptr as *mut u8, n) };
    // SAFETY: as above; the caller's struct keeps the size it declared.
    unsafe { (ptr as *mut usize).write(given) };
    Ok(())
}

/// Reads a versioned options struct whose first field is its `struct_size`: a caller built against an
/// older header passes a smaller struct, and the fields it does not have keep their defaults.
///
/// # Safety
/// `ptr` must be NULL or point to a struct whose first field is a `size_t` holding the number of
/// readable bytes.
pub(crate) unsafe fn read_options<T: Copy>(ptr: *const T, defaults: T, min_size: usize, what: &'static str) -> FfiResult<T> {
    if ptr.is_null() {
        return Ok(defaults);
    }
    // SAFETY: the first field of every options struct is a size_t.
    let given = unsafe { (ptr as *const usize).read() };
    if given < min_size {
        return Err(FfiError::Invalid(format!("`{what}.struct_size` = {given} is smaller than the first version of the struct ({min_size} bytes)")));
    }
    let mut value = defaults;
    let n = given.min(std::mem::size_of::<T>());
    // SAFETY: the caller's struct has `given` readable bytes and we copy at most that many (and at most
    // our own size) into a properly aligned local of type T, whose defaults fill any remaining fields.
    unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, &mut value as *mut T as *mut u8, n) };
    Ok(value)
}

/// Copies `text` NUL-terminated into `out` (room for `out_len` bytes) and its size with the NUL into
/// `*out_needed`; with `out` NULL only the size is written. The size is written when `out` is too
/// small too (`DM_ERR_BUFFER_TOO_SMALL`), so the caller can size a second try.
///
/// # Safety
/// `out` NULL or `out_len` writable bytes; `out_needed` NULL or writable.
pub(crate) unsafe fn write_text(text: &str, out: *mut c_char, out_len: usize, out_needed: *mut usize) -> FfiResult<()> {
    let bytes: Vec<c_char> = text.bytes().chain([0]).map(|b| b as c_char).collect();
    if out_needed.is_null() {
        return Err(FfiError::Null("out_needed"));
    }
    // SAFETY: the caller's contract covers both outputs.
    unsafe {
        write_value(bytes.len(), out_needed, "out_needed")?;
        if !out.is_null() {
            write_output(&bytes, out, out_len, "out")?;
        }
    }
    Ok(())
}

/// Copies `items` into the caller's array `what` and their count into `*out_count`; the count is
/// written when the array is too small too (`DM_ERR_BUFFER_TOO_SMALL`), so the caller can size a
/// second try.
///
/// # Safety
/// `out` NULL or `out_len` writable elements; `out_count` NULL or writable.
pub(crate) unsafe fn write_array<T: Copy>(items: &[T], out: *mut T, out_len: usize, out_count: *mut usize, what: &'static str) -> FfiResult<()> {
    if out_count.is_null() {
        return Err(FfiError::Null("out_count"));
    }
    if out.is_null() {
        return Err(FfiError::Null(what));
    }
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        write_value(items.len(), out_count, "out_count")?;
        write_output(items, out, out_len, what)
    }
}

/// A count option that must be at least 1, named `options.<what>` in the error.
pub(crate) fn at_least_one(value: u32, what: &str) -> FfiResult<usize> {
    match value {
        0 => Err(FfiError::Invalid(format!("`options.{what}` must be at least 1"))),
        v => Ok(v as usize),
    }
}
