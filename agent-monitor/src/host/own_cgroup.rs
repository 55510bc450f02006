//! A process's own cgroup limits, part of the read baseline: runtimes size their heaps and
//! thread pools from them (Node's libuv reads `memory.max`, `memory.high` and `cpu.max`;
//! Rust's `available_parallelism` and Go read `cpu.max` or `cpu.cfs_quota_us`; the JVM reads
//! the memory and cpu files; on a hybrid host the v1 files). Only files that state a
//! limit, in the cgroups the process is in and their ancestors (the limits that apply to
//! it), on each hierarchy: other cgroups' files stay out.

use super::mounts::Mount;
use std::{
    fs,
    path::{Path, PathBuf},
};

/// The files that state a limit (or the controllers that can set one).
const LIMIT_FILES: &[&str] = &[
    "cgroup.controllers",
    "memory.max",
    "memory.high",
    "memory.low",
    "memory.min",
    "memory.swap.max",
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "cpu.max",
    "cpu.weight",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "cpu.shares",
    "cpuset.cpus",
    "cpuset.cpus.effective",
    "cpuset.mems",
    "cpuset.mems.effective",
    "pids.max",
];

/// The cgroup hierarchies mounted on this host: the v2 one and each v1 one with its
/// controllers.
#[derive(Debug, Clone, Default)]
pub(crate) struct CgroupMounts {
    v2: Option<PathBuf>,
    v1: Vec<(PathBuf, Vec<String>)>,
}

impl CgroupMounts {
    pub(crate) fn discover() -> Self {
        Self::from_mounts(&super::mounts::read().unwrap_or_default())
    }

    fn from_mounts(mounts: &[Mount]) -> Self {
        let mut out = Self::default();
        for m in mounts {
            match m.fstype.as_str() {
                "cgroup2" => out.v2 = Some(m.dir.clone()),
                "cgroup" => out.v1.push((
                    m.dir.clone(),
                    m.super_options.split(',').map(str::to_owned).collect(),
                )),
                _ => {}
            }
        }
        out
    }

    /// Whether `path` lies on a cgroup filesystem at all (the only paths worth a look).
    pub(crate) fn holds(&self, path: &Path) -> bool {
        // Asked for every read: the bytes are compared first (a component prefix is a byte
        // prefix too), and the slower comparison of components only for a candidate.
        let under = |m: &Path| {
            path.as_os_str()
                .as_encoded_bytes()
                .starts_with(m.as_os_str().as_encoded_bytes())
                && path.starts_with(m)
        };
        self.v2.iter().any(|m| under(m)) || self.v1.iter().any(|(m, _)| under(m))
    }

    /// The directories of the cgroups a process is in, from its `/proc/<pid>/cgroup`
    /// (`hierarchy:controllers:path` lines; `0::path` is v2).
    pub(crate) fn dirs_of(&self, cgroup_file: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for line in cgroup_file.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            let mount = if id == "0" && controllers.is_empty() {
                self.v2.as_ref()
            } else {
                let wanted: Vec<&str> = controllers
                    .split(',')
                    .map(|c| c.strip_prefix("name=").unwrap_or(c))
                    .collect();
                self.v1
                    .iter()
                    .find(|(_, opts)| {
                        wanted
                            .iter()
                            .all(|w| opts.iter().any(|o| o == w || o == &format!("name={w}")))
                    })
                    .map(|(m, _)| m)
            };
            if let Some(m) = mount {
                out.push(if rel.is_empty() {
                    m.clone()
                } else {
                    m.join(rel)
                });
            }
        }
        out
    }

    /// The cgroup directories of process `pid` now.
    pub(crate) fn dirs_of_pid(&self, pid: u32) -> Vec<PathBuf> {
        fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|t| self.dirs_of(&t))
            .unwrap_or_default()
    }

    /// Every limit file that applies to a process in `own` (its cgroups and their
    /// ancestors up to each mount), as they exist now.
    pub(crate) fn limit_files(&self, own: &[PathBuf]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in own {
            let Some(mount) = self.mount_of(dir) else {
                continue;
            };
            for d in dir.ancestors().take_while(|a| a.starts_with(mount)) {
                for name in LIMIT_FILES {
                    let f = d.join(name);
                    if f.is_file() && !out.contains(&f) {
                        out.push(f);
                    }
                }
            }
        }
        out
    }

    fn mount_of(&self, dir: &Path) -> Option<&Path> {
        self.v2
            .iter()
            .chain(self.v1.iter().map(|(m, _)| m))
            .filter(|m| dir.starts_with(m))
            .max_by_key(|m| m.as_os_str().len())
            .map(PathBuf::as_path)
    }
}

/// Whether `path` is a limit file of one of `own` cgroup directories or of an ancestor.
pub(crate) fn is_own_limit(path: &Path, own: &[PathBuf]) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    LIMIT_FILES.iter().any(|f| name == *f) && own.iter().any(|o| o.starts_with(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
30 22 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
31 22 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 22 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 22 0:29 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn the_cgroups_a_process_is_in_on_every_hierarchy() {
        let m = CgroupMounts::from_mounts(&super::super::mounts::parse(MOUNTS));
        let dirs = m.dirs_of(
            "12:memory:/user.slice\n4:cpu,cpuacct:/\n1:name=systemd:/x\n0::/agent-monitor/t-1\n",
        );
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/user.slice"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                PathBuf::from("/sys/fs/cgroup/systemd/x"),
                PathBuf::from("/sys/fs/cgroup/unified/agent-monitor/t-1"),
            ]
        );
    }

    #[test]
    fn only_limit_files_of_its_own_cgroups_and_their_ancestors() {
        let own = vec![
            PathBuf::from("/sys/fs/cgroup/unified/agent-monitor/t-1"),
            PathBuf::from("/sys/fs/cgroup/memory/user.slice"),
        ];
        let yes = |p: &str| is_own_limit(Path::new(p), &own);
        assert!(yes("/sys/fs/cgroup/unified/agent-monitor/t-1/memory.max"));
        assert!(
            yes("/sys/fs/cgroup/unified/agent-monitor/cpu.max"),
            "an ancestor's limit"
        );
        assert!(yes(
            "/sys/fs/cgroup/memory/user.slice/memory.soft_limit_in_bytes"
        ));
        assert!(
            yes("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "the root's"
        );
        assert!(
            !yes("/sys/fs/cgroup/unified/agent-monitor/t-2/memory.max"),
            "a sibling's"
        );
        assert!(
            !yes("/sys/fs/cgroup/unified/agent-monitor/t-1/cgroup.procs"),
            "not a limit"
        );
        assert!(!yes(
            "/sys/fs/cgroup/memory/system.slice/memory.limit_in_bytes"
        ));
        assert!(
            !yes("/sys/fs/cgroup/unified/agent-monitor/t-1/sub/memory.max"),
            "below it"
        );
    }
}
