//! The runtime baseline: what any dynamically linked program touches just to start and
//! run, granted when `files.baseline` is true. It is a security boundary, so every entry
//! says why it is there; nothing here reveals secrets or other processes.

use globset::Candidate;

use super::PolicyError;
use super::glob::PatternSet;

/// Read baseline (a file also covered by `files.deny` is still denied).
pub(crate) const READ: &[&str] = &[
    // Shared libraries and the dynamic loader's search paths (also covers /usr/lib/locale).
    "/lib/**",
    "/lib64/**",
    "/usr/lib/**",
    "/usr/lib64/**",
    "/usr/local/lib/**",
    // The dynamic loader's cache and preload list, read by every dynamic executable.
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    // libc time-zone setup (localtime, strftime).
    "/etc/localtime",
    "/usr/share/zoneinfo/**",
    // libc name-service switch: user/group names (getpwuid in git, ssh, python) ...
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    // ... and the resolver configuration (getaddrinfo); reading it connects nowhere.
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    // Message catalogues and MIME types used by libc, coreutils and language runtimes.
    "/usr/share/locale/**",
    // glibc's setlocale() reads the locale alias table.
    "/etc/locale.alias",
    "/etc/mime.types",
    // Harmless character devices: sinks, sources of zeros and randomness, the terminal.
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
    "/dev/tty",
    "/dev/pts/*",
    // CPU topology, read by sysconf(_SC_NPROCESSORS_*) and thread-pool sizing.
    "/sys/devices/system/cpu/**",
    // Kernel limits read by libc: sysconf(_SC_NGROUPS_MAX) and malloc's heap trimming.
    "/proc/sys/kernel/ngroups_max",
    "/proc/sys/vm/overcommit_memory",
    // The filesystem types the kernel knows: coreutils built with libselinux (ls, cp,
    // mkdir, id, ...) read it at start. Names of filesystem drivers only.
    "/proc/filesystems",
    // Machine-wide memory and CPU facts, no process in them: Node (libuv
    // uv_get_total_memory, os.cpus(), os.loadavg()), Python (os.sysconf, multiprocessing),
    // the JVM and Go size heaps and pools from them.
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/version",
    "/proc/sys/kernel/osrelease",
    "/proc/sys/kernel/pid_max",
    "/proc/sys/net/core/somaxconn",
    // Memory topology and huge-page settings: jemalloc, Go and V8 read them to size
    // allocations.
    "/sys/devices/system/node/**",
    "/sys/kernel/mm/transparent_hugepage/**",
    // Public CA certificates and OpenSSL's configuration, read by every TLS client (curl,
    // git over https, Python's ssl, Node's tls). Private keys (/etc/ssl/private) stay out.
    "/etc/ssl/certs/**",
    "/etc/ssl/openssl.cnf",
    "/usr/share/ca-certificates/**",
    // Terminal descriptions (ncurses: git's pager, less, python's curses) and readline's
    // configuration (python's interactive and pytest's debugger set-up).
    "/usr/share/terminfo/**",
    "/etc/terminfo/**",
    "/etc/inputrc",
    // Which distribution this is: pip's vendored `distro`, python's platform, lsb_release.
    "/etc/debian_version",
    "/etc/lsb-release",
    "/etc/os-release",
];

/// Write baseline: discarding output and talking to the controlling terminal.
pub(crate) const WRITE: &[&str] = &["/dev/null", "/dev/tty", "/dev/pts/*"];

#[derive(Debug, Clone)]
pub(crate) struct Baseline {
    read: PatternSet,
    write: PatternSet,
}

impl Baseline {
    pub(crate) fn compile() -> Result<Self, PolicyError> {
        Ok(Self {
            read: PatternSet::compile("the read baseline", READ)?,
            write: PatternSet::compile("the write baseline", WRITE)?,
        })
    }

    /// Reads of the static list, and of the acting process's own `/proc/<tgid>` tree
    /// (the caller has already rewritten `/proc/self`); other processes' trees are not.
    pub(crate) fn allows_read(&self, path: &str, candidate: &Candidate<'_>, tgid: u32) -> bool {
        is_own_proc(path, tgid) || self.read.is_match(candidate)
    }

    pub(crate) fn allows_write(&self, candidate: &Candidate<'_>) -> bool {
        self.write.is_match(candidate)
    }
}

/// True for `/proc/<tgid>` and anything below it.
fn is_own_proc(path: &str, tgid: u32) -> bool {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return false;
    };
    let (pid, _) = rest.split_once('/').unwrap_or((rest, ""));
    // Parse rather than compare strings so that "0042" is not taken for 42: the kernel
    // never spells a pid with leading zeros, so such a path is not the process's own.
    !pid.starts_with('0') && pid.bytes().all(|b| b.is_ascii_digit()) && pid.parse() == Ok(tgid)
}

#[cfg(test)]
mod tests {
    use super::is_own_proc;

    #[test]
    fn own_proc_tree_only() {
        assert!(is_own_proc("/proc/42", 42));
        assert!(is_own_proc("/proc/42/status", 42));
        assert!(is_own_proc("/proc/42/task/43/comm", 42));
        assert!(!is_own_proc("/proc/420/status", 42));
        assert!(!is_own_proc("/proc/4/status", 42));
        assert!(!is_own_proc("/proc/042/status", 42));
        assert!(!is_own_proc("/proc/+42/status", 42));
        assert!(!is_own_proc("/proc/self/status", 42));
        assert!(!is_own_proc("/proc/sys/kernel/hostname", 42));
        assert!(!is_own_proc("/proc", 42));
        assert!(!is_own_proc("/procx/42", 42));
    }
}

#[cfg(test)]
mod grants {
    use globset::Candidate;

    use super::Baseline;

    /// What the baseline must never grant: other processes, other cgroups, kernel memory
    /// and firmware, keys and credentials.
    #[test]
    fn nothing_about_other_processes_or_secrets() {
        let b = Baseline::compile().expect("baseline compiles");
        for path in [
            "/proc/1/environ",
            "/proc/1/status",
            "/proc/1/cgroup",
            "/proc/kcore",
            "/proc/kallsyms",
            "/proc/sys/kernel/random/boot_id",
            "/sys/firmware/acpi/tables/DSDT",
            "/sys/kernel/debug/tracing/trace",
            "/sys/kernel/security/lsm",
            "/sys/fs/cgroup/unified/other.slice/memory.max",
            "/sys/fs/cgroup/memory/other/memory.limit_in_bytes",
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/ssl/private/server.key",
            "/root/.ssh/id_ed25519",
            "/home/user/.aws/credentials",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            "/dev/mem",
            "/dev/kmsg",
            "/dev/sda",
        ] {
            assert!(
                !b.allows_read(path, &Candidate::new(path), 42),
                "the baseline grants {path}"
            );
            assert!(!b.allows_write(&Candidate::new(path)), "writes {path}");
        }
        for path in [
            "/proc/filesystems",
            "/proc/meminfo",
            "/proc/42/status",
            "/etc/ssl/certs/ca-certificates.crt",
        ] {
            assert!(b.allows_read(path, &Candidate::new(path), 42), "{path}");
        }
    }
}
