//! The process table: what the daemon knows of each tagged process (parent, name, image,
//! working directory), kept from the event stream so that records stay complete after a
//! short-lived process is gone.

use std::{
    collections::HashMap,
    fs,
    hash::{BuildHasherDefault, Hasher},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{kernel::decoder::Header, observe::record::ProcessNames};

#[derive(Debug, Clone, Default)]
pub(crate) struct ProcInfo {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// Shared with its records (see `exe_name`).
    pub(crate) comm: Arc<str>,
    pub(crate) exe: Option<PathBuf>,
    /// `exe` as its records write it, made again only when the image changed.
    exe_name: Option<Arc<str>>,
    /// The names its last record wrote (see `names`).
    names: Option<Arc<ProcessNames>>,
    pub(crate) argv: Vec<String>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) agent: u32,
}

impl ProcInfo {
    /// The names a record of it writes: `comm` (the event header's), its image and the
    /// cgroup the event came from. One allocation shared by its records while they stay the
    /// same, so a record holds one reference count for all three.
    pub(crate) fn names(&mut self, comm: &str, cgroup: &Arc<str>) -> Arc<ProcessNames> {
        if let Some(n) = &self.names
            && *n.comm == *comm
            && n.cgroup.as_ref().is_some_and(|c| Arc::ptr_eq(c, cgroup))
            && match (&n.exe, &self.exe) {
                (Some(name), Some(exe)) => name.as_bytes() == exe.as_os_str().as_bytes(),
                (None, None) => true,
                _ => false,
            }
        {
            return Arc::clone(n);
        }
        let names = Arc::new(ProcessNames {
            comm: if *self.comm == *comm {
                Arc::clone(&self.comm)
            } else {
                Arc::from(comm)
            },
            exe: self.exe_name(),
            cgroup: Some(Arc::clone(cgroup)),
        });
        self.names = Some(Arc::clone(&names));
        names
    }

    /// The image's path as a record writes it: the same string for every record of the
    /// process while its image stays the same, cloned as a reference count.
    pub(crate) fn exe_name(&mut self) -> Option<Arc<str>> {
        let exe = self.exe.as_deref()?;
        if let Some(name) = &self.exe_name
            && name.as_bytes() == exe.as_os_str().as_bytes()
        {
            return Some(Arc::clone(name));
        }
        // `to_str` first: the lossy conversion's checks cost more, and paths are UTF-8.
        let name: Arc<str> = exe
            .to_str()
            .map_or_else(|| Arc::from(exe.to_string_lossy()), Arc::from);
        self.exe_name = Some(Arc::clone(&name));
        Some(name)
    }
}

/// Processes by tgid. Entries go at exit; the cap guards against lost exit events.
#[derive(Debug, Default)]
pub(crate) struct ProcTable {
    procs: HashMap<u32, ProcInfo, BuildHasherDefault<PidHasher>>,
}

/// The table's hash: pids are small numbers the kernel hands out, not chosen by whoever
/// runs, and looked up on every event, where `SipHash` cost more than the rest of the
/// lookup. A multiplication by an odd constant spreads them over the high bits (the
/// table's tags) and keeps consecutive pids apart in the low ones (its buckets).
#[derive(Debug, Default)]
struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

const MAX_PROCS: usize = 1 << 16;

impl ProcTable {
    /// The entry for the event's process, created on first sight. A new process inherits its
    /// parent's cwd and image (it was forked); otherwise /proc is asked, and `fallback_cwd`
    /// (the task's starting directory) is the last resort.
    pub(crate) fn observe(&mut self, h: &Header, fallback_cwd: Option<&Path>) -> &mut ProcInfo {
        if self.procs.len() >= MAX_PROCS && !self.procs.contains_key(&h.tgid) {
            self.procs
                .retain(|pid, _| Path::new(&format!("/proc/{pid}")).exists());
        }
        if !self.procs.contains_key(&h.tgid) {
            // The parent is looked at only for a new entry: cloning it on every event (most
            // events are of known processes) copied its argv each time.
            let parent = (h.ppid != 0).then(|| self.procs.get(&h.ppid)).flatten();
            let from_proc = |what: &str| fs::read_link(format!("/proc/{}/{what}", h.tgid)).ok();
            let (cwd, exe) = match parent {
                Some(p) => (p.cwd.clone(), p.exe.clone()),
                None => (
                    from_proc("cwd").or_else(|| fallback_cwd.map(Path::to_path_buf)),
                    from_proc("exe"),
                ),
            };
            let info = ProcInfo {
                pid: h.tgid,
                ppid: h.ppid,
                comm: Arc::from(h.comm.as_str()),
                exe,
                exe_name: None,
                names: None,
                argv: parent.map(|p| p.argv.clone()).unwrap_or_default(),
                cwd,
                agent: h.agent,
            };
            self.procs.insert(h.tgid, info);
        }
        // Present: inserted above if it was not.
        let entry = self.procs.entry(h.tgid).or_default();
        if entry.ppid == 0 {
            entry.ppid = h.ppid;
        }
        if !h.comm.is_empty() && *entry.comm != *h.comm {
            entry.comm = Arc::from(h.comm.as_str());
        }
        entry
    }

    #[cfg(test)]
    pub(crate) fn get(&self, tgid: u32) -> Option<&ProcInfo> {
        self.procs.get(&tgid)
    }

    pub(crate) fn remove(&mut self, tgid: u32) -> Option<ProcInfo> {
        self.procs.remove(&tgid)
    }

    /// Pids the table holds for one agent slot.
    pub(crate) fn pids_of(&self, agent: u32) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.agent == agent)
            .map(|p| p.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    #[cfg(test)]
    pub(crate) fn forget_agent(&mut self, agent: u32) {
        self.procs.retain(|_, p| p.agent != agent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tgid: u32, ppid: u32, comm: &str) -> Header {
        Header {
            agent: 1,
            time_ns: 0,
            pid: tgid,
            tgid,
            ppid,
            truncated: false,
            path_fault: false,
            kernel: crate::kernel::decoder::KernelDid::default(),
            cgroup_id: 0,
            comm: comm.into(),
        }
    }

    #[test]
    fn children_inherit_cwd_and_image_from_the_parent() {
        let mut t = ProcTable::default();
        // Pids far above pid_max: /proc has nothing for them.
        let p = t.observe(&header(4_000_001, 0, "sh"), Some(Path::new("/start")));
        assert_eq!(p.cwd.as_deref(), Some(Path::new("/start")));
        p.cwd = Some(PathBuf::from("/work"));
        p.exe = Some(PathBuf::from("/bin/sh"));
        let c = t.observe(&header(4_000_002, 4_000_001, "cat"), None);
        assert_eq!(c.cwd.as_deref(), Some(Path::new("/work")));
        assert_eq!(c.exe.as_deref(), Some(Path::new("/bin/sh")));
        assert_eq!(&*c.comm, "cat");
        assert_eq!(t.pids_of(1), vec![4_000_001, 4_000_002]);
        t.remove(4_000_001);
        assert!(t.get(4_000_001).is_none());
        t.forget_agent(1);
        assert!(t.pids_of(1).is_empty());
    }

    #[test]
    fn records_share_the_names_until_one_of_them_changes() {
        let mut t = ProcTable::default();
        let cgroup: Arc<str> = "/agent-monitor/t".into();
        let p = t.observe(&header(4_000_003, 0, "python3"), None);
        p.exe = Some(PathBuf::from("/usr/bin/python3"));
        let first = p.names("python3", &cgroup);
        assert!(Arc::ptr_eq(&first, &p.names("python3", &cgroup)), "kept");
        assert_eq!(first.exe.as_deref(), Some("/usr/bin/python3"));
        // Each change makes new names with the new value.
        let renamed = p.names("worker", &cgroup);
        assert!(!Arc::ptr_eq(&first, &renamed));
        assert_eq!(&*renamed.comm, "worker");
        p.exe = Some(PathBuf::from("/usr/bin/node"));
        let exec = p.names("worker", &cgroup);
        assert_eq!(exec.exe.as_deref(), Some("/usr/bin/node"));
        // Another cgroup with the same path is another allocation: not assumed the same.
        let nested: Arc<str> = "/agent-monitor/t".into();
        let moved = p.names("worker", &nested);
        assert!(!Arc::ptr_eq(&exec, &moved));
        assert!(Arc::ptr_eq(
            moved.cgroup.as_ref().expect("a cgroup"),
            &nested
        ));
    }
}
