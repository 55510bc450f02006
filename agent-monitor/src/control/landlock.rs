//! The Landlock layer of agents started by `agent-monitor exec`: the kernel refuses file
//! access outside the scope before it happens (EACCES), for every way to an open (a path,
//! a descriptor another process shares, fanotify, `io_uring`, `open_by_handle_at`), and
//! links or renames that would widen access (EXDEV). It also keeps the agent's signals and
//! abstract Unix-socket connects inside its own processes.
//!
//! Landlock only allows: it is the coarse outer wall, derived from the scope's allow-lists
//! (a glob becomes the directory it starts from). eBPF still records everything and
//! enforces what is finer (`files.deny` inside an allowed tree, exact globs, the exec
//! allow-list by inode, addresses and DNS names).
//!
//! The daemon derives the [`Plan`] (it knows the scope and sees the same files); `exec`
//! builds the ruleset before it forks and the child restricts itself just before it execs
//! the agent (only async-signal-safe calls there).

use std::{
    collections::BTreeMap,
    os::fd::{OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use globset::GlobBuilder;
use landlock::{
    ABI, Access as _, AccessFs, BitFlags, CompatLevel, Compatible as _, PathBeneath, PathFd,
    Ruleset, RulesetAttr as _, RulesetCreatedAttr as _, Scope,
};
use serde::{Deserialize, Serialize};

use crate::policy::{BASELINE_READ, BASELINE_WRITE, PolicySpec};

/// The newest ABI whose rights this module asks for (and is tested with). A kernel with an
/// older one gets what it has (best effort); newer rights are not asked for.
const TARGET: ABI = ABI::V7;

/// What one [`Grant`] allows beneath its path.
pub(crate) mod rights {
    /// Read files, list directories.
    pub(crate) const READ: u32 = 1;
    /// Write, truncate, create, remove, link and rename within (no device nodes).
    pub(crate) const WRITE: u32 = 2;
    /// Execute files (the exec allow-list by inode stays eBPF's).
    pub(crate) const EXEC: u32 = 4;
    /// ioctl on device files (terminals).
    pub(crate) const DEVICE: u32 = 8;
    /// List directories (not read their files).
    pub(crate) const LIST: u32 = 16;
}

/// One rule: `rights` beneath `path` (or on the file itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub(crate) path: PathBuf,
    pub(crate) rights: u32,
}

/// The ruleset of a task, derived from its scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(crate) grants: Vec<Grant>,
    /// Patterns nothing could be granted for (no such file yet, or only `/` above it):
    /// Landlock refuses them; eBPF would have allowed them.
    pub(crate) ungranted: Vec<String>,
    /// No file rules, only the signal and abstract-socket scopes (`onViolation: ask`:
    /// Landlock would refuse an open before a person could allow it, and cannot be
    /// widened for a running process; holds judge files instead).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) scopes_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LandlockError {
    #[error("building the Landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("opening {path} for a Landlock rule: {source}")]
    Open {
        path: PathBuf,
        source: landlock::PathFdError,
    },
    #[error("this kernel's Landlock made no ruleset (ABI {0})")]
    NoRuleset(u32),
}

/// The running kernel's Landlock ABI (0: none).
pub(crate) fn abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: with a NULL attribute and size 0 this syscall only reports the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

impl Plan {
    /// Grants reading these files (only they: no directory beneath them).
    pub(crate) fn add_reads(&mut self, files: impl IntoIterator<Item = PathBuf>) {
        for path in files {
            match self.grants.iter_mut().find(|g| g.path == path) {
                Some(g) => g.rights |= rights::READ,
                None => self.grants.push(Grant {
                    path,
                    rights: rights::READ,
                }),
            }
        }
    }
}

/// The Landlock rights this layer uses that ABI `abi` lacks (all of them without Landlock).
pub(crate) fn missing(abi: u32) -> Vec<&'static str> {
    [
        (1, "filesystem rules"),
        (2, "refer (links and renames across directories)"),
        (3, "truncate"),
        (5, "ioctl on devices"),
        (6, "signal and abstract-socket scoping"),
    ]
    .into_iter()
    .filter(|(since, _)| abi < *since)
    .map(|(_, what)| what)
    .collect()
}

const GLOB_CHARS: &[char] = &['*', '?', '[', '{'];

/// Derives the task's rules from its scope, as the files are now.
/// The plan of an enforced scope: its file rules, or only the scopes for `ask`.
pub(crate) fn plan_for(scope: &crate::scope::Scope) -> Plan {
    if scope.asks() {
        return Plan {
            scopes_only: true,
            ..Plan::default()
        };
    }
    plan(scope.policy.declared())
}

pub(crate) fn plan(spec: &PolicySpec) -> Plan {
    let mut rules: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut ungranted = Vec::new();
    let mut add = |patterns: &[&str], r: u32, create: bool| {
        for p in patterns {
            let found = roots(p, create);
            if found.is_empty() {
                ungranted.push((*p).to_string());
            }
            for root in found {
                *rules.entry(root).or_default() |= r;
            }
        }
    };
    // Scripts and binaries the agent finds in its own trees may be executed: Landlock's
    // execute right cannot tell an image from a script, and the image that runs is judged
    // by eBPF against exec.allow.
    add(&strs(&spec.files.read), rights::READ | rights::EXEC, false);
    add(
        &strs(&spec.files.write),
        rights::READ | rights::WRITE | rights::EXEC,
        true,
    );
    add(&strs(&spec.exec_allow), rights::READ | rights::EXEC, false);
    add(&strs(&spec.files.list), rights::LIST, false);
    if spec.files.baseline {
        add(BASELINE_READ, rights::READ, false);
        add(BASELINE_WRITE, rights::WRITE | rights::DEVICE, false);
        // A process's own /proc tree is baseline; Landlock cannot name "own", so /proc is
        // readable at this layer and eBPF judges whose tree it is.
        add(&["/proc/**"], rights::READ, false);
        // The ELF interpreter is opened for execution by the kernel at every exec.
        let arch = std::env::consts::ARCH;
        let loaders = [
            "/lib64/ld-linux*".to_string(),
            "/lib/ld-linux*".to_string(),
            format!("/lib/{arch}-linux-gnu/ld-linux*"),
            format!("/usr/lib/{arch}-linux-gnu/ld-linux*"),
            "/usr/lib64/ld-linux*".to_string(),
        ];
        for l in &loaders {
            for root in roots(l, false) {
                *rules.entry(root).or_default() |= rights::READ | rights::EXEC;
            }
        }
    }
    Plan {
        grants: rules
            .into_iter()
            .map(|(path, rights)| Grant { path, rights })
            .collect(),
        ungranted,
        scopes_only: false,
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Where a pattern's rule goes: the literal directory a glob starts from, or the entries
/// that match now when only the last component has a wildcard (`/usr/bin/python3*`).
/// `create`: a path that does not exist yet is granted through its nearest existing
/// directory (never `/`).
fn roots(pattern: &str, create: bool) -> Vec<PathBuf> {
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let wild = comps.iter().position(|c| c.contains(GLOB_CHARS));
    let prefix = |n: usize| {
        let mut p = PathBuf::from("/");
        p.extend(&comps[..n]);
        p
    };
    let found = match wild {
        None => vec![prefix(comps.len())],
        Some(i) if i + 1 == comps.len() && comps[i] != "*" && comps[i] != "**" => {
            let Ok(glob) = GlobBuilder::new(comps[i])
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
            else {
                return Vec::new();
            };
            let dir = prefix(i);
            let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| glob.is_match(e.file_name()))
                .map(|e| e.path())
                .collect();
            v.sort();
            if v.is_empty() && create {
                v.push(dir);
            }
            v
        }
        Some(i) => vec![prefix(i)],
    };
    found
        .into_iter()
        .filter_map(|p| {
            if p.exists() {
                return Some(p);
            }
            if !create {
                return None;
            }
            p.ancestors()
                .skip(1)
                .find(|a| a.exists())
                .filter(|a| *a != Path::new("/"))
                .map(Path::to_path_buf)
        })
        .collect()
}

/// The Landlock rights of a grant, for a directory or a single file.
fn access_of(r: u32, is_dir: bool) -> BitFlags<AccessFs> {
    let mut a = BitFlags::<AccessFs>::EMPTY;
    if r & rights::READ != 0 {
        a |= AccessFs::ReadFile | AccessFs::ReadDir;
    }
    if r & rights::WRITE != 0 {
        // No device nodes, and ioctls on devices only where DEVICE says so.
        a |= AccessFs::from_write(TARGET)
            & !(AccessFs::MakeChar | AccessFs::MakeBlock | AccessFs::IoctlDev);
    }
    if r & rights::EXEC != 0 {
        a |= AccessFs::Execute | AccessFs::ReadFile;
    }
    if r & rights::DEVICE != 0 {
        a |= AccessFs::IoctlDev;
    }
    if r & rights::LIST != 0 {
        a |= AccessFs::ReadDir;
    }
    if is_dir {
        a
    } else {
        a & AccessFs::from_file(TARGET)
    }
}

/// Builds the ruleset of `plan` for the running kernel (best effort: the rights this
/// kernel's ABI has), before `exec` forks. Returns its descriptor.
pub(crate) fn prepare(plan: &Plan) -> Result<OwnedFd, LandlockError> {
    if plan.scopes_only {
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .scope(Scope::Signal | Scope::AbstractUnixSocket)?
            .create()?;
        return Option::<OwnedFd>::from(ruleset).ok_or_else(|| LandlockError::NoRuleset(abi()));
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET))?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)?
        .create()?;
    for g in &plan.grants {
        let fd = PathFd::new(&g.path).map_err(|source| LandlockError::Open {
            path: g.path.clone(),
            source,
        })?;
        let access = access_of(g.rights, g.path.is_dir());
        if access.is_empty() {
            continue;
        }
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
    }
    Option::<OwnedFd>::from(ruleset).ok_or_else(|| LandlockError::NoRuleset(abi()))
}

/// Restricts the calling process with the ruleset `fd`. Async-signal-safe (prctl and the
/// Landlock syscall only): for `pre_exec`. Without `CAP_SYS_ADMIN` the kernel requires
/// `no_new_privs` first.
pub(crate) fn restrict(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: plain syscalls with integer arguments.
    let apply = || unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) };
    if apply() == 0 {
        return Ok(());
    }
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 || apply() != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::FileRules;

    fn spec(read: &[&str], write: &[&str], exec: &[&str]) -> PolicySpec {
        let v = |s: &[&str]| s.iter().map(ToString::to_string).collect();
        PolicySpec {
            exec_allow: v(exec),
            files: FileRules {
                baseline: false,
                read: v(read),
                write: v(write),
                deny: Vec::new(),
                list: Vec::new(),
            },
            connect: Vec::new(),
            bind: Vec::new(),
        }
    }

    fn rights_of(plan: &Plan, path: &Path) -> Option<u32> {
        plan.grants
            .iter()
            .find(|g| g.path == path)
            .map(|g| g.rights)
    }

    #[test]
    fn globs_become_their_directory_or_the_entries_that_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("ws")).expect("mkdir");
        for f in ["python3", "python3.11", "perl"] {
            std::fs::write(d.join(f), "").expect("write");
        }
        let p = |s: &str| format!("{}/{s}", d.display());
        let plan = plan(&spec(
            &[&p("ws/**")],
            &[&p("out/new/**")],
            &[&p("python3*"), &p("missing-tool")],
        ));
        assert_eq!(
            rights_of(&plan, &d.join("ws")),
            Some(rights::READ | rights::EXEC)
        );
        // Not there yet: granted through its nearest existing directory.
        assert_eq!(
            rights_of(&plan, d),
            Some(rights::READ | rights::WRITE | rights::EXEC)
        );
        assert_eq!(
            rights_of(&plan, &d.join("python3")),
            Some(rights::READ | rights::EXEC)
        );
        assert!(rights_of(&plan, &d.join("python3.11")).is_some());
        assert_eq!(rights_of(&plan, &d.join("perl")), None, "not matched");
        assert_eq!(plan.ungranted, vec![p("missing-tool")]);
    }

    #[test]
    fn older_abis_say_what_they_lack() {
        assert!(missing(7).is_empty());
        assert_eq!(missing(5), vec!["signal and abstract-socket scoping"]);
        assert_eq!(missing(0).len(), 5);
    }

    #[test]
    fn nothing_is_granted_through_the_root() {
        let plan = plan(&spec(&[], &["/no-such-dir-here/**"], &[]));
        assert!(plan.grants.is_empty(), "{plan:?}");
        assert_eq!(plan.ungranted, vec!["/no-such-dir-here/**".to_string()]);
    }

    #[test]
    fn write_never_makes_devices_and_files_get_file_rights_only() {
        let w = access_of(rights::WRITE, true);
        assert!(w.contains(AccessFs::MakeReg | AccessFs::Truncate | AccessFs::Refer));
        assert!(!w.intersects(AccessFs::MakeChar | AccessFs::MakeBlock | AccessFs::IoctlDev));
        let f = access_of(rights::READ | rights::WRITE, false);
        assert!(!f.contains(AccessFs::ReadDir));
        assert!(f.contains(AccessFs::ReadFile | AccessFs::WriteFile));
    }

    #[test]
    fn the_baseline_grants_libraries_proc_and_the_loader() {
        let mut s = spec(&[], &[], &[]);
        s.files.baseline = true;
        let plan = plan(&s);
        assert_eq!(rights_of(&plan, Path::new("/proc")), Some(rights::READ));
        assert!(rights_of(&plan, Path::new("/usr/lib")).is_some());
        assert!(
            plan.grants
                .iter()
                .any(|g| g.path.to_string_lossy().contains("ld-linux")
                    && g.rights & rights::EXEC != 0),
            "{plan:?}"
        );
        assert_eq!(
            rights_of(&plan, Path::new("/dev/null")),
            Some(rights::READ | rights::WRITE | rights::DEVICE)
        );
    }
}
