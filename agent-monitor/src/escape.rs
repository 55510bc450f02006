//! Escape attempts: what the kernel's escape hooks saw, judged (pure). Nothing here is ever
//! in scope: a scope describes work, and leaving the monitor's confinement is not work.

use std::path::{Path, PathBuf};

use crate::{
    decoder::EscapeWhat,
    policy::{Dimension, FileAccess, Verdict},
    record::EscapeObject,
};

/// x86-64 numbers of the syscalls the kernel side watches (`loader::ESCAPE_SYSCALLS`).
const SYSCALLS: &[(u32, &str)] = &[
    (41, "socket"),
    (62, "kill"),
    (101, "ptrace"),
    (155, "pivot_root"),
    (165, "mount"),
    (166, "umount2"),
    (169, "reboot"),
    (175, "init_module"),
    (176, "delete_module"),
    (200, "tkill"),
    (234, "tgkill"),
    (246, "kexec_load"),
    (272, "unshare"),
    (304, "open_by_handle_at"),
    (308, "setns"),
    (310, "process_vm_readv"),
    (311, "process_vm_writev"),
    (313, "finit_module"),
    (320, "kexec_file_load"),
    (321, "bpf"),
    (425, "io_uring_setup"),
    (428, "open_tree"),
    (429, "move_mount"),
    (430, "fsopen"),
    (431, "fsconfig"),
    (432, "fsmount"),
    (433, "fspick"),
    (434, "pidfd_open"),
    (442, "mount_setattr"),
];

/// The syscall's name, or `syscall_<nr>`.
pub fn syscall_name(nr: u32) -> String {
    SYSCALLS
        .iter()
        .find(|(n, _)| *n == nr)
        .map_or_else(|| format!("syscall_{nr}"), |(_, name)| (*name).to_string())
}

/// Why a syscall is an escape, for the record's reason.
fn why(name: &str) -> &'static str {
    match name {
        "socket" => "raw and packet sockets bypass the network rules",
        "kill" | "tkill" | "tgkill" | "pidfd_open" => {
            "signals may only reach the agent's own processes"
        }
        "ptrace" | "process_vm_readv" | "process_vm_writev" => {
            "reading or changing another process's memory"
        }
        "io_uring_setup" => "io_uring does file and network work without the watched syscalls",
        "bpf" => "loading or changing kernel programs and maps",
        "unshare" | "setns" => "entering new namespaces",
        "open_by_handle_at" => "opening files by handle, without a path",
        "init_module" | "finit_module" | "delete_module" | "kexec_load" | "kexec_file_load"
        | "reboot" => "changing the running kernel",
        _ => "changing the mount table",
    }
}

/// Judges an escape event of a task whose cgroup is `task_cgroup` (relative to the cgroup2
/// root). None: nothing to report (a move inside the agent's own cgroup tree).
pub fn judge(what: &EscapeWhat, task_cgroup: &str) -> Option<(EscapeObject, Verdict)> {
    match what {
        EscapeWhat::Syscall { nr, args, ret } => {
            let name = syscall_name(*nr);
            let outcome = if *ret == -1 { "refused" } else { "attempted" };
            let reason = format!("{name}() {outcome}: {}", why(&name));
            let object = EscapeObject {
                technique: "syscall",
                syscall: Some(name.clone()),
                args: args.map(|a| a.to_vec()),
                result: Some(*ret),
                cgroup: None,
                moved_pid: None,
            };
            let rule = format!("escape.syscall: {name}");
            Some((object, Verdict::violation(Dimension::Escape, rule, reason)))
        }
        EscapeWhat::CgroupMove {
            moved,
            path,
            outside,
            ..
        } => {
            let inside = path == task_cgroup
                || path
                    .strip_prefix(task_cgroup)
                    .is_some_and(|rest| rest.starts_with('/'));
            if inside && !outside {
                return None;
            }
            let object = EscapeObject {
                technique: "cgroup-move",
                syscall: None,
                args: None,
                result: None,
                cgroup: Some(path.clone()),
                moved_pid: Some(*moved),
            };
            let reason =
                format!("thread {moved} moved to cgroup {path}, outside the agent's {task_cgroup}");
            Some((
                object,
                Verdict::violation(Dimension::Escape, "escape.cgroup", reason),
            ))
        }
    }
}

/// Mount points of the filesystems that hold the monitor's own state and controls, and the
/// kernel's device numbers for them (`MKDEV` encoding, as in `InodeKey`).
#[derive(Debug, Clone, Default)]
pub struct Protected {
    pub mounts: Vec<(PathBuf, u32)>,
}

const PROTECTED_FS: &[&str] = &[
    "cgroup2",
    "cgroup",
    "bpf",
    "tracefs",
    "debugfs",
    "securityfs",
];

impl Protected {
    /// From `/proc/self/mountinfo`.
    pub fn discover() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// mountinfo: `id parent major:minor root mountpoint opts... - fstype source superopts`.
    pub fn parse(mountinfo: &str) -> Self {
        let mut mounts = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fstype = right.split_whitespace().next().unwrap_or_default();
            if !PROTECTED_FS.contains(&fstype) {
                continue;
            }
            let f: Vec<&str> = left.split_whitespace().collect();
            let (Some(dev), Some(point)) = (f.get(2), f.get(4)) else {
                continue;
            };
            let Some((major, minor)) = dev.split_once(':') else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
                continue;
            };
            mounts.push((
                PathBuf::from(point.replace("\\040", " ")),
                (major << 20) | minor,
            ));
        }
        Self { mounts }
    }

    /// A write, create, unlink or rename under one of the protected mounts.
    pub fn judge(&self, path: &str, access: FileAccess) -> Option<Verdict> {
        if access == FileAccess::Read {
            return None;
        }
        let (mount, _) = self
            .mounts
            .iter()
            .find(|(m, _)| Path::new(path).starts_with(m))?;
        Some(Verdict::violation(
            Dimension::Escape,
            "escape.protected-fs",
            format!(
                "{path} is on {}, which holds the monitor's state and controls",
                mount.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscalls_are_always_violations() {
        let (obj, verdict) = judge(
            &EscapeWhat::Syscall {
                nr: 321,
                args: None,
                ret: -1,
            },
            "/agent-monitor/t1",
        )
        .expect("reported");
        assert_eq!(obj.syscall.as_deref(), Some("bpf"));
        let Verdict::Violation(v) = verdict else {
            panic!("a violation")
        };
        assert_eq!(v.dimension, Dimension::Escape);
        assert!(v.reason.contains("refused"), "{}", v.reason);
        assert_eq!(syscall_name(9999), "syscall_9999");
    }

    #[test]
    fn moves_inside_the_agent_cgroup_are_not_escapes() {
        let mv = |path: &str, outside| EscapeWhat::CgroupMove {
            moved: 5,
            cgroup_id: 1,
            path: path.into(),
            outside,
        };
        assert!(judge(&mv("/agent-monitor/t1", false), "/agent-monitor/t1").is_none());
        assert!(judge(&mv("/agent-monitor/t1/sub", false), "/agent-monitor/t1").is_none());
        assert!(judge(&mv("/agent-monitor/t10", false), "/agent-monitor/t1").is_some());
        assert!(judge(&mv("/", false), "/agent-monitor/t1").is_some());
        assert!(
            judge(&mv("/agent-monitor/t1/sub", true), "/agent-monitor/t1").is_some(),
            "the kernel's own finding wins"
        );
    }

    #[test]
    fn protected_mounts_from_mountinfo() {
        let p = Protected::parse(
            "30 1 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
             31 1 0:27 / /sys/fs/bpf rw - bpf bpf rw\n\
             32 1 8:1 / / rw - ext4 /dev/sda1 rw\n",
        );
        assert_eq!(
            p.mounts,
            vec![
                (PathBuf::from("/sys/fs/cgroup/unified"), 26),
                (PathBuf::from("/sys/fs/bpf"), 27)
            ]
        );
        assert!(
            p.judge("/sys/fs/bpf/x", FileAccess::Unlink).is_some(),
            "unlinking a pin"
        );
        assert!(
            p.judge("/sys/fs/cgroup/unified/cgroup.procs", FileAccess::Write)
                .is_some()
        );
        assert!(
            p.judge("/sys/fs/cgroup/unified/cgroup.procs", FileAccess::Read)
                .is_none()
        );
        assert!(p.judge("/sys/fs/bpfx", FileAccess::Write).is_none());
    }
}
