//! Canonical paths of a burst of events: `realpath` reads the link of every prefix of a
//! path (one walk per component), while the events of a burst name the same few
//! directories over and over. A directory's canonical path is looked up once and reused
//! for `REUSE_FOR`; a file in it then costs one `lstat`, which also tells what it is.
//!
//! The daemon names paths after the fact anyway (a rename between the syscall and the
//! lookup is not seen); the reuse widens that by at most `REUSE_FOR`. A held open is named
//! by its descriptor, not by this.

use std::{
    cell::RefCell,
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{control::enforce::kernel_dev, pipeline::resolve::Follow};

/// How long a directory's canonical path is reused.
const REUSE_FOR: Duration = Duration::from_millis(1);
/// Directories remembered at most; past this the cache starts over.
const MAX_DIRS: usize = 4096;

/// The file a canonical path led to when it was looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) id: crate::kernel::decoder::FileId,
    pub(crate) dir: bool,
}

#[derive(Default)]
struct Dirs {
    /// Directory as named -> when it was looked up and its canonical path (None: none).
    seen: HashMap<PathBuf, (Instant, Option<PathBuf>)>,
}

impl Dirs {
    fn canonical(&mut self, dir: &Path, now: Instant) -> Option<PathBuf> {
        if let Some((at, found)) = self.seen.get(dir)
            && now.duration_since(*at) < REUSE_FOR
        {
            return found.clone();
        }
        let found = fs::canonicalize(dir).ok();
        if self.seen.len() >= MAX_DIRS {
            self.seen.clear();
        }
        self.seen.insert(dir.to_path_buf(), (now, found.clone()));
        found
    }
}

thread_local! {
    // The pipeline runs on one thread; the cache is that thread's.
    static DIRS: RefCell<Dirs> = RefCell::default();
}

/// The canonical path of an absolute `path` from its directory's (reused) canonical path,
/// with what it is when it was looked up (`follow` and not a symlink). None when this
/// cannot tell: `..` in the path, a symlink to follow, the directory not found; `realpath`
/// decides then.
pub(crate) fn quick(path: &Path, follow: Follow) -> Option<(PathBuf, Option<Target>)> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    let (parent, name) = (path.parent()?, path.file_name()?);
    let dir = DIRS.with(|d| d.borrow_mut().canonical(parent, Instant::now()))?;
    let joined = dir.join(name);
    if follow == Follow::NotLast {
        return Some((joined, None));
    }
    match fs::symlink_metadata(&joined) {
        Ok(m) if m.file_type().is_symlink() => None,
        Ok(m) => {
            let target = Target {
                id: (kernel_dev(m.dev()), m.ino()),
                dir: m.is_dir(),
            };
            Some((joined, Some(target)))
        }
        // Gone: named in its directory, as `realpath`'s fallback would.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((joined, None)),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_file_is_named_in_its_directorys_canonical_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canon");
        fs::create_dir(base.join("real")).expect("mkdir");
        fs::write(base.join("real/f"), "x").expect("write");
        symlink(base.join("real"), base.join("via")).expect("symlink");
        let m = fs::metadata(base.join("real/f")).expect("stat");
        let (path, target) = quick(&base.join("via/./f"), Follow::Last).expect("quick");
        assert_eq!(path, base.join("real/f"));
        assert_eq!(
            target,
            Some(Target {
                id: (kernel_dev(m.dev()), m.ino()),
                dir: false
            })
        );
        let (_, dir) = quick(&base.join("real"), Follow::Last).expect("a directory");
        assert!(dir.is_some_and(|t| t.dir));
        // Gone: its directory's path and its name.
        assert_eq!(
            quick(&base.join("via/gone"), Follow::Last),
            Some((base.join("real/gone"), None))
        );
        // The link itself, not followed.
        assert_eq!(
            quick(&base.join("via"), Follow::NotLast),
            Some((base.join("via"), None))
        );
    }

    #[test]
    fn what_it_cannot_tell_is_left_to_realpath() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canon");
        fs::write(base.join("f"), "x").expect("write");
        symlink(base.join("f"), base.join("link")).expect("symlink");
        assert_eq!(
            quick(&base.join("link"), Follow::Last),
            None,
            "a link to follow"
        );
        assert_eq!(quick(&base.join("x/../f"), Follow::Last), None, "..");
        assert_eq!(
            quick(&base.join("none/f"), Follow::Last),
            None,
            "no directory"
        );
        assert_eq!(quick(Path::new("f"), Follow::Last), None, "relative");
    }

    #[test]
    fn a_directory_is_looked_up_again_once_its_reuse_ran_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canon");
        fs::create_dir(base.join("a")).expect("mkdir");
        let mut dirs = Dirs::default();
        let t0 = Instant::now();
        assert_eq!(dirs.canonical(&base.join("a"), t0), Some(base.join("a")));
        fs::rename(base.join("a"), base.join("b")).expect("rename");
        symlink(base.join("b"), base.join("a")).expect("symlink");
        // Within the reuse: the path looked up then.
        assert_eq!(dirs.canonical(&base.join("a"), t0), Some(base.join("a")));
        // After it: what is there now.
        assert_eq!(
            dirs.canonical(&base.join("a"), t0 + REUSE_FOR),
            Some(base.join("b"))
        );
    }
}
