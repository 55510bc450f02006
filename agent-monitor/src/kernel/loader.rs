//! Loads the kernel programs and attaches every hook, recording what attached (coverage).
//! A hook that fails to attach is named and reported as uncovered; the daemon keeps running
//! with the rest. Tracepoint records are read where their tracefs formats say
//! (`tracefs`): a required hook whose record does not have what its program reads stops
//! the load instead.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use agent_monitor_common::{
    counter,
    layout::TracepointLayout,
    syscalls::{self, Class, Hook, Syscall},
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::links::FdLink,
};
use serde::Serialize;

use super::{
    demand::{self, OnDemand},
    ebpf_object,
    maps::{EnforceMaps, Maps, Rings, StateMaps},
    pins::Pins,
    tracefs::{self, Verdict},
};
use crate::host::cgroupfs::Cgroup2;

mod attach;
mod facts;

use attach::{attach_sock_addr, attach_tracepoint};
use facts::{struct_offsets, write_protected};

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(
        "agent-monitor run must run as root (it loads eBPF programs and manages cgroups); effective uid is {0}"
    )]
    NotRoot(u32),
    #[error(
        "the kernel exposes no BTF at /sys/kernel/btf/vmlinux; agent-monitor needs Linux >= 5.15 built with CONFIG_DEBUG_INFO_BTF"
    )]
    NoBtf,
    #[error(transparent)]
    Cgroup(#[from] crate::host::cgroupfs::CgroupError),
    #[error("mounting {fs} at {path}: {source}")]
    Mount {
        fs: &'static str,
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the embedded eBPF object is empty: this binary was built with AYA_BUILD_SKIP=1")]
    EmptyObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Pin(#[from] crate::kernel::pins::PinError),
    #[error(
        "the pinned state in {dir} cannot be adopted ({source}); it was most likely left by another build of agent-monitor, whose hooks still enforce: stop its agents and remove it (`rm -r {dir}`), or run that build with --release-on-exit once"
    )]
    Incompatible {
        dir: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error(
        "cannot attach {program}: {error}; agent-monitor cannot read this kernel's record of that tracepoint"
    )]
    TracepointLayout {
        program: &'static str,
        error: String,
    },
    #[error("the syscall hooks: {0}")]
    Demand(#[source] Box<super::demand::DemandError>),
    #[error("opening the cgroup2 root {path}: {source}")]
    CgroupRoot {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// One hook and whether it is live.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HookStatus {
    /// Program name in the object.
    pub(crate) program: &'static str,
    /// `tracepoint:category:name` or `cgroup:connect4@/sys/fs/cgroup/unified`.
    pub(crate) target: String,
    /// For a syscall hook (attached only while an agent runs): it attached when the daemon
    /// started and attaches whenever an agent starts.
    pub(crate) attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// A syscall hook, attached only while an agent runs (`kernel::demand`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) on_demand: bool,
}

impl HookStatus {
    pub(crate) fn ok(program: &'static str, target: String) -> Self {
        Self {
            program,
            target,
            attached: true,
            error: None,
            on_demand: false,
        }
    }

    pub(crate) fn failed(program: &'static str, target: String, error: String) -> Self {
        tracing::warn!(%program, %target, %error, "hook not attached; this activity is not covered");
        Self {
            program,
            target,
            attached: false,
            error: Some(error),
            on_demand: false,
        }
    }
}

/// The loaded programs and the maps the daemon talks to. Dropping `ebpf` detaches
/// everything.
pub(crate) struct Kernel {
    /// None when the programs were adopted from pins (they are the previous daemon's).
    pub(crate) ebpf: Option<Ebpf>,
    pub(crate) rings: Rings,
    pub(crate) handles: Handles,
}

/// What the daemon's shared state keeps of the kernel side.
pub(crate) struct Handles {
    pub(crate) maps: StateMaps,
    pub(crate) enforce: EnforceMaps,
    pub(crate) hooks: Vec<HookStatus>,
    /// The syscall tracepoints, attached while agents run.
    pub(crate) demand: OnDemand,
    /// Why file and exec identity is unavailable, when BTF offsets could not be read.
    pub(crate) identity_error: Option<String>,
}

/// (program, category, tracepoint, required). A tracepoint that is not required may be
/// absent on some architectures (the legacy `open`, `rename`, ... syscalls).
const TRACEPOINTS: &[(&str, &str, &str, bool)] = &[
    ("sched_process_fork", "sched", "sched_process_fork", true),
    ("sched_process_exec", "sched", "sched_process_exec", true),
    ("sched_process_exit", "sched", "sched_process_exit", true),
    ("sched_process_free", "sched", "sched_process_free", true),
    ("sys_enter_execve", "syscalls", "sys_enter_execve", true),
    ("sys_enter_execveat", "syscalls", "sys_enter_execveat", true),
    ("cgroup_mkdir", "cgroup", "cgroup_mkdir", true),
    ("cgroup_rmdir", "cgroup", "cgroup_rmdir", true),
    ("cgroup_attach_task", "cgroup", "cgroup_attach_task", true),
];

/// Where the tracepoint `format` files are read from instead of this machine's tracefs
/// (tests: a copy with a field moved or removed). Attaching still uses the real tracefs.
const TRACEFS_ENV: &str = "AGENT_MONITOR_TRACEFS";

/// The tracefs root the record layouts are read from.
fn tracefs_root() -> PathBuf {
    std::env::var_os(TRACEFS_ENV).map_or_else(tracefs::default_root, PathBuf::from)
}

/// Every tracepoint hook, in the order they are attached: [`TRACEPOINTS`], then what
/// watches each syscall ([`syscall_hooks`]).
pub(crate) fn tracepoint_hooks() -> Vec<tracefs::Hook> {
    let mut hooks: Vec<tracefs::Hook> = TRACEPOINTS
        .iter()
        .map(|&(program, category, name, required)| tracefs::Hook {
            program,
            category,
            name: name.to_owned(),
            required,
        })
        .collect();
    for s in syscalls::TABLE {
        syscall_hooks(s, &mut hooks);
    }
    hooks
}

/// recvmsg4/6 give a redirected DNS reply its original source back (DNS-name egress).
const SOCK_ADDR: &[&str] = &[
    "connect4", "connect6", "sendmsg4", "sendmsg6", "bind4", "bind6", "recvmsg4", "recvmsg6",
];

/// Checks the environment before loading, so a missing prerequisite is one clear line.
pub(crate) fn preflight() -> Result<Cgroup2, LoadError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(LoadError::NotRoot(euid));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(LoadError::NoBtf);
    }
    let cgroup2 = Cgroup2::discover()?;
    ensure_mounted(
        "tracefs",
        "/sys/kernel/tracing",
        "/sys/kernel/tracing/events",
    )?;
    Ok(cgroup2)
}

/// Mounts bpffs at /sys/fs/bpf unless the pin directory is already on a bpf filesystem.
pub(crate) fn ensure_bpffs(pin_path: &Path) -> Result<(), LoadError> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let on_bpffs = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(2) == Some(&"bpf") && f.get(1).is_some_and(|m| pin_path.starts_with(m))
    });
    if on_bpffs {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, dst) = (c("bpf"), c("/sys/fs/bpf"));
    // SAFETY: valid NUL-terminated strings; no mount data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Mount {
            fs: "bpf",
            path: "/sys/fs/bpf",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Mounts a pseudo filesystem when it is absent (tracepoint ids are read from tracefs).
pub(crate) fn ensure_mounted(
    fs: &'static str,
    path: &'static str,
    probe: &str,
) -> Result<(), LoadError> {
    if Path::new(probe).exists() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, dst, kind) = (c(fs), c(path), c(fs));
    // SAFETY: valid NUL-terminated strings; no mount data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Mount {
            fs,
            path,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Adopts a previous daemon's pinned programs when `pins` holds them, else loads and
/// attaches everything (and pins it when `pins` is given).
pub(crate) fn adopt_or_load(
    cgroup2: &Cgroup2,
    ring_bytes: u32,
    pins: &Pins,
) -> Result<Kernel, LoadError> {
    if pins.present() {
        // Refused rather than replaced: the pinned hooks keep enforcing meanwhile, and
        // replacing them would leave the running agents unwatched while this one loads.
        let demand = OnDemand::open(&pins.programs(), &pins.demand(), syscall_hooks_that_fit());
        return pins
            .adopt(demand)
            .map_err(|source| LoadError::Incompatible {
                dir: pins.dir().display().to_string(),
                source: Box::new(source),
            });
    }
    load(cgroup2, ring_bytes, pins)
}

/// Whether the kernel has the `bpf_loop` helper (Linux 5.17). Without it the network
/// programs' rule searches are unrolled, which only makes them slower to verify.
/// `AGENT_MONITOR_BPF_LOOP=0` forces the unrolled form (the tests check that it loads).
fn have_bpf_loop() -> bool {
    if std::env::var_os("AGENT_MONITOR_BPF_LOOP").is_some_and(|v| v == "0") {
        return false;
    }
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 17, 0))
}

/// Whether a hook is on a syscall tracepoint (attached only while agents run).
fn on_demand(hook: &tracefs::Hook) -> bool {
    hook.category == "syscalls"
}

/// The syscall tracepoints whose records this kernel lays out as the programs read them.
fn syscall_hooks_that_fit() -> Vec<tracefs::Hook> {
    let hooks: Vec<tracefs::Hook> = tracepoint_hooks().into_iter().filter(on_demand).collect();
    let layout = tracefs::Layout::read(&tracefs_root(), &hooks);
    hooks
        .into_iter()
        .zip(layout.verdicts)
        .filter_map(|(h, v)| matches!(v, Verdict::Fits).then_some(h))
        .collect()
}

/// Loads the object and attaches all hooks (the syscall ones once, to check them: they are
/// detached when no agent runs). `ring_bytes` sizes the event ring buffer.
fn load(cgroup2: &Cgroup2, ring_bytes: u32, pins: &Pins) -> Result<Kernel, LoadError> {
    if ebpf_object::OBJECT.is_empty() {
        return Err(LoadError::EmptyObject);
    }
    let tracepoints = tracepoint_hooks();
    let layout = tracefs::Layout::read(&tracefs_root(), &tracepoints);
    // A required hook whose record cannot be read stops the daemon before anything loads.
    for (hook, verdict) in tracepoints.iter().zip(&layout.verdicts) {
        if let (true, Verdict::Refused(error)) = (hook.required, verdict) {
            return Err(LoadError::TracepointLayout {
                program: hook.program,
                error: error.clone(),
            });
        }
    }
    let offsets: TracepointLayout = layout.layout;
    let bpf_loop = have_bpf_loop();
    if !bpf_loop {
        tracing::info!(
            "no bpf_loop: the network programs' rule searches are unrolled (slower to verify)"
        );
    }
    let (struct_offsets, identity_error) = match struct_offsets() {
        Ok(o) => (o, None),
        Err(e) => (agent_monitor_common::Offsets::NONE, Some(e.to_string())),
    };
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", ring_bytes)
        // Frozen too: the file programs load through BTF-typed pointers at these offsets.
        .override_global("STRUCT_OFFSETS", &struct_offsets, true)
        // Frozen `.rodata`: the verifier sees the offsets as constants.
        .override_global("TRACEPOINT_LAYOUT", &offsets, true)
        // Frozen too: the verifier follows only the searches' `bpf_loop` arm or only the
        // unrolled one.
        .override_global("HAVE_BPF_LOOP", &u32::from(bpf_loop), true)
        .load(ebpf_object::OBJECT)
        .map_err(|e| LoadError::Load(Box::new(e)))?;
    let mut links = Vec::new();
    let mut hooks = Vec::new();
    let mut syscall_hooks = Vec::new();
    for (hook, verdict) in tracepoints.iter().zip(layout.verdicts) {
        let target = format!("tracepoint:{}", hook.tracepoint());
        hooks.push(match verdict {
            Verdict::Fits if on_demand(hook) => {
                syscall_hooks.push(hook.clone());
                continue;
            }
            Verdict::Fits => attach_tracepoint(&mut ebpf, hook, target, &mut links),
            // Not an error: this architecture has no such syscall.
            Verdict::Absent => HookStatus {
                attached: false,
                ..HookStatus::ok(hook.program, target)
            },
            Verdict::Refused(error) => {
                let mut status = HookStatus::failed(hook.program, target, error);
                status.on_demand = on_demand(hook);
                status
            }
        });
    }
    let root = cgroup2.root();
    let root_fd = fs::File::open(root).map_err(|source| LoadError::CgroupRoot {
        path: root.display().to_string(),
        source,
    })?;
    for &program in SOCK_ADDR {
        hooks.push(attach_sock_addr(
            &mut ebpf, program, &root_fd, root, &mut links,
        ));
    }
    hooks.retain(|h| h.attached || h.error.is_some());
    if let Err(e) = write_protected(&mut ebpf, &crate::host::mounts::Protected::discover()) {
        tracing::error!(error = %e, "cannot list the protected filesystems: writes there are judged by the daemon only");
    }
    if let Some(e) = &identity_error {
        tracing::error!(error = %e, "no file identity: denied files and binaries are enforced by the daemon only");
    }
    pin_all(pins, &ebpf, links)?;
    demand::pin_programs(&mut ebpf, &syscall_hooks, &pins.programs())
        .map_err(|e| LoadError::Demand(Box::new(e)))?;
    let demand = OnDemand::open(&pins.programs(), &pins.demand(), syscall_hooks);
    let (attached, statuses) = demand.attach();
    drop(attached);
    hooks.extend(statuses.into_iter().map(|mut h| {
        h.on_demand = true;
        h
    }));
    let maps = Maps::open(|name| ebpf.take_map(name).ok_or(LoadError::MissingMap(name)))?;
    Ok(Kernel {
        ebpf: Some(ebpf),
        rings: maps.rings,
        handles: Handles {
            maps: maps.state,
            enforce: maps.enforce,
            hooks,
            demand,
            identity_error,
        },
    })
}

/// Maps first, links last: links present means a complete set for the next daemon. The
/// object's data sections (`.rodata`: the tracepoint layout) are not pinned: the programs
/// hold them, the daemon never reads them, and bpffs refuses names with a dot.
fn pin_all(pins: &Pins, ebpf: &Ebpf, links: Vec<(String, FdLink)>) -> Result<(), LoadError> {
    pins.prepare()?;
    for (name, map) in ebpf.maps() {
        if name.starts_with('.') {
            continue;
        }
        pins.pin_map(name, map)?;
    }
    for (target, link) in links {
        // The pin keeps the link; dropping our handle does not detach it.
        drop(pins.pin_link(&target, link)?);
    }
    Ok(())
}

/// The hooks that watch one syscall (its [`Hook`]). The file syscalls: `sys_exit_file`
/// reads their arguments from the saved user registers at exit (no entry hook). The escape
/// syscalls: `sys_exit_escape`, and `sys_enter_escape` for the signals. The rest of what the
/// agents' seccomp filter refuses (by number or by arguments): `sys_exit_refused`, which
/// records each refusal. Only the file hooks marked required must attach: an architecture
/// (or a kernel without modules) may lack the others.
fn syscall_hooks(s: &Syscall, hooks: &mut Vec<tracefs::Hook>) {
    let mut attach = |program: &'static str, name: String, required: bool| {
        hooks.push(tracefs::Hook {
            program,
            category: "syscalls",
            name,
            required,
        });
    };
    match s.hook {
        Hook::File { required } => {
            attach("sys_exit_file", format!("sys_exit_{}", s.name), required);
        }
        Hook::Escape {
            tracepoint: Some(tracepoint),
            entry,
        } => {
            if entry {
                attach("sys_enter_escape", format!("sys_enter_{tracepoint}"), false);
            }
            attach("sys_exit_escape", format!("sys_exit_{tracepoint}"), false);
        }
        Hook::Escape {
            tracepoint: None, ..
        }
        | Hook::None => {}
    }
    // A file syscall the filter refuses by its arguments (mknod of a device) has both.
    if matches!(s.hook, Hook::None | Hook::File { .. })
        && matches!(s.class, Class::Refuse | Class::Args)
    {
        attach("sys_exit_refused", format!("sys_exit_{}", s.name), false);
    }
}

/// Renders an error with its causes (aya's verifier errors carry the log in the chain).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Sums a per-CPU counter.
pub(crate) fn read_counter(counters: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    counters.get(&index, 0).map_or(0, |v| v.iter().sum())
}

/// Kernel-side counters.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub(crate) struct KernelCounters {
    pub(crate) emitted: u64,
    pub(crate) dropped: u64,
    pub(crate) pid_map_full: u64,
    /// Repeated identical opens counted but not re-reported.
    pub(crate) deduplicated: u64,
}

impl KernelCounters {
    pub(crate) fn read(counters: &PerCpuArray<MapData, u64>) -> Self {
        Self {
            emitted: read_counter(counters, counter::EMITTED),
            dropped: read_counter(counters, counter::DROPPED),
            pid_map_full: read_counter(counters, counter::PID_MAP_FULL),
            deduplicated: read_counter(counters, counter::DEDUPED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs_at(hooks: &[tracefs::Hook], tracepoint: &str) -> Vec<&'static str> {
        let mut p: Vec<_> = hooks
            .iter()
            .filter(|h| h.name == tracepoint)
            .map(|h| h.program)
            .collect();
        p.sort_unstable();
        p
    }

    #[test]
    fn each_syscall_gets_the_programs_its_table_entry_names() {
        let hooks = tracepoint_hooks();
        assert_eq!(
            programs_at(&hooks, "sys_exit_mknodat"),
            ["sys_exit_file", "sys_exit_refused"],
            "a file syscall the filter refuses by argument is watched for both"
        );
        assert_eq!(programs_at(&hooks, "sys_exit_openat"), ["sys_exit_file"]);
        assert_eq!(programs_at(&hooks, "sys_enter_kill"), ["sys_enter_escape"]);
        assert_eq!(programs_at(&hooks, "sys_exit_kill"), ["sys_exit_escape"]);
        assert_eq!(programs_at(&hooks, "sys_exit_umount"), ["sys_exit_escape"]);
        assert_eq!(programs_at(&hooks, "sys_exit_keyctl"), ["sys_exit_refused"]);
        assert!(programs_at(&hooks, "sys_exit_read").is_empty());
        assert!(programs_at(&hooks, "sys_exit_io_uring_enter").is_empty());
    }
}
