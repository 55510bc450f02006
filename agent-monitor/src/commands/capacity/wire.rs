//! The synthetic ring-buffer records of `bench-pipeline` and the scope they are judged
//! under: the wire structs of `agent-monitor-common`, filled in as the kernel programs fill
//! them, and sent at the length they send.

use std::{
    fs,
    mem::{size_of, zeroed},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::Path,
};

use agent_monitor_common::{
    ARG_LEN, COMM_LEN, EventHeader, ExecEvent, FILE_EVENT_ONE_PATH, FileEvent, MAX_ARGS, NetEvent,
    PATH_LEN, file_op, kind, net_op,
};
use anyhow::{Context as _, bail};

use crate::{cli::BenchKind, control::enforce::kernel_dev};

pub(super) const SCOPE: &str = "capacity";
/// The UDP port the synthetic connects reach (in scope).
pub(super) const PORT: u16 = 39_999;
/// Distinct files (and records) the synthetic events cycle through.
pub(super) const FILES: usize = 64;

/// `O_RDONLY | O_CLOEXEC`, as libc opens a file to read it.
const OPEN_FLAGS: u32 = 0o2_000_000;
const AT_FDCWD: i32 = -100;
const IPPROTO_UDP: u32 = 17;
const AF_INET: u32 = 2;

/// An audit scope that allows every synthetic event: reads under `dir/data`, execs of
/// `exe`, UDP connects to 127.0.0.1:PORT.
pub(super) fn scope_yaml(dir: &Path, exe: &Path) -> String {
    let (dir, exe) = (dir.display(), exe.display());
    format!(
        "apiVersion: agent-monitor.dev/v1\n\
         kind: AgentScope\n\
         metadata: {{name: {SCOPE}, owner: bench@example.org}}\n\
         spec:\n  \
           mode: audit\n  \
           exec: {{allow: [{exe}]}}\n  \
           files: {{read: [{dir}/data/**]}}\n  \
           network: {{connect: [{{cidr: 127.0.0.1/32, ports: [{PORT}], protocol: udp}}]}}\n"
    )
}

/// The records the kernel would write for `kind`, of this process, tagged with `slot` in
/// cgroup `cgroup_id`: opens of `dir/data/f*` by absolute path (the daemon canonicalises
/// the path; no /proc read), execs of this binary (the daemon reads /proc/PID/exe for each,
/// to tell a script from its interpreter), UDP connects (no path at all).
pub(super) fn synthetic(
    kind: BenchKind,
    dir: &Path,
    slot: u32,
    cgroup_id: u64,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let dir = fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    let time_ns = boottime_ns();
    let header = |kind: u32, i: usize| EventHeader {
        kind,
        agent: slot,
        time_ns: time_ns + i as u64,
        pid: std::process::id(),
        tgid: std::process::id(),
        // SAFETY: getppid has no preconditions.
        ppid: u32::try_from(unsafe { libc::getppid() }).unwrap_or(0),
        flags: 0,
        cgroup_id,
        comm: comm(b"capacity"),
    };
    match kind {
        BenchKind::File => (0..FILES)
            .map(|i| {
                let path = dir.join(format!("data/f{i}"));
                let meta = fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
                let id = (kernel_dev(meta.dev()), meta.ino());
                file_open(header(kind::FILE, i), &path, id)
            })
            .collect(),
        BenchKind::Exec => {
            let exe = fs::canonicalize(std::env::current_exe()?)?;
            (0..FILES)
                .map(|i| exec(header(kind::EXEC, i), &exe, &["agent-monitor", "--version"]))
                .collect()
        }
        BenchKind::Net => Ok((0..FILES)
            .map(|i| connect_v4(header(kind::NET, i), [127, 0, 0, 1], PORT))
            .collect()),
    }
}

/// A successful open of `path` for reading, relative to nothing (absolute), that returned
/// descriptor 3 to file `opened` (device in the kernel's encoding, inode).
fn file_open(header: EventHeader, path: &Path, opened: (u32, u64)) -> anyhow::Result<Vec<u8>> {
    // SAFETY: all-zero is a valid FileEvent (integers and byte arrays).
    let mut e: FileEvent = unsafe { zeroed() };
    e.header = header;
    e.op = file_op::OPEN;
    e.open_flags = OPEN_FLAGS;
    e.dirfd = AT_FDCWD;
    e.ret = 3;
    (e.file_dev, e.file_ino) = opened;
    copy_nul(&mut e.path, path.as_os_str().as_bytes())?;
    // Without `path2`, as the kernel sends every file event but a rename's.
    Ok(bytes_of(&e)[..FILE_EVENT_ONE_PATH].to_vec())
}

fn exec(header: EventHeader, image: &Path, argv: &[&str]) -> anyhow::Result<Vec<u8>> {
    // SAFETY: all-zero is a valid ExecEvent.
    let mut e: ExecEvent = unsafe { zeroed() };
    e.header = header;
    copy_nul(&mut e.filename, image.as_os_str().as_bytes())?;
    for (slot, arg) in e.args.iter_mut().zip(argv) {
        copy_nul(slot, arg.as_bytes())?;
    }
    e.argc = u32::try_from(argv.len().min(MAX_ARGS))?;
    Ok(bytes_of(&e))
}

fn connect_v4(header: EventHeader, addr: [u8; 4], port: u16) -> Vec<u8> {
    // SAFETY: all-zero is a valid NetEvent.
    let mut e: NetEvent = unsafe { zeroed() };
    e.header = header;
    e.op = net_op::CONNECT;
    e.family = AF_INET;
    e.protocol = IPPROTO_UDP;
    e.port = port;
    e.addr[..4].copy_from_slice(&addr);
    e.allowed = 1;
    bytes_of(&e)
}

/// The record's bytes. The wire structs have explicit padding fields only, so every byte
/// is initialised (zeroed, then written).
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: `v` is a live value of `size_of::<T>()` initialised bytes (see above).
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

/// `src` and a NUL into `dst`; a name that does not fit is refused, not cut (a cut one
/// would be flagged `TRUNCATED` by the kernel, another record).
fn copy_nul(dst: &mut [u8], src: &[u8]) -> anyhow::Result<()> {
    if src.len() >= dst.len() {
        bail!(
            "{:?} does not fit the record's {} bytes",
            String::from_utf8_lossy(src),
            dst.len()
        );
    }
    dst[..src.len()].copy_from_slice(src);
    Ok(())
}

fn comm(name: &[u8]) -> [u8; COMM_LEN] {
    let mut c = [0; COMM_LEN];
    let n = name.len().min(COMM_LEN - 1);
    c[..n].copy_from_slice(&name[..n]);
    c
}

/// `CLOCK_BOOTTIME` in ns, the kernel's event time base.
fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

const _: () = assert!(PATH_LEN > 64 && ARG_LEN > 16);

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        path::PathBuf,
    };

    use super::*;
    use crate::{
        kernel::decoder::{Event, FileOp, NetOp, decode},
        policy::{Activity, Context, FileAccess, NetOp as PolicyNetOp, Protocol, Verdict},
        scope::{ScopeSource, parse_str},
    };

    fn scratch() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("data")).expect("mkdir");
        for i in 0..FILES {
            fs::write(dir.path().join(format!("data/f{i}")), "x").expect("write");
        }
        dir
    }

    #[test]
    fn synthetic_records_decode_to_the_intended_events() {
        let dir = scratch();
        let root = fs::canonicalize(dir.path()).expect("canonicalize");
        let pid = std::process::id();
        let check_header = |h: &crate::kernel::decoder::Header| {
            assert_eq!((h.agent, h.cgroup_id, h.tgid, h.pid), (5, 77, pid, pid));
            assert_eq!(h.comm, "capacity");
            assert!(!h.truncated && !h.path_fault);
            assert_eq!(h.kernel, crate::kernel::decoder::KernelDid::default());
        };
        let files = synthetic(BenchKind::File, dir.path(), 5, 77).expect("file events");
        assert_eq!(files.len(), FILES);
        for (i, record) in files.iter().enumerate() {
            assert_eq!(record.len(), FILE_EVENT_ONE_PATH);
            let Ok(Event::File {
                header,
                op,
                path,
                dirfd,
                ret,
                opened,
                ..
            }) = decode(record)
            else {
                panic!("not a file event");
            };
            check_header(&header);
            assert_eq!(
                op,
                FileOp::Open {
                    flags: OPEN_FLAGS,
                    in_root: false
                }
            );
            assert_eq!(path, root.join(format!("data/f{i}")));
            assert_eq!((dirfd, ret), (AT_FDCWD, 3));
            let meta = fs::metadata(&path).expect("stat");
            assert_eq!(opened, Some((kernel_dev(meta.dev()), meta.ino())));
        }
        let nets = synthetic(BenchKind::Net, dir.path(), 5, 77).expect("net events");
        let Ok(Event::Net {
            header,
            op,
            addr,
            port,
            protocol,
            host_rule,
        }) = decode(&nets[0])
        else {
            panic!("not a net event");
        };
        check_header(&header);
        assert_eq!(op, NetOp::Connect);
        assert_eq!(addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!((port, protocol, host_rule), (PORT, 17, 0));
        let execs = synthetic(BenchKind::Exec, dir.path(), 5, 77).expect("exec events");
        let Ok(Event::Exec {
            header,
            filename,
            argv,
        }) = decode(&execs[0])
        else {
            panic!("not an exec event");
        };
        check_header(&header);
        let exe = fs::canonicalize(std::env::current_exe().expect("exe")).expect("exe");
        assert_eq!(filename, exe);
        assert_eq!(argv, ["agent-monitor", "--version"]);
    }

    #[test]
    fn the_scope_allows_every_synthetic_event() {
        let dir = PathBuf::from("/srv/capacity");
        let exe = PathBuf::from("/opt/bin/agent-monitor");
        let mut scopes =
            parse_str(&scope_yaml(&dir, &exe), ScopeSource::Inline).expect("the scope parses");
        let scope = scopes.pop().expect("one scope");
        assert_eq!(scope.name, SCOPE);
        assert_eq!(scope.mode, crate::scope::Mode::Audit);
        let ctx = Context { tgid: 1 };
        let allowed = |a: &Activity<'_>| matches!(scope.policy.evaluate(a, ctx), Verdict::Allowed);
        assert!(allowed(&Activity::File {
            path: "/srv/capacity/data/f7",
            access: FileAccess::Read,
        }));
        assert!(allowed(&Activity::Exec {
            path: "/opt/bin/agent-monitor"
        }));
        assert!(allowed(&Activity::Net {
            op: PolicyNetOp::Connect,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: PORT,
            protocol: Protocol::Udp,
        }));
        // And it judges at all: what it does not list is a violation.
        assert!(!allowed(&Activity::File {
            path: "/srv/capacity/other",
            access: FileAccess::Read,
        }));
        assert!(!allowed(&Activity::Net {
            op: PolicyNetOp::Connect,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: PORT + 1,
            protocol: Protocol::Udp,
        }));
    }
}
