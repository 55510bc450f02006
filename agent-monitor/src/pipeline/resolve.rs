//! Path resolution: turns the string a process passed (relative, with `..`, through
//! symlinks, `/proc/self/...`, relative to a dirfd) into the real target, so that records
//! and policy see what was really touched. Runs in the daemon after the fact: when the
//! process or file is already gone it falls back step by step and says so.

use std::{
    ffi::OsStr,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Component, Path, PathBuf},
};

pub(crate) use super::canon::Target;
use super::canon::quick;

pub(crate) const AT_FDCWD: i32 = -100;

/// Whether the last component is followed (open, exec, chdir) or named itself (unlink,
/// rename: they act on a symlink, not its target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    Last,
    NotLast,
}

/// Who is asking: the acting thread and what the process table knows of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Actor<'a> {
    pub(crate) tgid: u32,
    pub(crate) tid: u32,
    pub(crate) cwd: Option<&'a Path>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub(crate) path: PathBuf,
    /// False when the base directory was unknown (gone process, closed dirfd): `path` is then
    /// the best lexical guess and policy treats it with suspicion.
    pub(crate) exact: bool,
    /// What `path` was when it was resolved, when the resolution looked at it.
    pub(crate) target: Option<Target>,
}

pub(crate) fn resolve(actor: &Actor<'_>, dirfd: i32, raw: &Path, follow: Follow) -> Resolved {
    let raw = rewrite_self(raw, actor);
    let (joined, exact) = if raw.is_absolute() {
        (raw, true)
    } else {
        match base_dir(actor, dirfd) {
            Some(base) if raw.as_os_str().is_empty() => (base, true),
            Some(base) => (base.join(raw), true),
            None => (PathBuf::from(format!("<fd {dirfd}>")).join(raw), false),
        }
    };
    if !exact {
        return Resolved {
            path: joined,
            exact,
            target: None,
        };
    }
    let (path, target) = canonical(&joined, follow, actor);
    Resolved {
        path,
        exact,
        target,
    }
}

/// The directory a relative path starts from.
fn base_dir(actor: &Actor<'_>, dirfd: i32) -> Option<PathBuf> {
    if dirfd == AT_FDCWD {
        return actor
            .cwd
            .map(Path::to_path_buf)
            .or_else(|| fs::read_link(format!("/proc/{}/cwd", actor.tid)).ok());
    }
    fd_path(actor, i64::from(dirfd))
}

/// What descriptor `fd` of the actor refers to, from /proc (the thread's table first, then
/// the process's); None when it is gone or is not a path (a socket, a pipe).
pub(crate) fn fd_path(actor: &Actor<'_>, fd: i64) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{}/fd/{fd}", actor.tid))
        .or_else(|_| fs::read_link(format!("/proc/{}/fd/{fd}", actor.tgid)))
        .ok()
        .filter(|p| p.is_absolute())
}

/// `/proc/self` and friends name the daemon when the daemon resolves them: rewrite them to
/// the actor's own /proc entries first.
fn rewrite_self(raw: &Path, actor: &Actor<'_>) -> PathBuf {
    let bytes = raw.as_os_str().as_bytes();
    let replace = |prefix: &[u8], with: String| -> Option<PathBuf> {
        let rest = bytes.strip_prefix(prefix)?;
        (rest.is_empty() || rest[0] == b'/').then(|| {
            let mut out = with.into_bytes();
            out.extend_from_slice(rest);
            PathBuf::from(OsStr::from_bytes(&out))
        })
    };
    replace(b"/proc/self", format!("/proc/{}", actor.tgid))
        .or_else(|| {
            replace(
                b"/proc/thread-self",
                format!("/proc/{}/task/{}", actor.tgid, actor.tid),
            )
        })
        .or_else(|| replace(b"/dev/fd", format!("/proc/{}/fd", actor.tgid)))
        .unwrap_or_else(|| raw.to_path_buf())
}

fn canonical(path: &Path, follow: Follow, actor: &Actor<'_>) -> (PathBuf, Option<Target>) {
    if let Some(found) = quick(path, follow) {
        return found;
    }
    if follow == Follow::Last
        && let Ok(p) = fs::canonicalize(path)
    {
        return (p, None);
    }
    // The file itself is gone (unlinked, renamed) or must not be followed: resolve the
    // directory it lives in and keep its own name.
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
        && let Ok(p) = fs::canonicalize(parent)
    {
        return (p.join(name), None);
    }
    (lexical(path, actor), None)
}

/// Normalises `.` and `..` without touching the filesystem; `/proc/<pid>/root` and
/// `/proc/<pid>/cwd` of a gone process are mapped to `/` and the actor's cwd.
fn lexical(path: &Path, actor: &Actor<'_>) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => out = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                let mut it = out.components().skip(1);
                if let (
                    Some(Component::Normal(p)),
                    Some(Component::Normal(pid)),
                    Some(Component::Normal(link)),
                    None,
                ) = (it.next(), it.next(), it.next(), it.next())
                    && p == "proc"
                    && pid.as_bytes().iter().all(u8::is_ascii_digit)
                {
                    if link == "root" {
                        out = PathBuf::from("/");
                    } else if link == "cwd"
                        && let Some(cwd) = actor.cwd
                    {
                        out = cwd.to_path_buf();
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn actor(cwd: &Path) -> Actor<'_> {
        Actor {
            tgid: std::process::id(),
            tid: std::process::id(),
            cwd: Some(cwd),
        }
    }

    #[test]
    fn relative_paths_resolve_against_cwd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canon");
        fs::create_dir(base.join("sub")).expect("mkdir");
        fs::write(base.join("f"), "x").expect("write");
        let sub = base.join("sub");
        let a = actor(&sub);
        let r = resolve(&a, AT_FDCWD, Path::new("../f"), Follow::Last);
        assert_eq!(
            r,
            Resolved {
                path: base.join("f"),
                exact: true,
                // `..`: `realpath` named it, nothing else looked at it.
                target: None,
            }
        );
        let r = resolve(&a, AT_FDCWD, Path::new("./../sub/./../f"), Follow::Last);
        assert_eq!(r.path, base.join("f"));
    }

    #[test]
    fn symlinks_resolve_to_their_target_unless_unlinked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canon");
        fs::write(base.join("target"), "x").expect("write");
        symlink(base.join("target"), base.join("link")).expect("symlink");
        let a = actor(&base);
        assert_eq!(
            resolve(&a, AT_FDCWD, Path::new("link"), Follow::Last).path,
            base.join("target")
        );
        assert_eq!(
            resolve(&a, AT_FDCWD, Path::new("link"), Follow::NotLast).path,
            base.join("link")
        );
    }

    #[test]
    fn a_deleted_file_keeps_its_directory_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canon");
        symlink(&base, base.join("dirlink")).expect("symlink");
        let r = resolve(
            &actor(&base),
            AT_FDCWD,
            Path::new("dirlink/gone.txt"),
            Follow::Last,
        );
        assert_eq!(r.path, base.join("gone.txt"));
    }

    #[test]
    fn proc_self_names_the_actor_not_the_daemon() {
        let a = Actor {
            tgid: 4_000_000,
            tid: 4_000_001,
            cwd: Some(Path::new("/")),
        };
        assert_eq!(
            rewrite_self(Path::new("/proc/self/status"), &a),
            PathBuf::from("/proc/4000000/status")
        );
        assert_eq!(
            rewrite_self(Path::new("/proc/thread-self"), &a),
            PathBuf::from("/proc/4000000/task/4000001")
        );
        assert_eq!(
            rewrite_self(Path::new("/proc/selfish"), &a),
            PathBuf::from("/proc/selfish")
        );
        // A gone process's root detour still lands on the real file.
        let r = resolve(
            &a,
            AT_FDCWD,
            Path::new("/proc/self/root/etc/../etc/shadow"),
            Follow::Last,
        );
        assert_eq!(r.path, PathBuf::from("/etc/shadow"));
    }

    #[test]
    fn proc_root_of_a_live_process_is_followed() {
        let a = actor(Path::new("/"));
        let r = resolve(
            &a,
            AT_FDCWD,
            Path::new("/proc/self/root/etc/hostname"),
            Follow::Last,
        );
        assert_eq!(
            r.path,
            fs::canonicalize("/etc/hostname").unwrap_or_else(|_| PathBuf::from("/etc/hostname"))
        );
    }

    #[test]
    fn unknown_dirfd_is_inexact() {
        let a = Actor {
            tgid: 4_000_000,
            tid: 4_000_000,
            cwd: None,
        };
        let r = resolve(&a, 7, Path::new("x"), Follow::Last);
        assert!(!r.exact);
        assert_eq!(r.path, PathBuf::from("<fd 7>/x"));
    }
}
