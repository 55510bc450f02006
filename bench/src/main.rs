//! Native load generator for `cargo xtask bench`.
//!
//! Every mode prints one JSON object on stdout and exits 0, or prints an error on stderr and
//! exits 1. Raw syscalls through libc, so the numbers are the kernel's and the monitor's cost,
//! not a runtime's:
//!
//! ```text
//! agent-monitor-bench ops      --file PATH --port P --iters N --exec-iters M
//! agent-monitor-bench load     --file PATH --rate R --secs S [--kind openat|fchdir|udp]
//!                              [--port P]
//!                              (R = 0: as fast as possible; fchdir: FILE is a directory;
//!                              udp: socket+connect+close to 127.0.0.1:P, FILE unused)
//! agent-monitor-bench files    --file DIR --count N [--rate R]
//!                              (R: files per second; 0 or absent: as fast as possible)
//! agent-monitor-bench violate  --kind deny|read|connect --file PATH --port P --count K
//!                              [--timeout-ms T] [--gap-ms G]
//! agent-monitor-bench dns      --server ADDR --name NAME --count K [--timeout-ms T]
//! ```
//!
//! `ops` times getpid (the floor), openat+close of an existing file, UDP socket+connect+close
//! to 127.0.0.1:P, and fork+execve of /bin/true, in ns/op. `load` opens and closes the file at
//! a paced rate (one monitored event per call). `violate` forks K children that each commit one
//! violation and reports what happened to them: for `deny` and `read` the time from just before
//! the syscall to the child's death (seen through a pidfd, `CLOCK_MONOTONIC`) and whether the
//! syscall ever returned; for `connect` whether it failed with EPERM and how long it took.
//! `files` opens, reads (up to 4 KiB) and closes N distinct files, `DIR/dXXX/fYYY` for i in
//! 0..N (XXX = i / 1000, YYY = i % 1000, three digits each), once each, and reports the time.
//! `dns` asks ADDR:53 for NAME (type A) K times over UDP, one question at a time, and reports
//! each round trip (send to reply with the same id) and the replies' rcodes.

use std::{
    ffi::{CString, c_int},
    fmt::Write as _,
    process::ExitCode,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agent-monitor-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn run(args: &[String]) -> Result<String> {
    let (mode, rest) = args
        .split_first()
        .ok_or("usage: agent-monitor-bench ops|load|files|violate|dns [options]")?;
    let opts = Opts::parse(rest)?;
    match mode.as_str() {
        "ops" => ops(&opts),
        "load" => load(&opts),
        "files" => files(&opts),
        "violate" => violate(&opts),
        "dns" => dns(&opts),
        other => Err(format!("unknown mode {other:?}")),
    }
}

#[derive(Debug, Default)]
struct Opts {
    file: Option<String>,
    port: u16,
    iters: u64,
    exec_iters: u64,
    rate: u64,
    secs: f64,
    kind: String,
    count: u64,
    timeout_ms: i32,
    gap_ms: u64,
    server: String,
    name: String,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Self {
            iters: 100_000,
            exec_iters: 200,
            secs: 1.0,
            count: 100,
            timeout_ms: 1000,
            gap_ms: 2,
            ..Self::default()
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--file" => o.file = Some(value.clone()),
                "--port" => o.port = value.parse().map_err(|e| bad(&e))?,
                "--iters" => o.iters = value.parse().map_err(|e| bad(&e))?,
                "--exec-iters" => o.exec_iters = value.parse().map_err(|e| bad(&e))?,
                "--rate" => o.rate = value.parse().map_err(|e| bad(&e))?,
                "--secs" => o.secs = value.parse().map_err(|e| bad(&e))?,
                "--kind" => o.kind.clone_from(value),
                "--count" => o.count = value.parse().map_err(|e| bad(&e))?,
                "--timeout-ms" => o.timeout_ms = value.parse().map_err(|e| bad(&e))?,
                "--gap-ms" => o.gap_ms = value.parse().map_err(|e| bad(&e))?,
                "--server" => o.server.clone_from(value),
                "--name" => o.name.clone_from(value),
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        Ok(o)
    }

    fn file(&self) -> Result<CString> {
        let f = self.file.as_deref().ok_or("--file is required")?;
        CString::new(f).map_err(|e| format!("--file: {e}"))
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    #[expect(clippy::cast_sign_loss, reason = "monotonic time is never negative")]
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    ns
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn getpid_once() {
    // SAFETY: getpid has no preconditions; the raw syscall avoids any libc caching.
    unsafe { libc::syscall(libc::SYS_getpid) };
}

fn open_close(path: &CString) -> Result<()> {
    // SAFETY: path is NUL-terminated; the fd is closed right away.
    let fd = unsafe {
        libc::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("openat"));
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// socket + connect(127.0.0.1:port) + close; returns connect's result and errno.
fn udp_connect(port: u16) -> Result<(c_int, c_int)> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket"));
    }
    let addr = loopback(port);
    #[expect(clippy::cast_possible_truncation, reason = "sockaddr_in is 16 bytes")]
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_in of len bytes.
    let r = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
    let e = if r == 0 { 0 } else { errno() };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok((r, e))
}

/// The argv and envp of `/bin/true`, built before fork (no allocation in the child).
struct TrueCmd {
    path: CString,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
}

impl TrueCmd {
    fn new() -> Self {
        let path = CString::from(c"/bin/true");
        let argv = [path.as_ptr(), std::ptr::null()];
        Self {
            path,
            argv,
            envp: [std::ptr::null()],
        }
    }

    fn fork_exec(&self) -> Result<()> {
        // SAFETY: the child only calls execve and _exit (async-signal-safe).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_err("fork"));
        }
        if pid == 0 {
            // SAFETY: path, argv and envp are NUL-terminated and outlive the call.
            unsafe {
                libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                libc::_exit(127);
            }
        }
        let status = wait_pid(pid)?;
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("/bin/true ended with wait status {status:#x}"));
        }
        Ok(())
    }
}

fn wait_pid(pid: libc::pid_t) -> Result<c_int> {
    let mut status = 0;
    loop {
        // SAFETY: pid is our child; status is writable.
        let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        if errno() != libc::EINTR {
            return Err(os_err("waitpid"));
        }
    }
}

/// Runs `f` `warmup` times untimed, then `iters` times timed; returns ns/op.
fn time_op(warmup: u64, iters: u64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let start = now_ns();
    for _ in 0..iters {
        f()?;
    }
    #[expect(clippy::cast_precision_loss, reason = "ns counts fit f64 well enough")]
    let per_op = (now_ns() - start) as f64 / iters.max(1) as f64;
    Ok(per_op)
}

fn ops(o: &Opts) -> Result<String> {
    let file = o.file()?;
    let (iters, exec_iters) = (o.iters.max(1), o.exec_iters.max(1));
    let (warm, exec_warm) = (iters / 10, exec_iters / 10);
    let getpid = time_op(warm, iters, || {
        getpid_once();
        Ok(())
    })?;
    let openat = time_op(warm, iters, || open_close(&file))?;
    let udp = time_op(warm, iters, || match udp_connect(o.port)? {
        (0, _) => Ok(()),
        (_, e) => Err(format!(
            "connect 127.0.0.1:{}: {}",
            o.port,
            std::io::Error::from_raw_os_error(e)
        )),
    })?;
    let cmd = TrueCmd::new();
    let forkexec = time_op(exec_warm, exec_iters, || cmd.fork_exec())?;
    let calls = iters + warm;
    let exec_calls = exec_iters + exec_warm;
    Ok(format!(
        concat!(
            "{{\"getpid\":{{\"ns_per_op\":{:.1},\"calls\":{}}},",
            "\"openat\":{{\"ns_per_op\":{:.1},\"calls\":{}}},",
            "\"udp\":{{\"ns_per_op\":{:.1},\"calls\":{}}},",
            "\"forkexec\":{{\"ns_per_op\":{:.1},\"calls\":{}}}}}"
        ),
        getpid, calls, openat, calls, udp, calls, forkexec, exec_calls
    ))
}

fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(ns / 1_000_000_000).unwrap_or(0),
        tv_nsec: libc::c_long::try_from(ns % 1_000_000_000).unwrap_or(0),
    };
    // SAFETY: ts is valid; an early wake-up (EINTR) only makes pacing catch up.
    unsafe { libc::nanosleep(&raw const ts, std::ptr::null_mut()) };
}

fn load(o: &Opts) -> Result<String> {
    let file = if o.kind == "udp" {
        CString::default()
    } else {
        o.file()?
    };
    // `--kind fchdir`: fchdir to the directory FILE names (a cheaper monitored syscall than
    // openat+close, to find the monitor's ceiling rather than the generator's).
    let dirfd = if o.kind == "fchdir" {
        // SAFETY: file is NUL-terminated; the fd lives until exit.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                file.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(os_err("open directory"));
        }
        Some(fd)
    } else {
        None
    };
    let call = || match dirfd {
        // SAFETY: fd is an open directory.
        Some(fd) if unsafe { libc::fchdir(fd) } != 0 => Err(os_err("fchdir")),
        Some(_) => Ok(()),
        None if o.kind == "udp" => match udp_connect(o.port)? {
            (0, _) => Ok(()),
            (_, e) => Err(format!(
                "connect 127.0.0.1:{}: {}",
                o.port,
                std::io::Error::from_raw_os_error(e)
            )),
        },
        None => open_close(&file),
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a positive duration in ns"
    )]
    let dur = (o.secs.max(0.001) * 1e9) as u64;
    let start = now_ns();
    let mut events: u64 = 0;
    loop {
        let elapsed = now_ns() - start;
        if elapsed >= dur {
            break;
        }
        if o.rate > 0 {
            let due = u64::try_from(u128::from(o.rate) * u128::from(elapsed) / 1_000_000_000)
                .unwrap_or(u64::MAX);
            if events >= due {
                // Ahead of schedule: sleep until the next call is due (at least 20 us).
                let next = (events + 1) * 1_000_000_000 / o.rate;
                sleep_ns(next.saturating_sub(elapsed).max(20_000));
                continue;
            }
        }
        // A small batch between clock reads keeps pacing cheap at high rates.
        for _ in 0..16 {
            call()?;
        }
        events += 16;
    }
    #[expect(clippy::cast_precision_loss, reason = "counts fit f64 well enough")]
    let secs = (now_ns() - start) as f64 / 1e9;
    #[expect(clippy::cast_precision_loss, reason = "counts fit f64 well enough")]
    let rate = events as f64 / secs;
    Ok(format!(
        "{{\"events\":{events},\"secs\":{secs:.4},\"rate\":{rate:.0}}}"
    ))
}

/// `files`: every file of the generated tree once (open, one read, close), timed as a whole.
fn files(o: &Opts) -> Result<String> {
    let dir = o.file.as_deref().ok_or("--file is required")?;
    // Names built before the clock starts: only the syscalls are timed.
    let names = (0..o.count)
        .map(|i| {
            CString::new(format!("{dir}/d{:03}/f{:03}", i / 1000, i % 1000))
                .map_err(|e| format!("--file: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut buf = [0u8; 4096];
    let start = now_ns();
    for (i, name) in names.iter().enumerate() {
        // Paced: file i is due at i / rate seconds.
        if let Some(due) = (i as u64 * 1_000_000_000).checked_div(o.rate) {
            let elapsed = now_ns() - start;
            if due > elapsed {
                sleep_ns(due - elapsed);
            }
        }
        // SAFETY: name is NUL-terminated; buf is writable for its length; fd is closed.
        unsafe {
            let fd = libc::openat(
                libc::AT_FDCWD,
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return Err(os_err(&format!("openat {}", name.to_string_lossy())));
            }
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            if n < 0 {
                return Err(os_err(&format!("read {}", name.to_string_lossy())));
            }
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "ns counts fit f64 well enough")]
    let secs = (now_ns() - start) as f64 / 1e9;
    Ok(format!("{{\"files\":{},\"secs\":{secs:.6}}}", names.len()))
}

/// Shared between a violating child and the parent (`MAP_SHARED`, survives the child's death).
#[repr(C)]
struct Slot {
    before_ns: u64,
    after_ns: u64,
    returned: u64,
    result: i64,
    errno: i64,
}

fn violate(o: &Opts) -> Result<String> {
    let kind = o.kind.as_str();
    if !matches!(kind, "deny" | "read" | "connect") {
        return Err(format!("--kind {kind:?}: expected deny, read or connect"));
    }
    let file = if kind == "connect" {
        CString::default()
    } else {
        o.file()?
    };
    // SAFETY: a fresh anonymous shared mapping of one Slot.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size_of::<Slot>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(os_err("mmap"));
    }
    let slot = mem.cast::<Slot>();
    let (mut killed, mut returned, mut timeouts, mut eperm, mut other_exit) = (0, 0, 0, 0, 0);
    let mut lat = Vec::new();
    for _ in 0..o.count {
        // SAFETY: slot points to our mapping; the child is not running yet.
        unsafe {
            slot.write(Slot {
                before_ns: 0,
                after_ns: 0,
                returned: 0,
                result: 0,
                errno: 0,
            });
        }
        // SAFETY: the child only makes raw syscalls and writes the shared slot.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_err("fork"));
        }
        if pid == 0 {
            child(kind, &file, o.port, slot);
        }
        let outcome = watch_child(pid, o.timeout_ms)?;
        // SAFETY: the child is gone (reaped); the slot is ours to read.
        let s = unsafe { slot.read_volatile() };
        returned += u64::from(s.returned != 0);
        match outcome {
            Outcome::Killed(dead_ns) => {
                killed += 1;
                if kind != "connect" {
                    lat.push(dead_ns.saturating_sub(s.before_ns));
                }
            }
            Outcome::Timeout => timeouts += 1,
            Outcome::Exited => other_exit += 1,
        }
        if kind == "connect" {
            eperm += u64::from(s.result != 0 && s.errno == i64::from(libc::EPERM));
            lat.push(s.after_ns.saturating_sub(s.before_ns));
        }
        sleep_ns(o.gap_ms * 1_000_000);
    }
    let mut out = format!(
        "{{\"kind\":\"{kind}\",\"count\":{},\"killed\":{killed},\"returned\":{returned},\
         \"timeouts\":{timeouts},\"exited\":{other_exit},\"eperm\":{eperm},\"lat_ns\":[",
        o.count
    );
    for (i, l) in lat.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}{l}");
    }
    out.push_str("]}");
    Ok(out)
}

/// The violating child: never returns.
fn child(kind: &str, file: &CString, port: u16, slot: *mut Slot) -> ! {
    // SAFETY: slot is the shared mapping, written by this process only while it runs.
    unsafe {
        (*slot).before_ns = now_ns();
        if kind == "connect" {
            let (r, e) = udp_connect(port).unwrap_or((-1, 0));
            (*slot).after_ns = now_ns();
            (*slot).result = i64::from(r);
            (*slot).errno = i64::from(e);
            (*slot).returned = 1;
            libc::_exit(0);
        }
        let fd = libc::openat(
            libc::AT_FDCWD,
            file.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        // Only reached when the kernel let the syscall return: the marker.
        (*slot).after_ns = now_ns();
        (*slot).result = i64::from(fd);
        (*slot).returned = 1;
        // Wait to be killed (the daemon's path); the parent gives up after its timeout.
        loop {
            libc::pause();
        }
    }
}

enum Outcome {
    /// Died of SIGKILL; `CLOCK_MONOTONIC` when the parent saw it through the pidfd.
    Killed(u64),
    Timeout,
    Exited,
}

fn watch_child(pid: libc::pid_t, timeout_ms: i32) -> Result<Outcome> {
    // SAFETY: pidfd_open on our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = c_int::try_from(pidfd).map_err(|_| os_err("pidfd_open"))?;
    if pidfd < 0 {
        return Err(os_err("pidfd_open"));
    }
    let mut pfd = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = now_ns() + u64::try_from(timeout_ms).unwrap_or(0) * 1_000_000;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_sub(now_ns()) / 1_000_000;
        // SAFETY: pfd is a valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, c_int::try_from(left).unwrap_or(0)) };
        if r > 0 {
            break;
        }
        if r == 0 {
            timed_out = true;
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break;
        }
        if errno() != libc::EINTR {
            return Err(os_err("poll"));
        }
    }
    let dead_ns = now_ns();
    // SAFETY: pidfd is ours.
    unsafe { libc::close(pidfd) };
    let status = wait_pid(pid)?;
    Ok(if timed_out {
        Outcome::Timeout
    } else if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
        Outcome::Killed(dead_ns)
    } else {
        Outcome::Exited
    })
}

/// A standard query for `name`, type A, recursion desired: the fixed bytes of RFC 1035
/// section 4.1 (the generator only builds questions; it reads back the id and rcode).
fn dns_query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(u8::try_from(label.len()).map_err(|_| format!("label {label:?} too long"))?);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

fn dns(o: &Opts) -> Result<String> {
    use std::net::{IpAddr, UdpSocket};
    let server: IpAddr = o
        .server
        .parse()
        .map_err(|e| format!("--server {}: {e}", o.server))?;
    // Not bound explicitly: an explicit bind, even to port 0, is judged against
    // network.bind; the kernel binds the socket on its first send instead.
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket"));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let socket = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(
            u64::try_from(o.timeout_ms.max(1)).unwrap_or(1000),
        )))
        .map_err(|e| e.to_string())?;
    let mut lat = Vec::new();
    let (mut errors, mut noerror) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    for i in 0..o.count {
        #[expect(clippy::cast_possible_truncation, reason = "ids wrap")]
        let id = i as u16;
        let q = dns_query(id, &o.name)?;
        let start = now_ns();
        if socket.send_to(&q, (server, 53)).is_err() {
            errors += 1;
            continue;
        }
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if n >= 12 && buf[..2] == id.to_be_bytes() => {
                    lat.push(now_ns() - start);
                    let rcode = buf[3] & 0x0f;
                    if rcode == 0 {
                        noerror += 1;
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    let mut out = format!(
        "{{\"mode\":\"dns\",\"count\":{},\"noerror\":{noerror},\"errors\":{errors},\"lat_ns\":[",
        o.count
    );
    for (i, l) in lat.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{l}");
    }
    out.push_str("]}");
    Ok(out)
}
