//! Escape attempts: what the kernel's escape hooks saw, judged (pure). Nothing here is ever
//! in scope: a scope describes work, and leaving the monitor's confinement is not work.

use std::path::Path;

use crate::{
    host::mounts::Protected,
    kernel::decoder::EscapeWhat,
    observe::record::EscapeObject,
    policy::{Dimension, FileAccess, Verdict},
};

/// One escape syscall (x86-64 numbering): the syscalls the kernel's escape hooks judge
/// (`loader`), killing an agent without the seccomp filter that ran one. Names and the
/// agents' allow-list are `syscalls::TABLE`.
pub(crate) struct EscapeSyscall {
    pub(crate) nr: u32,
    pub(crate) name: &'static str,
    /// Its `syscalls:sys_{enter,exit}_*` tracepoint name; None when it is not hooked (the
    /// ring behind `io_uring_enter` can only come from a refused `io_uring_setup`).
    pub(crate) tracepoint: Option<&'static str>,
    /// Also hooked at entry: the signal syscalls, whose target must be judged before the
    /// signal lands (a killed target leaves the agent's pid map). The others are judged at
    /// exit only, from the arguments in the saved registers.
    pub(crate) entry: bool,
}

const fn sc(nr: u32, name: &'static str, tracepoint: Option<&'static str>) -> EscapeSyscall {
    EscapeSyscall {
        nr,
        name,
        tracepoint,
        entry: false,
    }
}

/// A signal syscall: hooked at entry and exit, judged by its target.
const fn signal(nr: u32, name: &'static str) -> EscapeSyscall {
    EscapeSyscall {
        nr,
        name,
        tracepoint: Some(name),
        entry: true,
    }
}

pub(crate) const SYSCALLS: &[EscapeSyscall] = &[
    sc(41, "socket", Some("socket")),
    signal(62, "kill"),
    sc(101, "ptrace", Some("ptrace")),
    sc(155, "pivot_root", Some("pivot_root")),
    sc(161, "chroot", Some("chroot")),
    sc(163, "acct", Some("acct")),
    sc(165, "mount", Some("mount")),
    sc(166, "umount2", Some("umount")),
    sc(167, "swapon", Some("swapon")),
    sc(169, "reboot", Some("reboot")),
    sc(175, "init_module", Some("init_module")),
    sc(176, "delete_module", Some("delete_module")),
    signal(200, "tkill"),
    signal(234, "tgkill"),
    sc(246, "kexec_load", Some("kexec_load")),
    sc(272, "unshare", Some("unshare")),
    sc(298, "perf_event_open", Some("perf_event_open")),
    sc(300, "fanotify_init", Some("fanotify_init")),
    sc(304, "open_by_handle_at", Some("open_by_handle_at")),
    sc(308, "setns", Some("setns")),
    sc(310, "process_vm_readv", Some("process_vm_readv")),
    sc(311, "process_vm_writev", Some("process_vm_writev")),
    sc(313, "finit_module", Some("finit_module")),
    sc(320, "kexec_file_load", Some("kexec_file_load")),
    sc(321, "bpf", Some("bpf")),
    sc(323, "userfaultfd", Some("userfaultfd")),
    sc(425, "io_uring_setup", Some("io_uring_setup")),
    sc(426, "io_uring_enter", None),
    sc(427, "io_uring_register", None),
    sc(428, "open_tree", Some("open_tree")),
    sc(429, "move_mount", Some("move_mount")),
    sc(430, "fsopen", Some("fsopen")),
    sc(431, "fsconfig", Some("fsconfig")),
    sc(432, "fsmount", Some("fsmount")),
    sc(433, "fspick", Some("fspick")),
    signal(434, "pidfd_open"),
    sc(438, "pidfd_getfd", Some("pidfd_getfd")),
    sc(442, "mount_setattr", Some("mount_setattr")),
];

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
        "mount" | "umount2" | "pivot_root" | "open_tree" | "move_mount" | "fsopen" | "fsconfig"
        | "fsmount" | "fspick" | "mount_setattr" => "changing the mount table",
        "clone" => "a child sharing the descriptor table, or new namespaces",
        "rt_sigqueueinfo" | "rt_tgsigqueueinfo" | "pidfd_send_signal" => {
            "signals may only reach the agent's own processes, and never resume a held one"
        }
        "prlimit64" | "setpriority" | "sched_setscheduler" | "sched_setparam" | "sched_setattr"
        | "sched_setaffinity" | "ioprio_set" => {
            "limits and priorities of processes other than the caller"
        }
        "pidfd_getfd" | "fanotify_init" | "fanotify_mark" | "userfaultfd" => {
            "descriptors or memory the file rules never judged"
        }
        "mknod" | "mknodat" => "device nodes",
        _ => "not on the agents' syscall allow-list",
    }
}

/// Judges an escape event of a task whose cgroup is `task_cgroup` (relative to the cgroup2
/// root). None: nothing to report (a move inside the agent's own cgroup tree).
pub(crate) fn judge(what: &EscapeWhat, task_cgroup: &str) -> Option<(EscapeObject, Verdict)> {
    match what {
        EscapeWhat::Syscall { nr, args, ret } => {
            let name = crate::kernel::syscalls::name(*nr);
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

/// A write, create, unlink or rename under one of the filesystems that hold the monitor's
/// state and controls.
pub(crate) fn judge_protected(
    protected: &Protected,
    path: &str,
    access: FileAccess,
) -> Option<Verdict> {
    if access == FileAccess::Read {
        return None;
    }
    let (mount, _) = protected
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

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
        assert_eq!(crate::kernel::syscalls::name(9999), "syscall_9999");
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
        let p = Protected::from_mounts(&crate::host::mounts::parse(
            "30 1 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
             31 1 0:27 / /sys/fs/bpf rw - bpf bpf rw\n\
             32 1 8:1 / / rw - ext4 /dev/sda1 rw\n",
        ));
        assert_eq!(
            p.mounts,
            vec![
                (PathBuf::from("/sys/fs/cgroup/unified"), 26),
                (PathBuf::from("/sys/fs/bpf"), 27)
            ]
        );
        assert!(
            judge_protected(&p, "/sys/fs/bpf/x", FileAccess::Unlink).is_some(),
            "unlinking a pin"
        );
        assert!(
            judge_protected(&p, "/sys/fs/cgroup/unified/cgroup.procs", FileAccess::Write).is_some()
        );
        assert!(
            judge_protected(&p, "/sys/fs/cgroup/unified/cgroup.procs", FileAccess::Read).is_none()
        );
        assert!(judge_protected(&p, "/sys/fs/bpfx", FileAccess::Write).is_none());
    }
}
