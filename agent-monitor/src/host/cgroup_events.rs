//! Which task cgroups' `cgroup.events` changed, through inotify: the kernel signals a change
//! of `populated` on that file (`IN_MODIFY`), so the housekeeping sweep reads the file of a
//! cgroup only when it changed, not every cgroup on every tick (with a thousand live tasks
//! the reads were a third of a core while nothing happened).
//!
//! Without inotify (no instance left, a watch refused) nothing is lost: a cgroup that has no
//! watch is reported as one to look at on every sweep, as before.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum EventsError {
    #[error("inotify_init1: {0}")]
    Init(#[source] io::Error),
    #[error("watching {path}: {source}")]
    Watch {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Watches on the `cgroup.events` files of task cgroups, by the task's slot.
pub(crate) struct CgroupEvents {
    fd: Option<OwnedFd>,
    /// Watch descriptor -> slot, and slot -> watch descriptor.
    slots: HashMap<i32, u32>,
    watches: HashMap<u32, i32>,
    /// Slots whose file changed since the last `take_changed`.
    changed: HashSet<u32>,
    /// The kernel's queue overflowed: every watched cgroup must be looked at.
    overflowed: bool,
    /// Slots whose cgroup was populated when last read, watched since before that read and
    /// unchanged since: nothing to look at.
    settled: HashSet<u32>,
}

impl CgroupEvents {
    /// A watcher; without inotify, one that watches nothing (every cgroup is looked at).
    pub(crate) fn new() -> Self {
        let fd = match init() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "no inotify: task cgroups are polled on every sweep");
                None
            }
        };
        Self {
            fd,
            slots: HashMap::new(),
            watches: HashMap::new(),
            changed: HashSet::new(),
            overflowed: false,
            settled: HashSet::new(),
        }
    }

    /// Starts a sweep: takes the changes the kernel reported, so that [`Self::needs_look`]
    /// says which cgroups must be read.
    pub(crate) fn begin_sweep(&mut self) {
        let (changed, overflowed) = self.take_changed();
        if overflowed {
            self.settled.clear();
        } else {
            for slot in changed {
                self.settled.remove(&slot);
            }
        }
    }

    /// Whether `slot`'s `cgroup.events` must be read this sweep: it is not watched, was
    /// not populated when last read, or changed since.
    pub(crate) fn needs_look(&self, slot: u32) -> bool {
        !self.settled.contains(&slot)
    }

    /// The read of `slot`'s cgroup found it populated. `watched_before` says whether the
    /// watch was in place before the read: only then does a later change get reported.
    pub(crate) fn populated(&mut self, slot: u32, watched_before: bool) {
        if watched_before && self.watched(slot) {
            self.settled.insert(slot);
        }
    }

    /// Keeps the watches of the slots `live` holds, drops the others' (their tasks ended).
    pub(crate) fn retain(&mut self, live: &HashSet<u32>) {
        let gone: Vec<u32> = self
            .watches
            .keys()
            .chain(self.settled.iter())
            .filter(|s| !live.contains(s))
            .copied()
            .collect();
        for slot in gone {
            self.forget(slot);
        }
    }

    /// Whether `slot`'s cgroup is watched.
    pub(crate) fn watched(&self, slot: u32) -> bool {
        self.watches.contains_key(&slot)
    }

    /// Watches `dir/cgroup.events` for `slot`. A change after this call is reported by
    /// [`Self::take_changed`], so the caller reads the file after watching it.
    pub(crate) fn watch(&mut self, slot: u32, dir: &Path) -> Result<(), EventsError> {
        let Some(fd) = &self.fd else {
            return Err(EventsError::Init(io::Error::from_raw_os_error(libc::EBADF)));
        };
        let file = dir.join("cgroup.events");
        let err = |source| EventsError::Watch {
            path: file.display().to_string(),
            source,
        };
        let c = CString::new(file.as_os_str().as_bytes())
            .map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))?;
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
        if wd < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        if let Some(old) = self.watches.insert(slot, wd)
            && old != wd
        {
            self.slots.remove(&old);
        }
        self.slots.insert(wd, slot);
        Ok(())
    }

    /// Stops watching `slot`'s cgroup (its task ended).
    pub(crate) fn forget(&mut self, slot: u32) {
        self.settled.remove(&slot);
        let Some(wd) = self.watches.remove(&slot) else {
            return;
        };
        self.slots.remove(&wd);
        self.changed.remove(&slot);
        if let Some(fd) = &self.fd {
            // SAFETY: a valid inotify descriptor; a watch the kernel already removed (the
            // cgroup is gone) only makes this fail with EINVAL.
            unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
        }
    }

    /// Reads what the kernel queued. Returns the slots whose file changed (or whose cgroup
    /// went away) since the last call, and whether every watched one must be looked at
    /// (the queue overflowed).
    pub(crate) fn take_changed(&mut self) -> (HashSet<u32>, bool) {
        self.drain();
        (
            std::mem::take(&mut self.changed),
            std::mem::take(&mut self.overflowed),
        )
    }

    fn drain(&mut self) {
        let Some(fd) = self.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        // Aligned for `inotify_event`; many events per read.
        let mut buf = vec![0u64; 4096 / 8];
        loop {
            // SAFETY: a valid descriptor and a writable buffer of the given length.
            let n = unsafe {
                libc::read(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len() * std::mem::size_of::<u64>(),
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // EAGAIN: nothing more queued. Anything else: look at everything.
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.overflowed = true;
                }
                return;
            };
            if n == 0 {
                return;
            }
            // SAFETY: the buffer holds `n` initialised bytes.
            let bytes =
                unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n.min(4096)) };
            self.parse(bytes);
        }
    }

    /// Takes the events of one read: `inotify_event` headers, each followed by `len` bytes
    /// of name (none here: the watches are on files).
    fn parse(&mut self, mut bytes: &[u8]) {
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        while bytes.len() >= HEADER {
            let field = |at: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&bytes[at..at + 4]);
                b
            };
            let wd = i32::from_ne_bytes(field(0));
            let mask = u32::from_ne_bytes(field(4));
            let len = usize::try_from(u32::from_ne_bytes(field(12))).unwrap_or(usize::MAX);
            if mask & libc::IN_Q_OVERFLOW != 0 {
                self.overflowed = true;
            }
            if let Some(&slot) = self.slots.get(&wd) {
                self.changed.insert(slot);
                if mask & libc::IN_IGNORED != 0 {
                    // The file is gone (the cgroup was removed): the watch is too.
                    self.slots.remove(&wd);
                    self.watches.remove(&slot);
                    self.settled.remove(&slot);
                }
            }
            bytes = bytes.get(HEADER.saturating_add(len)..).unwrap_or_default();
        }
    }
}

impl Default for CgroupEvents {
    fn default() -> Self {
        Self::new()
    }
}

fn init() -> Result<OwnedFd, EventsError> {
    // SAFETY: plain flags.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(EventsError::Init(io::Error::last_os_error()));
    }
    // SAFETY: a descriptor just returned to us and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modified_file_reports_its_slot_and_a_removed_one_its_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::write(d.join("cgroup.events"), "populated 1\n").expect("write");
        }
        let mut w = CgroupEvents::new();
        w.watch(1, &a).expect("watch a");
        w.watch(2, &b).expect("watch b");
        assert!(w.watched(1) && w.watched(2));
        assert_eq!(w.take_changed(), (HashSet::new(), false));
        std::fs::write(b.join("cgroup.events"), "populated 0\n").expect("write");
        assert_eq!(w.take_changed(), (HashSet::from([2]), false));
        // Nothing twice.
        assert_eq!(w.take_changed(), (HashSet::new(), false));
        std::fs::remove_file(a.join("cgroup.events")).expect("rm");
        let (changed, _) = w.take_changed();
        assert!(changed.contains(&1), "{changed:?}");
        assert!(
            !w.watched(1),
            "the kernel dropped the watch of a removed file"
        );
        w.forget(2);
        assert!(!w.watched(2));
        std::fs::write(b.join("cgroup.events"), "populated 1\n").expect("write");
        assert_eq!(w.take_changed(), (HashSet::new(), false));
    }

    #[test]
    fn a_missing_file_is_not_watched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = CgroupEvents::new();
        assert!(w.watch(3, &dir.path().join("none")).is_err());
        assert!(!w.watched(3));
    }
}
