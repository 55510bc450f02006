//! The fixture every evasion case shares: a workspace (the agent's "/workspace") holding a
//! denied secret, a directory outside every files rule, loopback servers in and out of
//! scope, and a daemon enforcing one scope over all of it; plus the runner of the attacker
//! programs and the checks on what they printed and what was recorded.

use std::{
    fmt::Write as _,
    fs,
    io::{ErrorKind, Read as _},
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use agent_monitor_e2e::{DEADLINE, Daemon, Expected, binary, s, unique, wait_or_kill, workspace};
use serde_json::Value;

pub const PY: &str = "/usr/bin/python3";
const PRELUDE: &str = include_str!("cases/prelude.py");
pub const SCOPE: &str = "ev";
/// How long one attack may take, floods included.
const RUN_DEADLINE: Duration = Duration::from_mins(1);

pub struct Env {
    /// The agent's workspace: readable and writable.
    pub ws: PathBuf,
    /// A directory no files rule grants.
    pub outside: PathBuf,
    /// A directory the scope may only read (the origin of the in-scope git clone).
    pub origin: PathBuf,
    /// `ws/secret.txt`, in `files.deny`.
    pub secret: PathBuf,
    pub secret_text: String,
    /// `outside/notes.txt`: neither denied nor readable.
    pub outside_file: PathBuf,
    pub outside_text: String,
    /// A TCP server the scope may connect to (127.0.0.1).
    pub allowed: TcpListener,
    /// A TCP server out of scope, on `[::]` so that every loopback spelling reaches it.
    pub target: TcpListener,
    /// A UDP server out of scope, on `[::]`.
    pub udp_target: UdpSocket,
    /// The one port `network.bind` allows.
    pub bind_port: u16,
    pub daemon: Daemon,
    _dirs: [tempfile::TempDir; 3],
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().expect("addr").port()
}

impl Env {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As `start`, with extra `agent-monitor run` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_full(&[], extra)
    }

    /// As `start`, with more scope files (name, YAML) beside the fixture's, for cases that
    /// run under a scope of their own (`py_as`).
    pub fn start_with_scopes(scopes: &[(&str, &str)]) -> Self {
        Self::start_full(scopes, &[])
    }

    fn start_full(scopes: &[(&str, &str)], extra: &[&str]) -> Self {
        let (g1, ws) = workspace();
        let (g2, outside) = workspace();
        let (g3, origin) = workspace();
        let secret = ws.join("secret.txt");
        let secret_text = format!("TOPSECRET-{}", unique("s"));
        fs::write(&secret, &secret_text).expect("write secret");
        fs::write(ws.join("ok.txt"), "fine\n").expect("write ok.txt");
        let outside_file = outside.join("notes.txt");
        let outside_text = format!("OUTSIDE-{}", unique("o"));
        fs::write(&outside_file, &outside_text).expect("write outside file");
        let allowed = TcpListener::bind("127.0.0.1:0").expect("bind allowed");
        let target = TcpListener::bind("[::]:0").expect("bind target");
        target.set_nonblocking(true).expect("nonblocking");
        let udp_target = UdpSocket::bind("[::]:0").expect("bind udp target");
        udp_target.set_nonblocking(true).expect("nonblocking");
        let bind_port = port_of(&TcpListener::bind("127.0.0.1:0").expect("bind"));
        let yaml = format!(
            r#"apiVersion: agent-monitor.dev/v1
kind: AgentScope
metadata: {{name: {SCOPE}, owner: evasion@example.org}}
spec:
  mode: enforce
  onViolation: kill-process
  exec:
    allow: [/bin/sh, /usr/bin/sh, /usr/bin/python3*, /usr/bin/cat, /usr/bin/git, /usr/lib/git-core/*, /usr/bin/curl]
  files:
    read: ["{ws}/**", "{origin}/**", /usr/share/git-core/**, /etc/ssl/**]
    write: ["{ws}/**"]
    deny: ["{ws}/secret.txt", "**/.env"]
  network:
    connect:
      - {{cidr: 127.0.0.1/32, ports: [{allowed}]}}
    bind: [{bind_port}]
"#,
            ws = ws.display(),
            origin = origin.display(),
            allowed = port_of(&allowed),
        );
        let mut files = vec![("ev.yaml", yaml.as_str())];
        files.extend_from_slice(scopes);
        let daemon = Daemon::start_with(&files, extra);
        Self {
            ws,
            outside,
            origin,
            secret,
            secret_text,
            outside_file,
            outside_text,
            allowed,
            target,
            udp_target,
            bind_port,
            daemon,
            _dirs: [g1, g2, g3],
        }
    }

    /// The rule that denies `secret`: `files.deny[0]: <ws>/secret.txt`.
    pub fn secret_rule(&self) -> String {
        format!("files.deny[0]: {}", p(&self.secret))
    }

    /// The rule that denies every `.env`.
    pub const DOTENV_RULE: &str = "files.deny[1]: **/.env";

    /// The read of the denied secret under the name `path`: the kernel kills the reader
    /// when the open returns (the file's identity is in `FILE_DENY`).
    pub fn secret_read(&self, path: &str) -> Expected {
        Expected::violation("file", "files", self.secret_rule())
            .path(path)
            .access("read")
            .action("killed-process")
            .layer("ebpf")
    }

    /// A read of `path`, which no files rule grants: Landlock refuses it, then
    /// `onViolation: kill-process` kills the reader.
    pub fn landlock_read(path: &str) -> Expected {
        Expected::violation("file", "files", "files.read")
            .path(path)
            .access("read")
            .action("refused")
            .layer("landlock")
            .after("killed-process")
    }

    /// An out-of-scope TCP connect to the target server at `address`, refused by the cgroup
    /// hook.
    pub fn blocked_connect(&self, address: &str) -> Expected {
        Expected::violation("connect", "network", "network.connect")
            .address(address)
            .port(self.target_port())
            .protocol("tcp")
            .action("blocked")
            .layer("cgroup-hook")
    }

    /// A syscall the agent's seccomp filter refused with EPERM.
    pub fn seccomp_refused(syscall: &str) -> Expected {
        Expected::escape_syscall(syscall)
            .result(-1)
            .action("blocked")
            .layer("seccomp")
    }

    pub fn allowed_port(&self) -> u16 {
        port_of(&self.allowed)
    }

    pub fn target_port(&self) -> u16 {
        port_of(&self.target)
    }

    pub fn udp_target_port(&self) -> u16 {
        self.udp_target.local_addr().expect("addr").port()
    }

    /// Runs a Python case (the prelude, then `parts` in order) as a fresh agent task.
    pub fn py(&self, parts: &[&str], args: &[&str]) -> Run {
        self.py_as(SCOPE, parts, args)
    }

    /// As `py`, as a task of `scope` (one passed to `start_with_scopes`).
    pub fn py_as(&self, scope: &str, parts: &[&str], args: &[&str]) -> Run {
        let mut src = String::from(PRELUDE);
        for p in parts {
            src.push('\n');
            src.push_str(p);
        }
        let mut cmd = vec![PY, "-I", "-u", "-c", &src];
        cmd.extend_from_slice(args);
        self.run_as(scope, &cmd)
    }

    /// Runs `cmd` as a fresh agent task of the scope (`agent-monitor exec`). A client that
    /// has not returned after `RUN_DEADLINE` is killed and the run marked `hung`, so that a
    /// stuck daemon fails the case instead of blocking the suite.
    pub fn run(&self, cmd: &[&str]) -> Run {
        self.run_as(SCOPE, cmd)
    }

    /// As `run`, as a task of `scope`.
    pub fn run_as(&self, scope: &str, cmd: &[&str]) -> Run {
        let task = unique("ev");
        let mut child = Command::new(binary())
            .arg("exec")
            .arg("--socket")
            .arg(&self.daemon.socket)
            .args(["--scope", scope, "--task", &task, "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run agent-monitor exec");
        let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        };
        let stdout = pipe(child.stdout.take().map(|r| Box::new(r) as _));
        let stderr = pipe(child.stderr.take().map(|r| Box::new(r) as _));
        let (status, hung) = wait_or_kill(&mut child, RUN_DEADLINE);
        let out = Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        Run { out, task, hung }
    }

    /// The records of one task.
    pub fn records(&self, task: &str) -> Vec<Value> {
        self.daemon
            .records()
            .into_iter()
            .filter(|r| s(r, "/agent/task") == task)
            .collect()
    }

    /// The records of a task once no new one has arrived for 300 ms (at most `DEADLINE`):
    /// a failure message shows what the daemon made of the run, not a snapshot of it.
    fn settled_records(&self, task: &str) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        let mut last = self.records(task);
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < Duration::from_millis(300) {
            thread::sleep(Duration::from_millis(50));
            let now = self.records(task);
            if now.len() != last.len() {
                last = now;
                since = Instant::now();
            }
        }
        last
    }

    /// Exit status, output and records of a run, for failure messages.
    pub fn describe(&self, run: &Run) -> String {
        let hung = if run.hung {
            "AGENT-MONITOR EXEC HUNG (killed after the deadline); "
        } else {
            ""
        };
        let mut text = format!(
            "{hung}exit: {:?}\nstdout:\n{}\nstderr:\n{}\nrecords of {}:\n",
            run.out.status,
            run.stdout(),
            String::from_utf8_lossy(&run.out.stderr),
            run.task
        );
        for r in self.settled_records(&run.task) {
            let object = ["file", "net", "exec", "escape", "task"]
                .iter()
                .find_map(|k| r.get(*k).map(|v| format!("{k}={v}")))
                .unwrap_or_default();
            let _ = writeln!(
                text,
                "  {} {} {} {} {} {object} {}",
                s(&r, "/kind"),
                s(&r, "/verdict"),
                s(&r, "/action"),
                s(&r, "/layer"),
                s(&r, "/after"),
                s(&r, "/violation/rule")
            );
        }
        text
    }

    /// Waits for the record `want` of the run's task and returns it. The failure message
    /// shows how each record of the task differs from it.
    pub fn expect(&self, run: &Run, want: &Expected) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(r) = self
                .records(&run.task)
                .into_iter()
                .find(|r| want.matches(r))
            {
                return r;
            }
            if Instant::now() >= deadline {
                let describe = self.describe(run);
                panic!(
                    "no record {want} for task {}\n{describe}how each record differs:\n{}",
                    run.task,
                    want.explain(&self.records(&run.task))
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the run's task has no violation record once its records have settled.
    pub fn assert_no_violation(&self, run: &Run) {
        let violations: Vec<Value> = self
            .settled_records(&run.task)
            .into_iter()
            .filter(|r| s(r, "/verdict") == "violation")
            .collect();
        assert!(
            violations.is_empty(),
            "unexpected violation records: {violations:?}\n{}",
            self.describe(run)
        );
    }

    /// Asserts the run leaked none of `needles` on its stdout or stderr.
    pub fn assert_no_leak(&self, run: &Run, needles: &[&str]) {
        let all = format!(
            "{}{}",
            run.stdout(),
            String::from_utf8_lossy(&run.out.stderr)
        );
        for n in needles {
            assert!(
                !all.contains(n),
                "the agent obtained `{n}`\n{}",
                self.describe(run)
            );
        }
    }

    /// Asserts the attempt `label` was made and stopped: refused (EPERM, EACCES, EXDEV), a
    /// child of it killed, or the agent killed (137) before it reported success.
    pub fn assert_stopped(&self, run: &Run, label: &str) {
        let out = run.stdout();
        let has = |what: &str| out.lines().any(|l| l == format!("{label}: {what}"));
        assert!(
            has("TRY"),
            "the attempt `{label}` was never made\n{}",
            self.describe(run)
        );
        let done = out
            .lines()
            .any(|l| l.starts_with(&format!("{label}: DONE")));
        // EPERM: seccomp or a cgroup hook; EACCES or EXDEV: Landlock.
        let refused = ["1", "13", "18"]
            .iter()
            .any(|e| has(&format!("BLOCKED errno={e}")));
        let stopped = refused || has("KILLED") || (run.killed() && !done);
        assert!(
            stopped,
            "`{label}` was not stopped (want EPERM, EACCES, EXDEV or a kill before success)\n{}",
            self.describe(run)
        );
    }

    /// Asserts the attempt `label` was made and refused with one of `errnos` (not merely
    /// killed afterwards); returns the errno it got.
    pub fn assert_blocked(&self, run: &Run, label: &str, errnos: &[i32]) -> i32 {
        let out = run.stdout();
        assert!(
            out.lines().any(|l| l == format!("{label}: TRY")),
            "the attempt `{label}` was never made\n{}",
            self.describe(run)
        );
        let got = out.lines().find_map(|l| {
            l.strip_prefix(&format!("{label}: BLOCKED errno="))?
                .parse::<i32>()
                .ok()
                .filter(|e| errnos.contains(e))
        });
        got.unwrap_or_else(|| {
            panic!(
                "`{label}` was not refused with errno {errnos:?}\n{}",
                self.describe(run)
            )
        })
    }

    /// Asserts the attempt `label` was refused with EPERM (not merely killed afterwards).
    /// The target server got no byte of what `technique` tried to send.
    pub fn assert_nothing_received(&self, technique: &str, got: &[u8], run: &Run) {
        assert!(
            got.is_empty(),
            "{technique}: the target received {:?}\n{}",
            String::from_utf8_lossy(got),
            self.describe(run)
        );
    }

    pub fn assert_eperm(&self, run: &Run, label: &str) {
        assert!(
            run.stdout()
                .lines()
                .any(|l| l == format!("{label}: BLOCKED errno=1")),
            "`{label}` did not fail with EPERM\n{}",
            self.describe(run)
        );
    }

    /// Bytes the out-of-scope TCP server received (pending connections included).
    pub fn tcp_received(&self) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            match self.target.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(true).expect("nonblocking");
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return got,
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Bytes the out-of-scope UDP server received.
    pub fn udp_received(&self) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok((n, _)) = self.udp_target.recv_from(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got
    }
}

pub struct Run {
    pub out: Output,
    pub task: String,
    /// `agent-monitor exec` did not return within `RUN_DEADLINE` and was killed.
    pub hung: bool,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    /// `agent-monitor exec` reported the agent killed.
    pub fn killed(&self) -> bool {
        self.out.status.code() == Some(137)
    }
}

/// `path` as a `&str` (every path the tests make is UTF-8).
pub fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Hex of a path's bytes, for cases that take any bytes on their command line.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut h, b| {
        let _ = write!(h, "{b:02x}");
        h
    })
}

/// A helper process outside the agent, killed and reaped on drop.
pub struct Helper(pub std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `check` for every technique, also after one fails, and fails at the end naming
/// each technique that was not stopped (with its message): one run of the suite shows the
/// state of every technique, not only the first failure.
pub fn each<T: Copy + std::fmt::Debug>(techniques: &[T], check: impl Fn(T)) {
    let mut failed = Vec::new();
    for &t in techniques {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(t)));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(ToString::to_string))
                .unwrap_or_default();
            failed.push(format!("--- {t:?}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} techniques failed:\n{}",
        failed.len(),
        techniques.len(),
        failed.join("\n")
    );
}
