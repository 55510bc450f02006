//! Small helpers around processes, /proc, cgroups and the daemon's status socket.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// The cgroup2 mount point, from /proc/mounts.
pub fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .context("cgroup2 is not mounted")
}

/// `CLOSE_RANGE_CLOEXEC` (`include/uapi/linux/close_range.h`).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Before exec: pin to `cpu` (when given), move into `cgroup` (when given), and close what
/// this process inherited beyond stdio at the exec. A process forked while its parent holds
/// a descriptor above 63 gets a descriptor table of its own (`fdtable`) instead of the one
/// inside `files_struct`, and the monitor's kernel programs read a file through the latter
/// with direct loads, through the former with slower helper calls: the generator and the
/// agents it measures start as an agent launched by a process with a few descriptors
/// would, whatever descriptors the shell that started the bench left open.
pub fn place(cmd: &mut Command, cpu: Option<usize>, cgroup: Option<&Path>) -> anyhow::Result<()> {
    let procs = cgroup
        .map(|c| std::ffi::CString::new(c.join("cgroup.procs").to_string_lossy().as_bytes()))
        .transpose()
        .context("cgroup path with NUL")?;
    // SAFETY: only async-signal-safe calls (sched_setaffinity, open, write, close) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`: closed at the exec, so that what
            // the new program forks gets the small table. Older kernels: left as it is.
            let _ = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

pub fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signalling our own child, by its pid.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Sends `sig`, waits up to `grace` for the child to exit, then SIGKILLs it.
pub fn stop_child(child: &mut Child, sig: libc::c_int, grace: Duration) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    signal(child, sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// `RssAnon`, `RssFile` and `RssShmem` of a process in KiB.
pub fn rss_parts(pid: u32) -> anyhow::Result<[u64; 3]> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok([get("RssAnon:"), get("RssFile:"), get("RssShmem:")])
}

/// Rss of a process's mappings of eBPF objects (ring buffer, mmapped maps) in KiB, from
/// /proc/PID/smaps (they count as file pages in `VmRSS`).
pub fn bpf_rss_kib(pid: u32) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_bpf = false;
    let mut total = 0;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_bpf = l.contains("anon_inode:bpf");
        } else if in_bpf && let Some(v) = l.strip_prefix("Rss:") {
            total += v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(") ").context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    #[expect(clippy::cast_precision_loss, reason = "tick counts are small")]
    Ok(ticks as f64 / hz as f64)
}

/// One HTTP/1.1 GET over a Unix socket: the status code and the whole body. At most 10 s.
pub fn http_get(socket: &Path, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(socket, "GET", path, None)
}

/// One HTTP/1.1 request (`body`: JSON) on a fresh connection to the daemon's socket: the
/// end-to-end tests' client. The status code and the whole body; at most 10 s.
pub fn http_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    agent_monitor_e2e::http::request(socket, method, path, body, Duration::from_secs(10))
        .map_err(anyhow::Error::msg)
}

pub fn get_json(socket: &Path, path: &str) -> anyhow::Result<Value> {
    let (code, body) = http_get(socket, path)?;
    if code != 200 {
        bail!("GET {path}: HTTP {code}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

/// Kills everything in a cgroup tree and removes it, deepest first.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let mut dirs = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = fs::read_dir(&dirs[i]) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && fs::read_to_string(d.join("cgroup.events"))
                .unwrap_or_default()
                .lines()
                .any(|l| l == "populated 1")
        {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = fs::remove_dir(d);
    }
}

/// Removes a pinned-state directory (links detach once unpinned).
pub fn remove_pins(dir: &Path) {
    for sub in ["links", "maps"] {
        if let Ok(entries) = fs::read_dir(dir.join(sub)) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let _ = fs::remove_dir(dir.join(sub));
    }
    let _ = fs::remove_dir(dir);
}

/// Runs a command to completion and returns its stdout, failing with its stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8(out.stdout).context("output is not UTF-8")
}

/// The last line of `text` that parses as a JSON object.
pub fn last_json(text: &str) -> anyhow::Result<Value> {
    text.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(Value::is_object)
        })
        .with_context(|| format!("no JSON object in output: {text}"))
}
