//! Forwards the library's `tracing` events to a C callback, so a host application sees them in its own
//! log. Installed as the process's global tracing subscriber on first use.
use std::ffi::{c_char, c_void, CString};
use std::fmt::Write as _;
use std::sync::{OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::error::{guard, FfiError};
use super::status::dm_status;

pub const DM_LOG_ERROR: i32 = 1;
pub const DM_LOG_WARN: i32 = 2;
pub const DM_LOG_INFO: i32 = 3;
pub const DM_LOG_DEBUG: i32 = 4;
pub const DM_LOG_TRACE: i32 = 5;

/// Receives one log event: its level (`DM_LOG_*`), target (the Rust module) and message, valid only
/// during the call. May be called from any thread the library runs work on.
#[allow(non_camel_case_types)]
pub type dm_log_fn = Option<unsafe extern "C" fn(level: i32, target: *const c_char, message: *const c_char, user_data: *mut c_void)>;

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(i32, *const c_char, *const c_char, *mut c_void),
    max_level: i32,
    user_data: *mut c_void,
}

// SAFETY: the caller of dm_log_set_callback promises that the callback and user_data may be used from
// any thread (stated in the header).
unsafe impl Send for Sink {}
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

fn level_number(level: &Level) -> i32 {
    match *level {
        Level::ERROR => DM_LOG_ERROR,
        Level::WARN => DM_LOG_WARN,
        Level::INFO => DM_LOG_INFO,
        Level::DEBUG => DM_LOG_DEBUG,
        Level::TRACE => DM_LOG_TRACE,
    }
}

/// Collects an event's message and fields into one line: `message key=value ...`.
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
}

struct CallbackLayer;

impl<S: Subscriber> Layer<S> for CallbackLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = *SINK.read().unwrap_or_else(|p| p.into_inner()) else { return };
        let level = level_number(event.metadata().level());
        if level > sink.max_level {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let target = CString::new(event.metadata().target()).unwrap_or_default();
        let message = CString::new(line.0.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the callback was registered by the host for exactly this use; both strings live
        // until it returns.
        unsafe { (sink.callback)(level, target.as_ptr(), message.as_ptr(), sink.user_data) };
    }
}

/// Installs the forwarding subscriber once; fails if the host process already set another global
/// tracing subscriber (a Rust host then sees our events in its own).
fn install_subscriber() -> Result<(), FfiError> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let ok = *INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(CallbackLayer);
        tracing::subscriber::set_global_default(subscriber).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(FfiError::Invalid("another global tracing subscriber is already installed in this process".into()))
    }
}

/// Sends log events up to `max_level` (`DM_LOG_ERROR` .. `DM_LOG_TRACE`) to `callback`; a NULL
/// callback stops forwarding (and `max_level` is then ignored). The callback may be called from several threads at once.
#[no_mangle]
pub extern "C" fn dm_log_set_callback(callback: dm_log_fn, max_level: i32, user_data: *mut c_void) -> dm_status {
    guard(|| {
        if callback.is_some() && !(DM_LOG_ERROR..=DM_LOG_TRACE).contains(&max_level) {
            return Err(FfiError::Invalid(format!("`max_level` = {max_level} is not a DM_LOG_* level (1..5)")));
        }
        install_subscriber()?;
        let sink = callback.map(|callback| Sink { callback, max_level, user_data });
        *SINK.write().unwrap_or_else(|p| p.into_inner()) = sink;
        Ok(())
    })
}
