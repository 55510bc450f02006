//! One `agent-monitor run` under test: its own socket, audit log, pins and cgroup parent,
//! stopped with SIGTERM and cleaned up on drop, whatever happened.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::sys;

pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    pub audit: PathBuf,
    log: PathBuf,
    pins: PathBuf,
    cgroup_parent: PathBuf,
    /// From spawn to `GET /v1/status` answering with every hook attached.
    pub attach: Duration,
    /// Hooks that did not attach (empty when all did).
    pub failed_hooks: Vec<String>,
}

/// The daemon's counters that matter here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub emitted: u64,
    pub dropped: u64,
    pub records: u64,
    pub deduplicated: u64,
}

impl Daemon {
    /// Starts a daemon in `dir` (socket, audit log, log) on the scopes in `scopes`, pinned to
    /// `cpu` when given, and waits until its status answers with the hooks attached.
    pub fn start(
        bin: &Path,
        dir: &Path,
        scopes: &Path,
        name: &str,
        cpu: Option<usize>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let socket = dir.join("am.sock");
        let audit = dir.join("audit.jsonl");
        let log = dir.join("daemon.log");
        let pins = PathBuf::from("/sys/fs/bpf").join(name);
        let cgroup_parent = sys::cgroup2_root()?.join(name);
        let _ = fs::remove_file(&socket);
        let _ = fs::remove_file(&audit);
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--scopes")
            .arg(scopes)
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-log")
            .arg(&audit)
            .arg("--pin-path")
            .arg(&pins)
            .args(["--cgroup-parent", name, "--quiet", "--release-on-exit"])
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .args(extra)
            .env("AGENT_MONITOR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?);
        sys::place(&mut cmd, cpu, None)?;
        let started = Instant::now();
        let child = cmd.spawn().context("starting agent-monitor run")?;
        let mut d = Self {
            child,
            socket,
            audit,
            log,
            pins,
            cgroup_parent,
            attach: Duration::ZERO,
            failed_hooks: Vec::new(),
        };
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Some(status) = d.child.try_wait().context("waiting for the daemon")? {
                bail!("the daemon exited early ({status}):\n{}", d.log());
            }
            if let Ok(v) = sys::get_json(&d.socket, "/v1/status") {
                d.attach = started.elapsed();
                d.failed_hooks = v["coverage"]["failed"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|h| h.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let attached = v["coverage"]["attached"].as_u64().unwrap_or(0);
                if attached == 0 {
                    bail!("the daemon answers with no hook attached: {v}");
                }
                return Ok(d);
            }
            if Instant::now() > deadline {
                bail!("the daemon did not answer within 30 s:\n{}", d.log());
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Lines in the audit log now.
    pub fn audit_lines(&self) -> u64 {
        fs::read_to_string(&self.audit).map_or(0, |t| t.lines().count() as u64)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn counters(&self) -> anyhow::Result<Counters> {
        let v = sys::get_json(&self.socket, "/v1/status")?;
        let c = &v["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        Ok(Counters {
            emitted: n("emitted"),
            dropped: n("dropped"),
            records: n("records"),
            deduplicated: n("deduplicated"),
        })
    }

    /// Waits until the daemon has turned every event emitted so far into records: the
    /// counters stop moving for 200 ms (or 30 s pass). Returns the counters and how long
    /// that took.
    pub fn settle(&self) -> anyhow::Result<(Counters, Duration)> {
        let start = Instant::now();
        let mut last = self.counters()?;
        let mut still_since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(25));
            let c = self.counters()?;
            if c.records != last.records || c.emitted != last.emitted {
                last = c;
                still_since = Instant::now();
            } else if still_since.elapsed() >= Duration::from_millis(200) {
                return Ok((c, still_since.duration_since(start)));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Ok((c, start.elapsed()));
            }
        }
    }

    /// Waits (up to 60 s: a detach closes ~100 links, each after RCU grace periods) until the
    /// daemon's syscall hooks are attached (`live`) or not, and returns its `syscall_hooks`
    /// status. A build without on-demand hooks (no such status) keeps them attached: None.
    pub fn wait_syscall_hooks(&self, live: bool) -> anyhow::Result<Option<Value>> {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let v = sys::get_json(&self.socket, "/v1/status")?;
            let hooks = &v["syscall_hooks"];
            if hooks.is_null() || hooks["on_demand"] != true {
                return Ok(None);
            }
            if hooks["live"] == live {
                return Ok(Some(hooks.clone()));
            }
            if Instant::now() > deadline {
                let agents = sys::get_json(&self.socket, "/v1/agents").unwrap_or_default();
                bail!(
                    "the syscall hooks did not become live={live} within 60 s: {hooks}\nagents: {agents}\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// An agent of `scope` that only sleeps, so that an agent runs (and the syscall hooks
    /// are attached) while it lives; killed on drop.
    pub fn sleeper(&self, bin: &Path, scope: &str) -> anyhow::Result<Sleeper> {
        let child = Command::new(bin)
            .arg("exec")
            .arg("--socket")
            .arg(&self.socket)
            .args(["--scope", scope, "--", "/usr/bin/sleep", "100000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a sleeping agent")?;
        Ok(Sleeper(child))
    }

    /// The audit log's records, parsed, and the log emptied (the daemon appends).
    pub fn take_records(&self) -> anyhow::Result<Vec<Value>> {
        let text = fs::read_to_string(&self.audit).unwrap_or_default();
        fs::write(&self.audit, "").context("truncating the audit log")?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// A sleeping agent (`Daemon::sleeper`).
pub struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        // `exec` waits for its command and forwards SIGTERM to it (a SIGKILL of `exec` would
        // leave the sleep, and its task, running).
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: signals our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !sys::stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(15)) {
            eprintln!("bench: the daemon ignored SIGTERM; killed it");
        }
        sys::remove_cgroup_tree(&self.cgroup_parent);
        sys::remove_pins(&self.pins);
    }
}
