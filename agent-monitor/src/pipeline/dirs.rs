//! Directories by identity: the path of a directory a process opened, so that a path
//! relative to its descriptor can be named after the process has closed it (`rm -rf`
//! walks with `unlinkat(dirfd, name)` and closes each directory at once). The kernel sends
//! what each descriptor referred to when the syscall ran; /proc is asked first, and
//! trusted only when it still names that same directory.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{control::enforce::kernel_dev, kernel::decoder::FileId, pipeline::resolve::Actor};

/// Entries kept at most; past this the index starts over (it only names what /proc no
/// longer can).
const MAX_ENTRIES: usize = 1 << 16;

#[derive(Debug, Default)]
pub(crate) struct DirIndex {
    paths: HashMap<FileId, PathBuf>,
}

impl DirIndex {
    pub(crate) fn learn(&mut self, id: FileId, path: PathBuf) {
        if self.paths.len() >= MAX_ENTRIES && !self.paths.contains_key(&id) {
            self.paths.clear();
        }
        self.paths.insert(id, path);
    }

    /// Remembers `path` when it is a directory with this identity (an open of a directory
    /// without `O_DIRECTORY`).
    pub(crate) fn learn_if_dir(&mut self, id: FileId, path: &Path) {
        if let Ok(m) = fs::metadata(path)
            && m.is_dir()
            && identity(&m) == id
        {
            self.learn(id, path.to_path_buf());
        }
    }

    pub(crate) fn get(&self, id: FileId) -> Option<&Path> {
        self.paths.get(&id).map(PathBuf::as_path)
    }

    /// The directory `dirfd` referred to when the syscall ran (`id`): the descriptor's
    /// /proc entry while it is still that directory, else the path it was opened under.
    pub(crate) fn base(&mut self, actor: &Actor<'_>, dirfd: i32, id: FileId) -> Option<PathBuf> {
        if let Some(p) = crate::pipeline::resolve::fd_path(actor, i64::from(dirfd))
            && fs::metadata(&p).is_ok_and(|m| identity(&m) == id)
        {
            self.learn(id, p.clone());
            return Some(p);
        }
        self.get(id).map(Path::to_path_buf)
    }
}

/// (device, inode) of a file, in the kernel's encoding.
pub(in crate::pipeline) fn identity(m: &fs::Metadata) -> FileId {
    (kernel_dev(m.dev()), m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_descriptor_is_named_by_the_directory_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("src");
        fs::create_dir(&sub).expect("mkdir");
        let id = identity(&fs::metadata(&sub).expect("stat"));
        let mut index = DirIndex::default();
        index.learn_if_dir(id, &sub);
        // A descriptor number this process does not have: /proc cannot name it.
        let actor = Actor {
            tgid: std::process::id(),
            tid: std::process::id(),
            cwd: None,
        };
        assert_eq!(index.base(&actor, 999, id), Some(sub.clone()));
        // A file is not a directory to remember.
        let file = dir.path().join("f");
        fs::write(&file, "").expect("write");
        let fid = identity(&fs::metadata(&file).expect("stat"));
        index.learn_if_dir(fid, &file);
        assert_eq!(index.get(fid), None);
        // An open descriptor of another directory under the same number is not trusted.
        let other = fs::File::open(dir.path()).expect("open");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&other);
        assert_eq!(index.base(&actor, fd, id), Some(sub));
    }
}
