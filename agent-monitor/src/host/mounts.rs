//! The mount table, from `/proc/self/mountinfo`: the one parser behind the cgroup2 root, the
//! cgroup hierarchies a process's limits live on, and the filesystems that hold the
//! monitor's own state.

use std::{io, path::PathBuf};

/// One line of mountinfo: `id parent major:minor root mountpoint options [tags...] -
/// fstype source super-options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The filesystem's device, `MKDEV` encoded as the kernel's `s_dev` (`major << 20 |
    /// minor`).
    pub(crate) dev: u32,
    /// Where it is mounted (octal escapes such as `\040` undone).
    pub(crate) dir: PathBuf,
    pub(crate) fstype: String,
    /// Per-superblock options: on a cgroup v1 hierarchy they name its controllers.
    pub(crate) super_options: String,
}

/// This process's mount table.
pub(crate) fn read() -> io::Result<Vec<Mount>> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|text| parse(&text))
}

/// Parses mountinfo text; malformed lines are skipped.
pub(crate) fn parse(mountinfo: &str) -> Vec<Mount> {
    mountinfo.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let dev = left.nth(2)?;
    let dir = left.nth(1)?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let _source = right.next()?;
    let super_options = right.next().unwrap_or_default();
    let (major, minor) = dev.split_once(':')?;
    let (major, minor) = (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?);
    Some(Mount {
        dev: (major << 20) | (minor & 0xf_ffff),
        dir: PathBuf::from(unescape(dir)),
        fstype: unescape(fstype),
        super_options: unescape(super_options),
    })
}

/// The kernel escapes space, tab, newline and backslash in mount fields as three octal
/// digits (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && let Some(v) = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystems that hold the monitor's own state and controls: an agent writing there is
/// an escape, whatever its scope says.
const PROTECTED_FS: &[&str] = &[
    "cgroup2",
    "cgroup",
    "bpf",
    "tracefs",
    "debugfs",
    "securityfs",
];

/// Mount points of the protected filesystems and their devices.
#[derive(Debug, Clone, Default)]
pub(crate) struct Protected {
    pub(crate) mounts: Vec<(PathBuf, u32)>,
}

impl Protected {
    pub(crate) fn discover() -> Self {
        Self::from_mounts(&read().unwrap_or_default())
    }

    pub(crate) fn from_mounts(mounts: &[Mount]) -> Self {
        Self {
            mounts: mounts
                .iter()
                .filter(|m| PROTECTED_FS.contains(&m.fstype.as_str()))
                .map(|m| (m.dir.clone(), m.dev))
                .collect(),
        }
    }

    /// The protected mount `path` is on, if any.
    pub(crate) fn mount_of(&self, path: &std::path::Path) -> Option<&std::path::Path> {
        self.mounts
            .iter()
            .find(|(m, _)| path.starts_with(m))
            .map(|(m, _)| m.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
31 22 0:27 / /sys/fs/cgroup/cpu\\040x rw - cgroup cgroup rw,cpu,cpuacct
40 22 0:33 / /sys/fs/bpf rw - bpf bpf rw,mode=700
99 1 8:1 / /mnt/with\\134slash rw - ext4 /dev/sda1 rw
bad line without separator
";

    #[test]
    fn fields_devices_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5, "the malformed line is skipped");
        assert_eq!(m[1].fstype, "cgroup2");
        assert_eq!(m[1].dir, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m[1].dev, 26);
        assert_eq!(m[2].dir, PathBuf::from("/sys/fs/cgroup/cpu x"));
        assert_eq!(m[2].super_options, "rw,cpu,cpuacct");
        assert_eq!(m[4].dir, PathBuf::from("/mnt/with\\slash"));
        assert_eq!(m[4].dev, (8 << 20) | 1);
    }

    #[test]
    fn protected_are_the_monitor_filesystems() {
        let p = Protected::from_mounts(&parse(SAMPLE));
        let dirs: Vec<_> = p.mounts.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(
            dirs,
            ["/sys/fs/cgroup", "/sys/fs/cgroup/cpu x", "/sys/fs/bpf"].map(PathBuf::from)
        );
    }
}
