//! Escape attempts: what the kernel's escape hooks saw, judged (pure). Nothing here is ever
//! in scope: a scope describes work, and leaving the monitor's confinement is not work.

use std::path::Path;

use crate::{
    host::mounts::Protected,
    kernel::decoder::EscapeWhat,
    observe::record::EscapeObject,
    policy::{Dimension, FileAccess, Verdict},
};

/// A syscall's name, or `syscall_<nr>` for one this build does not know.
fn syscall_name(nr: u32) -> String {
    agent_monitor_common::syscalls::by_nr(nr)
        .map_or_else(|| format!("syscall_{nr}"), |s| s.name.to_owned())
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

/// A write, create, unlink or rename under one of the filesystems that hold the monitor's
/// state and controls.
pub(crate) fn judge_protected(
    protected: &Protected,
    path: &str,
    access: FileAccess,
) -> Option<Verdict> {
    // Reading and listing leave the monitor's state as it is (the file rules judge them).
    if matches!(access, FileAccess::Read | FileAccess::List) {
        return None;
    }
    let mount = protected.mount_of(Path::new(path))?;
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
        assert!(judge_protected(&p, "/sys/fs/bpf", FileAccess::List).is_none());
        assert!(judge_protected(&p, "/sys/fs/bpf/evil", FileAccess::Create).is_some());
        assert!(judge_protected(&p, "/sys/fs/bpfx", FileAccess::Write).is_none());
    }
}
