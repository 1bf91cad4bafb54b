//! Failures of a C call: the library's own errors plus what only the C boundary can get wrong, the
//! thread-local last-error message, and the panic boundary every entry point runs inside.
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::status::dm_status;
use crate::error::Error;

pub(crate) enum FfiError {
    Lib(Error),
    Null(&'static str),
    InvalidHandle(&'static str),
    BufferTooSmall { what: &'static str, needed: usize, given: usize },
    Invalid(String),
}

impl From<Error> for FfiError {
    fn from(err: Error) -> Self {
        FfiError::Lib(err)
    }
}

impl From<tch::TchError> for FfiError {
    fn from(err: tch::TchError) -> Self {
        FfiError::Lib(err.into())
    }
}

impl FfiError {
    fn status_and_message(self) -> (dm_status, String) {
        match self {
            FfiError::Lib(err) => (dm_status::from(&err), err.to_string()),
            FfiError::Null(what) => (dm_status::DM_ERR_NULL_ARGUMENT, format!("`{what}` is NULL")),
            FfiError::InvalidHandle(what) => {
                (dm_status::DM_ERR_INVALID_HANDLE, format!("`{what}` is not a live handle of this type (freed, or never created by libdiffmine)"))
            }
            FfiError::BufferTooSmall { what, needed, given } => {
                (dm_status::DM_ERR_BUFFER_TOO_SMALL, format!("`{what}` holds {given} elements, the result needs {needed}"))
            }
            FfiError::Invalid(message) => (dm_status::DM_ERR_INVALID_ARGUMENT, message),
        }
    }
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // A message with an interior NUL cannot be a C string; keep the part before it.
    let message = match CString::new(message) {
        Ok(s) => s,
        Err(e) => {
            let end = e.nul_position();
            CString::new(&e.into_vec()[..end]).unwrap_or_default()
        }
    };
    LAST_ERROR.with(|slot| *slot.borrow_mut() = message);
}

/// Runs an entry point's body: maps its error to a status and records the message; catches any panic
/// so that it never unwinds into C (the host may be a PACS server that must not go down).
pub(crate) fn guard(body: impl FnOnce() -> FfiResult<()>) -> dm_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => dm_status::DM_OK,
        Ok(Err(err)) => {
            let (status, message) = err.status_and_message();
            tracing::debug!(?status, %message, "call failed");
            set_last_error(message);
            status
        }
        Err(payload) => {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(%reason, "internal error (panic caught at the C boundary)");
            set_last_error(format!("internal error: {reason}"));
            dm_status::DM_ERR_INTERNAL
        }
    }
}

/// The message of the last failed call on this thread ("" if none). The pointer stays valid until
/// the next failing call on the same thread; the caller must not free it.
#[no_mangle]
pub extern "C" fn dm_last_error() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

/// Copies the last error message (NUL-terminated, truncated to fit) into `buffer` of `buffer_len` bytes
/// and returns the full message length without the NUL, so a caller can size a second try.
///
/// # Safety
/// `buffer` must be NULL or point to `buffer_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn dm_last_error_copy(buffer: *mut c_char, buffer_len: usize) -> usize {
    LAST_ERROR.with(|slot| {
        let message = slot.borrow();
        let bytes = message.as_bytes();
        if !buffer.is_null() && buffer_len > 0 {
            let n = bytes.len().min(buffer_len - 1);
            // SAFETY: the caller guarantees `buffer` has `buffer_len` writable bytes and n < buffer_len.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, buffer, n);
                *buffer.add(n) = 0;
            }
        }
        bytes.len()
    })
}
