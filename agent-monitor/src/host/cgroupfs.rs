//! The cgroup v2 filesystem: finding it, making and removing task cgroups, reading ids.

use std::{
    collections::HashMap,
    fs, io,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error(
        "no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo); agent-monitor needs cgroup v2"
    )]
    NotMounted,
    #[error("reading /proc/self/mountinfo: {0}")]
    Mounts(#[source] io::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup path {0:?} must be relative to the cgroup2 root, without `..`")]
    BadPath(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The mounted cgroup v2 hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct Cgroup2 {
    root: PathBuf,
    /// `cgroup.kill` of each task, opened when the task is tagged: killing it later is a
    /// write to an open descriptor, which nothing the agent does (a fanotify permission
    /// mark on the file, say) can hold up.
    kill_handles: Arc<Mutex<HashMap<String, Arc<fs::File>>>>,
}

impl Cgroup2 {
    /// Finds the cgroup2 mount (hybrid systems mount it at /sys/fs/cgroup/unified, pure v2
    /// ones at /sys/fs/cgroup).
    pub(crate) fn discover() -> Result<Self, CgroupError> {
        let mounts = super::mounts::read().map_err(CgroupError::Mounts)?;
        Self::from_mounts(&mounts).ok_or(CgroupError::NotMounted)
    }

    fn from_mounts(mounts: &[super::mounts::Mount]) -> Option<Self> {
        mounts.iter().find_map(|m| {
            (m.fstype == "cgroup2").then(|| Self {
                root: m.dir.clone(),
                kill_handles: Arc::default(),
            })
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute filesystem path of a cgroup given relative to the root (`/a/b` or `a/b`).
    pub(crate) fn dir(&self, rel: &str) -> Result<PathBuf, CgroupError> {
        let trimmed = rel.trim_start_matches('/');
        if trimmed.split('/').any(|c| c == ".." || c == ".") {
            return Err(CgroupError::BadPath(rel.to_string()));
        }
        Ok(self.root.join(trimmed))
    }

    /// cgroup id as the kernel reports it (`bpf_get_current_cgroup_id`): on cgroup v2 it is the
    /// inode number of the directory.
    pub(crate) fn id(&self, rel: &str) -> Result<u64, CgroupError> {
        let dir = self.dir(rel)?;
        Ok(fs::metadata(&dir).map_err(io_err("stat", &dir))?.ino())
    }

    /// Creates a cgroup (and missing parents); returns its id.
    pub(crate) fn create(&self, rel: &str) -> Result<u64, CgroupError> {
        let dir = self.dir(rel)?;
        fs::create_dir_all(&dir).map_err(io_err("mkdir", &dir))?;
        self.id(rel)
    }

    /// Opens the cgroup's `cgroup.kill` now, for a later [`Self::kill`].
    pub(crate) fn keep_kill_handle(&self, rel: &str) -> Result<(), CgroupError> {
        let file = self.dir(rel)?.join("cgroup.kill");
        let handle = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(io_err("open", &file))?;
        self.kill_handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(rel.to_string(), Arc::new(handle));
        Ok(())
    }

    pub(crate) fn forget_kill_handle(&self, rel: &str) {
        self.kill_handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(rel);
    }

    /// Kills every process in a cgroup and its descendants (cgroup.kill, Linux >= 5.14),
    /// through the descriptor opened when the task was tagged, if there is one.
    pub(crate) fn kill(&self, rel: &str) -> Result<(), CgroupError> {
        let file = self.dir(rel)?.join("cgroup.kill");
        let kept = self
            .kill_handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rel)
            .cloned();
        match kept {
            Some(handle) => (&*handle).write_all(b"1"),
            None => fs::write(&file, "1"),
        }
        .map_err(io_err("write", &file))
    }

    /// Whether any process is left in the cgroup or below it.
    pub(crate) fn populated(&self, rel: &str) -> Result<bool, CgroupError> {
        let file = self.dir(rel)?.join("cgroup.events");
        let text = fs::read_to_string(&file).map_err(io_err("read", &file))?;
        Ok(text.lines().any(|l| l == "populated 1"))
    }

    /// Pids directly in the cgroup or below it.
    pub(crate) fn pids(&self, rel: &str) -> Result<Vec<u32>, CgroupError> {
        let mut out = Vec::new();
        for dir in self.walk(rel)? {
            let file = dir.join("cgroup.procs");
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        Ok(out)
    }

    /// Removes a cgroup and its descendants, deepest first. Processes must be gone.
    pub(crate) fn remove(&self, rel: &str) -> Result<(), CgroupError> {
        let mut dirs = self.walk(rel)?;
        dirs.reverse();
        for dir in dirs {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("rmdir", &dir)(e)),
            }
        }
        Ok(())
    }

    /// A cgroup directory and all directories below it, parents first.
    pub(crate) fn walk(&self, rel: &str) -> Result<Vec<PathBuf>, CgroupError> {
        let top = self.dir(rel)?;
        if !top.exists() {
            return Ok(Vec::new());
        }
        let mut out = vec![top];
        let mut i = 0;
        while i < out.len() {
            let dir = out[i].clone();
            i += 1;
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.path());
                }
            }
        }
        Ok(out)
    }

    /// The path of the cgroup with this id at or below `under` (a task's own subtree is
    /// small, so a walk is cheap).
    pub(crate) fn find_id(&self, under: &str, id: u64) -> Option<String> {
        self.walk(under)
            .ok()?
            .into_iter()
            .find(|d| fs::metadata(d).is_ok_and(|m| m.ino() == id))
            .and_then(|d| self.relative(&d))
    }

    /// The path relative to the root (`/a/b`) of a directory below it.
    pub(crate) fn relative(&self, dir: &Path) -> Option<String> {
        let rel = dir.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rel.display()))
    }

    /// The cgroup v2 path of a process (`0::/path` in /proc/PID/cgroup).
    pub(crate) fn of_pid(pid: u32) -> Option<String> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_a_hybrid_layout() {
        let mounts = super::super::mounts::parse(
            "1 0 0:20 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
             2 1 0:21 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             3 1 0:22 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let cg = Cgroup2::from_mounts(&mounts).expect("found");
        assert_eq!(cg.root(), Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn no_cgroup2_is_none() {
        let mounts =
            super::super::mounts::parse("2 1 0:21 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n");
        assert!(Cgroup2::from_mounts(&mounts).is_none());
    }

    #[test]
    fn dir_rejects_dot_dot() {
        let cg = Cgroup2 {
            root: PathBuf::from("/cg"),
            kill_handles: Arc::default(),
        };
        assert_eq!(cg.dir("/a/b").expect("ok"), PathBuf::from("/cg/a/b"));
        assert!(cg.dir("/a/../b").is_err());
    }
}
