//! Failures of a C call: the library's own errors plus what only the C boundary can get wrong, the
//! thread-local last-error message, and the panic boundary every entry point runs inside.
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

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

thread_local! {
    /// How many entry points this thread is inside (a callback may call back into the library).
    static CALL_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic inside an entry point on this thread happened, for its message.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks this thread as inside an entry point while it lives.
struct InsideCall;

impl InsideCall {
    fn enter() -> Self {
        CALL_DEPTH.with(|depth| depth.set(depth.get() + 1));
        InsideCall
    }
}

impl Drop for InsideCall {
    fn drop(&mut self) {
        CALL_DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

/// Installs, once, a panic hook that keeps panics inside entry points off the host's stderr (a
/// library must not write there): their report goes to the log (`dm_log_set_callback`) and the
/// message to `dm_last_error`. Panics anywhere else (the CLI, a Rust host's own code) get the hook
/// that was installed before, Rust's usual report by default.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CALL_DEPTH.with(Cell::get) == 0 {
                return previous(info);
            }
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_else(|| "an unknown place".into());
            tracing::error!(reason = %panic_reason(info.payload()), %location, "internal error (a panic inside a C call)");
            PANIC_LOCATION.with(|slot| *slot.borrow_mut() = Some(location));
        }));
    });
}

fn panic_reason(payload: &(dyn Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

/// Runs an entry point's body: maps its error to a status and records the message; catches any panic
/// so that it never unwinds into C (the host may be a PACS server that must not go down).
pub(crate) fn guard(body: impl FnOnce() -> FfiResult<()>) -> dm_status {
    install_panic_hook();
    let inside = InsideCall::enter();
    let outcome = catch_unwind(AssertUnwindSafe(body));
    drop(inside);
    match outcome {
        Ok(Ok(())) => dm_status::DM_OK,
        Ok(Err(err)) => {
            let (status, message) = err.status_and_message();
            tracing::debug!(?status, %message, "call failed");
            set_last_error(message);
            status
        }
        Err(payload) => {
            let location = PANIC_LOCATION.with(|slot| slot.borrow_mut().take()).unwrap_or_else(|| "an unknown place".into());
            set_last_error(format!("internal error: {} (at {location})", panic_reason(payload.as_ref())));
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

#[cfg(test)]
mod tests {
    use std::ffi::{c_void, CStr};
    use std::process::Command;
    use std::sync::Mutex;

    use super::*;
    use crate::ffi::{dm_log_set_callback, DM_LOG_ERROR};

    /// Set in the child process that runs the panicking calls.
    const CHILD: &str = "DIFFMINE_PANIC_CHILD";

    static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    unsafe extern "C" fn collect(_level: i32, _target: *const c_char, message: *const c_char, _user_data: *mut c_void) {
        // SAFETY: the library passes a NUL-terminated message valid during the call.
        let message = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
        LOGGED.lock().unwrap().push(message);
    }

    /// In the child: a panic inside an entry point, then one outside any.
    fn panic_inside_then_outside_a_call() {
        assert_eq!(dm_log_set_callback(Some(collect), DM_LOG_ERROR, std::ptr::null_mut()), dm_status::DM_OK);
        let status = guard(|| panic!("a deliberate panic inside a call"));
        assert_eq!(status, dm_status::DM_ERR_INTERNAL);
        // SAFETY: dm_last_error returns this thread's NUL-terminated message.
        let message = unsafe { CStr::from_ptr(dm_last_error()) }.to_string_lossy().into_owned();
        assert!(message.contains("a deliberate panic inside a call") && message.contains("error.rs:"), "last error: {message}");
        let logged = LOGGED.lock().unwrap().join("\n");
        assert!(logged.contains("a deliberate panic inside a call") && logged.contains("error.rs:"), "log: {logged}");
        assert_eq!(CALL_DEPTH.with(Cell::get), 0, "the call depth unwinds with the panic");
        let _ = catch_unwind(|| panic!("a deliberate panic outside any call"));
    }

    #[test]
    fn a_panic_inside_a_call_reaches_the_log_and_the_last_error_but_not_stderr() {
        if std::env::var_os(CHILD).is_some() {
            return panic_inside_then_outside_a_call();
        }
        let test = "ffi::error::tests::a_panic_inside_a_call_reaches_the_log_and_the_last_error_but_not_stderr";
        let output = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "the child failed:\n{}\n{stderr}", String::from_utf8_lossy(&output.stdout));
        assert!(!stderr.contains("inside a call"), "a panic inside a call reached stderr:\n{stderr}");
        assert!(stderr.contains("panicked at") && stderr.contains("outside any call"), "a panic outside calls keeps Rust's report:\n{stderr}");
    }
}
