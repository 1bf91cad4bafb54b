//! What the machine can hold. A buffer whose size comes from a caller's number is checked against it
//! before anything is allocated: a failed Rust allocation aborts the whole process (a PACS server, for
//! one), and a request the machine cannot back only ends when the kernel kills it.
use crate::error::{Error, Result};

/// The bytes this process may allocate: the machine's physical memory, or less where the process's
/// address-space limit (`ulimit -v`, `prlimit --as`) says so.
pub fn capacity_bytes() -> u64 {
    physical_bytes().min(address_space_limit())
}

fn physical_bytes() -> u64 {
    // SAFETY: sysconf only reads system constants.
    let (pages, page_size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    if pages <= 0 || page_size <= 0 {
        return u64::MAX;
    }
    (pages as u64).saturating_mul(page_size as u64)
}

fn address_space_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct, which `limit` is.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    limit.rlim_cur
}

/// Refuses `count` elements of `element_bytes` each for `what` when they cannot fit in memory at all
/// (`Error::OutOfMemory`, naming the request), so the allocation is never tried.
pub fn check_fits(count: u128, element_bytes: u128, what: &str) -> Result<()> {
    let bytes = count.saturating_mul(element_bytes);
    let capacity = capacity_bytes();
    if bytes > capacity as u128 {
        return Err(Error::OutOfMemory(format!("{what} would need {} bytes, more than this machine can hold ({capacity} bytes)", bytes)));
    }
    Ok(())
}

/// A vector with room for `count` elements, or `Error::OutOfMemory` instead of an abort.
pub fn vec_with_capacity<T>(count: usize, what: &str) -> Result<Vec<T>> {
    check_fits(count as u128, std::mem::size_of::<T>() as u128, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(count).map_err(|e| Error::OutOfMemory(format!("{what}: {e}")))?;
    Ok(v)
}
