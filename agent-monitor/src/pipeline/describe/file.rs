//! File events: the path(s) an open, unlink, rename, link, truncate or make named, resolved
//! as the process saw them, and the open flags classified into the access the policy judges.

use std::path::Path;

use super::Judged;
use crate::{
    kernel::decoder::{FileId, FileOp},
    observe::record::{ExecObject, FileObject, Kind},
    pipeline::dirs::DirIndex,
    pipeline::resolve::{AT_FDCWD, Actor, Follow, Resolved, fd_path, resolve},
    policy::FileAccess,
};

/// A path as a syscall named it: relative to `dirfd`, which referred to `dir` then.
#[derive(Clone, Copy)]
pub(super) struct Named<'a> {
    pub(super) dirfd: i32,
    pub(super) path: &'a Path,
    pub(super) dir: Option<FileId>,
}

impl Named<'_> {
    /// Resolves the path; one relative to a directory descriptor starts from the
    /// directory the descriptor was when the syscall ran, also if it is closed by now.
    fn resolve(
        &self,
        actor: &Actor<'_>,
        dirs: &mut DirIndex,
        follow: Follow,
        fd: Option<i64>,
    ) -> Resolved {
        if self.dirfd >= 0
            && !self.path.as_os_str().is_empty()
            && !self.path.is_absolute()
            && let Some(base) = self.dir.and_then(|id| dirs.base(actor, self.dirfd, id))
        {
            return resolve(actor, AT_FDCWD, &base.join(self.path), follow);
        }
        resolve_named(actor, self.dirfd, self.path, follow, fd)
    }
}

/// openat2 with `RESOLVE_IN_ROOT` whose descriptor is gone: the path is relative to the
/// dirfd whether or not it starts with `/`, and the kernel never let it leave that
/// directory, so a name that resolves outside it is a guess (inexact).
fn in_root_named(
    actor: &Actor<'_>,
    dirs: &mut DirIndex,
    named: Named<'_>,
    follow: Follow,
) -> Resolved {
    let relative = named.path.strip_prefix("/").unwrap_or(named.path);
    let base = Named {
        path: Path::new("."),
        ..named
    }
    .resolve(actor, dirs, Follow::Last, None);
    let within = Named {
        path: relative,
        ..named
    };
    let mut r = within.resolve(actor, dirs, follow, None);
    if !r.exact || !r.path.starts_with(&base.path) {
        r.exact = false;
    }
    r
}

/// An open, unlink or rename: the path(s) it named, or for a held open what its descriptor
/// really is. `opened`: what an open's new descriptor refers to.
pub(super) fn file(
    actor: &Actor<'_>,
    dirs: &mut DirIndex,
    held: bool,
    op: FileOp,
    named: Named<'_>,
    named2: Named<'_>,
    (ret, opened): (i64, Option<FileId>),
) -> Judged {
    let (dirfd, path) = (named.dirfd, named.path);
    let (access, follow) = match op {
        FileOp::Open { flags, .. } => (classify_open(flags), Follow::Last),
        FileOp::Unlink => (FileAccess::Unlink, Follow::NotLast),
        FileOp::Truncate => (FileAccess::Truncate, Follow::Last),
        FileOp::Link => (FileAccess::Link, Follow::NotLast),
        FileOp::Make { .. } => (FileAccess::Create, Follow::NotLast),
        FileOp::Exec => (FileAccess::Read, Follow::Last),
        FileOp::Rename | FileOp::Chdir | FileOp::ConnectUnix { .. } | FileOp::Listen => {
            (FileAccess::Rename, Follow::NotLast)
        }
    };
    // The descriptor that names the file: what an open returned, or what ftruncate was
    // given (its `path` is empty). A refused call has none.
    let fd = match op {
        FileOp::Open { .. } if ret >= 0 => Some(ret),
        FileOp::Truncate if path.as_os_str().is_empty() => Some(i64::from(dirfd)),
        _ => None,
    };
    // A held open's descriptor is still there: it names what was really opened. So does
    // the descriptor of an open resolved in a root of the caller's choosing, while it is
    // open: the path as named means nothing outside that root.
    let in_root = matches!(op, FileOp::Open { in_root: true, .. });
    let r = fd
        .filter(|_| held || in_root)
        .and_then(|fd| opened_path(actor, fd))
        .unwrap_or_else(|| {
            if in_root {
                in_root_named(actor, dirs, named, follow)
            } else {
                named.resolve(actor, dirs, follow, fd)
            }
        });
    if let (FileOp::Open { flags, .. }, Some(id), true) = (op, opened, r.exact) {
        // A directory opened now may be the base of the process's next *at calls.
        if flags & O_DIRECTORY != 0 {
            dirs.learn(id, r.path.clone());
        } else if flags & (O_ACCMODE | O_CREAT) == 0 {
            match r.target {
                // The resolution looked at the path: it told what is there.
                Some(t) if t.id == id => {
                    if t.dir {
                        dirs.learn(id, r.path.clone());
                    }
                }
                _ => dirs.learn_if_dir(id, &r.path),
            }
        }
    }
    let new_path = matches!(op, FileOp::Rename | FileOp::Link)
        .then(|| named2.resolve(actor, dirs, Follow::NotLast, None))
        .map(|to| to.path.to_string_lossy().into_owned());
    if op == FileOp::Exec {
        return Judged {
            kind: Kind::Exec,
            exec: Some(ExecObject {
                path: r.path.to_string_lossy().into_owned(),
                argv: Vec::new(),
                script: None,
            }),
            file: None,
            net: None,
            escape: None,
            preset: None,
        };
    }
    Judged {
        kind: Kind::File,
        file: Some(FileObject {
            path: r.path.to_string_lossy().into_owned(),
            access,
            new_path,
            unresolved: !r.exact,
        }),
        net: None,
        exec: None,
        escape: None,
        preset: None,
    }
}

/// Resolves a path an operation named. A successful open, unlink or rename never names an
/// empty path: an empty one could not be read from the caller's memory, and resolving ""
/// would wrongly give the working directory. An open's file is then taken from its new fd.
fn resolve_named(
    actor: &Actor<'_>,
    dirfd: i32,
    raw: &Path,
    follow: Follow,
    fd: Option<i64>,
) -> Resolved {
    if !raw.as_os_str().is_empty() {
        return resolve(actor, dirfd, raw, follow);
    }
    fd.and_then(|fd| opened_path(actor, fd))
        .unwrap_or_else(|| Resolved {
            path: "<unreadable path>".into(),
            exact: false,
            target: None,
        })
}

/// What descriptor `fd` of the acting thread refers to, from /proc (canonical: symlinks,
/// `..`, dirfds and /proc/self/root are already resolved by the kernel).
fn opened_path(actor: &Actor<'_>, fd: i64) -> Option<Resolved> {
    fd_path(actor, fd).map(|path| Resolved {
        path,
        exact: true,
        target: None,
    })
}

/// For an open the kernel killed because of the file's identity (a `files.deny` entry):
/// names the file by that entry when the path the process gave no longer leads to it. The
/// kill ends the process at once, so its cwd and descriptors (a relative path, a
/// `/proc/self/fd/N/...`) may be gone before the daemon reads the event. A name that still
/// leads to the file (a hard link) is kept.
pub(in crate::pipeline) fn name_denied(
    judged: &mut Judged,
    opened: Option<FileId>,
    deny: &[String],
) {
    const GLOB: &[char] = &['*', '?', '[', '{'];
    let (Some(file), Some(id)) = (judged.file.as_mut(), opened) else {
        return;
    };
    if identity(Path::new(&file.path)) == Some(id) {
        return;
    }
    if let Some(entry) = deny
        .iter()
        .find(|p| !p.contains(GLOB) && identity(Path::new(p)) == Some(id))
    {
        file.path.clone_from(entry);
        file.unresolved = false;
    }
}

/// (device, inode) of the file at `path`, in the kernel's encoding.
fn identity(path: &Path) -> Option<FileId> {
    std::fs::metadata(path)
        .ok()
        .map(|m| crate::pipeline::dirs::identity(&m))
}

const O_ACCMODE: u32 = 0o3;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_DIRECTORY: u32 = 0o200_000;

/// open(2) flags -> the access the policy judges. `O_CREAT` is a create even when the file
/// existed (the caller asked to be allowed to create it).
pub(crate) fn classify_open(flags: u32) -> FileAccess {
    if flags & (O_DIRECTORY | O_ACCMODE | O_CREAT | O_TRUNC) == O_DIRECTORY {
        FileAccess::List
    } else if flags & O_CREAT != 0 {
        FileAccess::Create
    } else if matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR) || flags & O_TRUNC != 0 {
        FileAccess::Write
    } else {
        FileAccess::Read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_classify() {
        assert_eq!(classify_open(0), FileAccess::Read);
        assert_eq!(classify_open(0o1), FileAccess::Write);
        assert_eq!(classify_open(0o2), FileAccess::Write);
        assert_eq!(classify_open(0o1000), FileAccess::Write);
        assert_eq!(classify_open(0o101), FileAccess::Create);
        assert_eq!(classify_open(0o200_000), FileAccess::List); // O_DIRECTORY
        assert_eq!(classify_open(0o200_002), FileAccess::Write);
    }

    fn read_of(path: &str) -> Judged {
        Judged {
            kind: Kind::File,
            file: Some(FileObject {
                path: path.into(),
                access: FileAccess::Read,
                new_path: None,
                unresolved: true,
            }),
            net: None,
            exec: None,
            escape: None,
            preset: None,
        }
    }

    fn path_of(judged: &Judged) -> &str {
        judged.file.as_ref().map_or("", |f| f.path.as_str())
    }

    #[test]
    fn a_killed_open_is_named_by_the_deny_entry_its_path_no_longer_reaches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret.txt");
        let other = dir.path().join("other.txt");
        let link = dir.path().join("link.txt");
        std::fs::write(&secret, "s").expect("write");
        std::fs::write(&other, "o").expect("write");
        std::fs::hard_link(&secret, &link).expect("link");
        let id = identity(&secret);
        let deny = vec![
            format!("{}/*.key", dir.path().display()),
            secret.display().to_string(),
        ];
        // A descriptor of a process that is gone by now.
        let mut gone = read_of("/proc/4194305/fd/3/secret.txt");
        name_denied(&mut gone, id, &deny);
        assert_eq!(path_of(&gone), secret.to_str().expect("utf-8"));
        assert!(gone.file.as_ref().is_some_and(|f| !f.unresolved));
        // A stale cwd that leads to another file.
        let mut stale = read_of(other.to_str().expect("utf-8"));
        name_denied(&mut stale, id, &deny);
        assert_eq!(path_of(&stale), secret.to_str().expect("utf-8"));
        // A name that still leads to the file is what the process used: kept.
        let mut hard = read_of(link.to_str().expect("utf-8"));
        name_denied(&mut hard, id, &deny);
        assert_eq!(path_of(&hard), link.to_str().expect("utf-8"));
        // A kill for a file no deny entry names changes nothing.
        let mut unknown = read_of("/proc/4194305/fd/3/x");
        name_denied(&mut unknown, identity(&other), &deny);
        assert_eq!(path_of(&unknown), "/proc/4194305/fd/3/x");
    }
}
