//! Harness for the end-to-end tests: a real daemon (the built `agent-monitor` binary, path in
//! `AGENT_MONITOR_BIN`) with its own scopes, socket, audit log and task cgroup parent, torn
//! down on drop even when the test fails.

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod expect;
pub mod fake_api;
pub mod http;
pub mod memfs;

pub use expect::Expected;

/// How long a test waits for something the daemon does asynchronously.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// These tests load eBPF programs and create cgroups: not root is a failure, never a skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests must run as root (cargo xtask test does)"
    );
}

pub fn binary() -> PathBuf {
    let bin = std::env::var_os("AGENT_MONITOR_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/agent-monitor"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "agent-monitor binary not found at {} (run `cargo xtask test`)",
        bin.display()
    );
    bin
}

/// The cgroup2 mount point, from /proc/mounts.
pub fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("cgroup2 is mounted")
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Daemon {
    child: Option<Child>,
    /// The arguments of `agent-monitor run`, for restarts.
    args: Vec<std::ffi::OsString>,
    /// bpffs directory of this daemon's pinned state.
    pub pins: PathBuf,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub audit: PathBuf,
    pub scopes: PathBuf,
    pub cgroup_parent: String,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts a daemon on the given scope files (name, YAML) and waits until it answers.
    pub fn start(scopes: &[(&str, &str)]) -> Self {
        Self::start_with(scopes, &[])
    }

    /// As `start`, with extra `agent-monitor run` arguments.
    pub fn start_with(scopes: &[(&str, &str)], extra: &[&str]) -> Self {
        Self::start_with_env(scopes, extra, &[])
    }

    /// As `start_with`, with environment variables for the daemon.
    pub fn start_with_env(scopes: &[(&str, &str)], extra: &[&str], env: &[(&str, &str)]) -> Self {
        require_root();
        remove_stale_state();
        let dir = tempfile::tempdir().expect("tempdir");
        let scopes_dir = dir.path().join("scopes");
        fs::create_dir(&scopes_dir).expect("mkdir scopes");
        for (name, yaml) in scopes {
            fs::write(scopes_dir.join(name), yaml).expect("write scope");
        }
        let socket = dir.path().join("am.sock");
        // `--audit-log PATH` among `extra` puts the audit log there (a test's own filesystem).
        let audit = extra
            .iter()
            .position(|a| *a == "--audit-log")
            .and_then(|i| extra.get(i + 1))
            .map_or_else(|| dir.path().join("audit.jsonl"), PathBuf::from);
        let log = dir.path().join("daemon.log");
        let cgroup_parent = unique("am-e2e");
        let pins = PathBuf::from("/sys/fs/bpf").join(&cgroup_parent);
        let mut args: Vec<std::ffi::OsString> =
            vec!["run".into(), "--scopes".into(), scopes_dir.clone().into()];
        for (flag, value) in [
            ("--socket", &socket),
            ("--audit-log", &audit),
            ("--pin-path", &pins),
        ] {
            args.push(flag.into());
            args.push(value.clone().into());
        }
        args.extend(["--cgroup-parent", &cgroup_parent, "--quiet"].map(Into::into));
        let mut rest = extra.iter();
        while let Some(a) = rest.next() {
            if *a == "--audit-log" {
                rest.next();
            } else {
                args.push(a.into());
            }
        }
        // Tests leave nothing behind unless they say otherwise (restart tests do).
        if !extra.contains(&"--keep-pins") {
            args.push("--release-on-exit".into());
        }
        args.retain(|a| a != "--keep-pins");
        let mut d = Self {
            child: None,
            args,
            pins,
            dir,
            socket,
            audit,
            scopes: scopes_dir,
            cgroup_parent,
            log,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        };
        d.spawn();
        d.wait_ready();
        d
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(binary())
            .args(&self.args)
            .env("AGENT_MONITOR_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent-monitor run");
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        let d = self;
        let (_, status) = wait_for("the daemon to answer on its socket", || {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("daemon exited early ({status}):\n{}", d.log());
            }
            d.try_request("GET", "/v1/status", None)
                .filter(|(code, _)| *code == 200)
        });
        // Every hook attaches on the test machines: one that does not (a program the
        // verifier or the attach refuses) is a regression, not a coverage note.
        let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        assert_eq!(
            status["coverage"]["failed"],
            serde_json::json!([]),
            "hooks failed to attach:\n{}",
            d.log()
        );
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// Starts the daemon again with the same scopes, socket, audit log and pins, with
    /// `--release-on-exit` (so the test still leaves nothing behind).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the daemon first");
        if !self.args.iter().any(|a| a == "--release-on-exit") {
            self.args.push("--release-on-exit".into());
        }
        self.spawn();
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// One HTTP/1.1 request over the Unix socket ([`http::request`]); None when the socket
    /// does not answer within `DEADLINE`.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Option<(u16, String)> {
        http::request(&self.socket, method, path, body, DEADLINE).ok()
    }

    /// `GET path` as a stream read line by line (`/v1/events?follow=1`); fails the test
    /// when the daemon sends no response head.
    pub fn follow(&self, path: &str) -> http::Stream {
        http::Stream::get(&self.socket, path, DEADLINE)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request(method, path, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer\n{}", self.log()))
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.request("GET", path, None);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// Creates a task directly through the API; returns (task id, absolute cgroup dir).
    pub fn create_task(&self, scope: &str) -> (String, PathBuf) {
        let (code, body) = self.request(
            "POST",
            "/v1/tasks",
            Some(&format!(r#"{{"scope":"{scope}"}}"#)),
        );
        assert_eq!(code, 201, "POST /v1/tasks: {body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        (
            v["task"].as_str().expect("task").to_string(),
            PathBuf::from(v["cgroup_dir"].as_str().expect("dir")),
        )
    }

    /// `agent-monitor exec --scope SCOPE [extra] -- CMD...`, run to completion.
    pub fn exec(&self, scope: &str, extra: &[&str], cmd: &[&str]) -> Output {
        exec_client()
            .arg("exec")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--scope", scope])
            .args(extra)
            .arg("--")
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run agent-monitor exec")
    }

    /// Every complete line of the audit log, parsed. A last line without its newline is a
    /// batch the daemon is still writing: it is left for the next read.
    pub fn records(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.audit).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits until a record matching `pred` is in the audit log and returns it.
    pub fn wait_record(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            if Instant::now() >= deadline {
                let all: Vec<String> = self.records().iter().map(Value::to_string).collect();
                panic!(
                    "no record for {what}; records:\n{}\ndaemon log:\n{}",
                    all.join("\n"),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("daemon ignored SIGTERM:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn cgroup_parent_dir(&self) -> PathBuf {
        cgroup2_root().join(&self.cgroup_parent)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop()));
        }
        if thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
        // Belt and braces: the daemon removes its cgroups and pins; if it could not, do it.
        remove_cgroup_tree(&self.cgroup_parent_dir());
        remove_pins(&self.pins);
    }
}

/// Stops a daemon a test started itself (SIGTERM, then SIGKILL after `DEADLINE`), prints
/// its log when the test is failing, and removes the cgroups and pins it may have left:
/// the end of every hand-made launcher (tests that need arguments `Daemon` does not take).
pub fn stop_daemon(
    child: Option<std::process::Child>,
    log: impl FnOnce() -> String,
    cgroup_parent: &str,
    pins: &Path,
) {
    if let Some(mut child) = child {
        #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + DEADLINE;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    if thread::panicking() {
        eprintln!("--- daemon log ---\n{}", log());
    }
    remove_cgroup_tree(&cgroup2_root().join(cgroup_parent));
    remove_pins(pins);
}

/// Pins and cgroups a killed test run left behind (its Drop never ran): hooks of a dead
/// daemon would stay attached at the cgroup2 root and weigh on every later run. Only
/// `am-e2e-<pid>-*` names whose test process is gone are touched.
fn remove_stale_state() {
    for entry in fs::read_dir("/sys/fs/bpf").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("am-e2e-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_pins(&entry.path());
        remove_cgroup_tree(&cgroup2_root().join(&name));
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
        let _ = wait_for_empty(d);
        let _ = fs::remove_dir(d);
    }
}

fn wait_for_empty(dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let events = fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if !events.lines().any(|l| l == "populated 1") {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A command that moves itself into `cgroup_dir` before exec (an untagged launcher placing a
/// process straight into a cgroup, as a container runtime would).
pub fn command_in_cgroup(cgroup_dir: &Path, program: &str, args: &[&str]) -> Command {
    let procs =
        std::ffi::CString::new(cgroup_dir.join("cgroup.procs").to_string_lossy().as_bytes())
            .expect("no NUL in path");
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// A field of a record as a string ("" when absent).
pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The canonical path of a fresh workspace directory for a test.
pub fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fs::canonicalize(dir.path()).expect("canonicalize");
    (dir, path)
}

/// Asserts a finished command exited with `code`, showing its output otherwise.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `agent-monitor` client, started as an orchestrator would start it: with what the
/// test process inherited beyond stdio closed at its exec (the harness may hold a
/// descriptor above 63). The agent it forks then gets the descriptor table inside its
/// `files_struct`, as most processes have; tests that want a grown table grow it.
fn exec_client() -> Command {
    let mut cmd = Command::new(binary());
    // SAFETY: one async-signal-safe syscall between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`; older kernels: left as they are.
            let _ = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 1u32 << 2);
            Ok(())
        });
    }
    cmd
}

impl Daemon {
    /// `agent-monitor exec` in the background.
    pub fn exec_spawn(&self, scope: &str, cmd: &[&str]) -> Child {
        exec_client()
            .arg("exec")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--scope", scope, "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent-monitor exec")
    }
}

impl Daemon {
    /// A client command (`status`, `agents`, `events`, `report`, ...) against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .expect("run agent-monitor client command")
    }

    /// Sends raw bytes on a fresh connection and returns whatever comes back until the
    /// daemon closes it or `DEADLINE` passes.
    pub fn raw(&self, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        // The daemon may close before reading everything (a refused huge request).
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Runs `curl` on the daemon's socket as another user (uid, gid, no supplementary groups);
/// returns the HTTP status (0: the connection was refused) and the body.
pub fn curl_as(uid: u32, gid: u32, socket: &Path, method: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-X", method, "-w", "\n%{http_code}", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://agent-monitor{path}"))
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    parse_curl(&out)
}

/// curl's output with `-w "\n%{http_code}"`: (status, body).
pub fn parse_curl(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

impl Daemon {
    /// As [`Daemon::start`], with a `--config` file holding `config_yaml` (the flags `start`
    /// passes still win over it). The daemon reads it once, at start.
    pub fn start_with_config(scopes: &[(&str, &str)], config_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.yaml");
        fs::write(&config, config_yaml).expect("write config");
        Self::start_with(scopes, &["--config", config.to_str().expect("utf-8 path")])
    }
}

/// A cgroup tree made by a test under the cgroup2 root, killed and removed on drop (also
/// when the test fails).
pub struct CgroupTree(pub PathBuf);

impl CgroupTree {
    /// `/<prefix>-<pid>-<n>` under the cgroup2 root.
    pub fn new(prefix: &str) -> Self {
        Self(cgroup2_root().join(unique(prefix)))
    }

    /// Creates `rel` (and its parents) below the tree's top; returns its absolute path.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let dir = self.0.join(rel.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        dir
    }

    /// The path of `dir` relative to the cgroup2 root, as the daemon names cgroups.
    pub fn relative(dir: &Path) -> String {
        format!(
            "/{}",
            dir.strip_prefix(cgroup2_root())
                .expect("below the cgroup2 root")
                .display()
        )
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.0);
    }
}

/// The workspace root (for deploy/, examples/ and the tools under target/tools).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `cargo xtask ARGS` (in its own target directory: the test's cargo may hold the
/// lock of the usual one) and returns its output, failing the test when it fails.
pub fn xtask(args: &[&std::ffi::OsStr]) -> Output {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("xtask-from-tests");
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo xtask");
    assert_exit(&out, 0);
    out
}

/// Loopback endpoints for network tests: listeners a scope allows (`*_in`) and does not
/// (`*_out`), and a free TCP port to allow binding.
pub struct Ports {
    pub tcp_in: std::net::TcpListener,
    pub tcp_out: std::net::TcpListener,
    pub udp_in: std::net::UdpSocket,
    pub udp_out: std::net::UdpSocket,
    pub bind_port: u16,
}

impl Ports {
    pub fn new() -> Self {
        let tcp = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let udp = || std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        Self {
            tcp_in: tcp(),
            tcp_out: tcp(),
            udp_in: udp(),
            udp_out: udp(),
            bind_port: tcp().local_addr().expect("addr").port(),
        }
    }

    pub fn tcp_in_port(&self) -> u16 {
        self.tcp_in.local_addr().expect("addr").port()
    }

    pub fn udp_in_port(&self) -> u16 {
        self.udp_in.local_addr().expect("addr").port()
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves one fixed page until dropped (a blocking accept loop, woken on drop): the
/// allowed local HTTP server of in-scope sessions.
pub struct HttpServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// On a fresh 127.0.0.1 port.
    pub fn start(page: &'static str) -> Self {
        Self::on(
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the HTTP server"),
            page,
        )
    }

    /// On `listener`.
    pub fn on(listener: std::net::TcpListener, page: &'static str) -> Self {
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 2048];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port())
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits for `child` at most `limit`; kills and reaps it past that. Returns its status and
/// whether it had to be killed (it hung).
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> (ExitStatus, bool) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return (status, false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return (child.wait().expect("reap the child"), true);
        }
        thread::sleep(Duration::from_millis(20));
    }
}
