//! How full the event ring buffer is, for `status` and `/metrics`.
//!
//! A BPF ring buffer exposes its consumer position (page 0) and producer position (page 1)
//! to user space through `mmap`. aya does not export them, so the two pages are mapped once
//! more, read-only, and read with atomic loads: no syscall per scrape.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use serde::Serialize;

pub(crate) struct RingFill {
    base: NonNull<libc::c_void>,
    page: usize,
    size: u64,
}

// SAFETY: the mapping is read-only and only read through atomic loads; it lives until drop.
unsafe impl Send for RingFill {}
// SAFETY: as above.
unsafe impl Sync for RingFill {}

/// Bytes waiting in the ring buffer, and its size.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub(crate) struct RingUsage {
    pub(crate) used_bytes: u64,
    pub(crate) size_bytes: u64,
}

impl RingFill {
    /// Maps the position pages of the ring buffer map `fd`. Its size is read from the
    /// kernel (`/proc/self/fdinfo`: an adopted, pinned buffer keeps the size it was made
    /// with); `size` is the fallback.
    pub(crate) fn map(fd: BorrowedFd<'_>, size: u32) -> io::Result<Self> {
        let size = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("max_entries:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })
            .unwrap_or(size);
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("page size"))?;
        // SAFETY: a fresh read-only shared mapping of the map's first two pages; the kernel
        // checks the fd and the range.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page * 2,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self {
            base,
            page,
            size: u64::from(size),
        })
    }

    fn position(&self, offset: usize) -> u64 {
        // SAFETY: `offset` is 0 or one page into a live two-page mapping, page-aligned, so
        // the u64 there is aligned; the kernel updates it atomically.
        unsafe {
            let p = self
                .base
                .as_ptr()
                .cast::<AtomicU64>()
                .add(offset / size_of::<u64>());
            (*p).load(Ordering::Acquire)
        }
    }

    pub(crate) fn usage(&self) -> RingUsage {
        let consumer = self.position(0);
        let producer = self.position(self.page);
        RingUsage {
            used_bytes: producer.saturating_sub(consumer).min(self.size),
            size_bytes: self.size,
        }
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe {
            libc::munmap(self.base.as_ptr(), self.page * 2);
        }
    }
}
