//! Opaque handles. A handle is a number the library never hands out twice, standing for a value kept
//! in a registry of live objects, so a freed, foreign or wrong-type pointer is reported as
//! `DM_ERR_INVALID_HANDLE` instead of being dereferenced. (An address would not do: a freed object's
//! address is soon reused by the next one, and the stale handle would pass for the new object.) Each call takes a counted reference out of the registry: a `_free` on another thread
//! while a call is running only drops the registry's reference, and the object lives until the call ends.
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::error::{FfiError, FfiResult};

type Live = HashMap<usize, Arc<dyn Any + Send + Sync>>;

fn registry() -> &'static Mutex<Live> {
    static LIVE: OnceLock<Mutex<Live>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock() -> std::sync::MutexGuard<'static, Live> {
    // A panic while the lock was held cannot leave the map inconsistent (single inserts and removes),
    // so a poisoned lock is still usable.
    registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The next handle number. Steps of 16 keep handles looking like aligned pointers to tools that
/// inspect them; starting high keeps them clear of small integers passed by mistake.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0x1000);

/// Registers `value` and returns its handle, typed as the C-side opaque struct `H`.
pub(crate) fn register<T: Send + Sync + 'static, H>(value: T) -> *mut H {
    let handle = NEXT_HANDLE.fetch_add(16, Ordering::Relaxed);
    lock().insert(handle, Arc::new(value));
    handle as *mut H
}

/// The object behind `handle`, if it is a live handle of type `T`.
pub(crate) fn get<T: Send + Sync + 'static, H>(handle: *const H, what: &'static str) -> FfiResult<Arc<T>> {
    if handle.is_null() {
        return Err(FfiError::Null(what));
    }
    let object = lock().get(&(handle as usize)).cloned().ok_or(FfiError::InvalidHandle(what))?;
    object.downcast::<T>().map_err(|_| FfiError::InvalidHandle(what))
}

/// Runs `f` on the object behind `handle` with exclusive access, which it has only while no other
/// call runs on it and no other object holds it (a miner keeps its model): then the registry's
/// reference is the only one. The registry stays locked meanwhile, so no call can take a new
/// reference; calls on other handles wait, and `f` must not reach the registry.
pub(crate) fn with_exclusive<T: Send + Sync + 'static, H, R>(handle: *mut H, what: &'static str, f: impl FnOnce(&mut T) -> FfiResult<R>) -> FfiResult<R> {
    if handle.is_null() {
        return Err(FfiError::Null(what));
    }
    let mut live = lock();
    let object = live.get_mut(&(handle as usize)).filter(|o| o.is::<T>()).ok_or(FfiError::InvalidHandle(what))?;
    let object = Arc::get_mut(object).ok_or_else(|| {
        FfiError::Invalid(format!("`{what}` is in use (by a call on another thread, or by an object made from it such as a miner): it can only be changed while nothing else holds it"))
    })?;
    f(object.downcast_mut::<T>().ok_or(FfiError::InvalidHandle(what))?)
}

/// Removes a handle of type `T`; NULL is accepted and does nothing.
pub(crate) fn release<T: Send + Sync + 'static, H>(handle: *mut H, what: &'static str) -> FfiResult<()> {
    if handle.is_null() {
        return Ok(());
    }
    let mut live = lock();
    match live.get(&(handle as usize)) {
        Some(object) if object.is::<T>() => {
            live.remove(&(handle as usize));
            Ok(())
        }
        _ => Err(FfiError::InvalidHandle(what)),
    }
}
