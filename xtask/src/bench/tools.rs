//! The peers: auditd and bpftrace from Debian's packages, installed when missing, each
//! running only for its own measurement and undone afterwards.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::sys;

/// Installs auditd and bpftrace with apt-get when either is missing (one `apt-get update`).
/// Returns why a tool is unavailable, per tool.
pub fn ensure_installed() -> (Result<(), String>, Result<(), String>) {
    let have = |bin: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(bin).is_file())
    };
    if !(have("auditd") && have("auditctl") && have("bpftrace")) {
        eprintln!("bench: installing auditd and bpftrace (apt-get)");
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("apt-get: {e}"))
                .and_then(|s| {
                    s.success()
                        .then_some(())
                        .ok_or(format!("apt-get {args:?}: {s}"))
                })
        };
        if let Err(e) =
            apt(&["update"]).and_then(|()| apt(&["install", "-y", "auditd", "bpftrace"]))
        {
            eprintln!("bench: {e}");
        }
    }
    let check = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{what} is not installed and could not be installed"
            ))
        }
    };
    (
        check(have("auditd") && have("auditctl"), "auditd"),
        check(have("bpftrace"), "bpftrace"),
    )
}

fn auditctl(args: &[&str]) -> anyhow::Result<String> {
    sys::output(Command::new("auditctl").args(args))
}

fn audit_status(key: &str) -> anyhow::Result<u64> {
    let s = auditctl(&["-s"])?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .with_context(|| format!("`auditctl -s` has no {key}: {s}"))
}

/// Once auditd has run, the kernel gives every new task an audit context for the rest of
/// the boot (`audit_ever_enabled`) and every syscall pays for it, with or without rules.
/// A `never,task` rule keeps new tasks out of it, so every configuration but auditd's own is
/// measured as on a host where auditd never ran. Added only when there are no rules (an
/// operator's rules are left alone); removed on drop.
pub struct AuditQuiet {
    added: bool,
}

const NEVER_TASK: [&str; 2] = ["-a", "never,task"];

impl AuditQuiet {
    pub fn start() -> Self {
        let no_rules = auditctl(&["-l"]).is_ok_and(|s| s.trim() == "No rules");
        Self {
            added: no_rules && auditctl(&NEVER_TASK).is_ok(),
        }
    }

    /// Lifts the rule while auditd itself is measured; it is put back when the returned
    /// guard drops (after the `Auditd`, whose own drop deletes every rule).
    pub fn lift(&self) -> AuditQuietLifted {
        if self.added {
            let _ = auditctl(&["-d", "never,task"]);
        }
        AuditQuietLifted {
            restore: self.added,
        }
    }

    /// Whether the rule is in place (for the report).
    pub fn active(&self) -> bool {
        self.added
    }
}

impl Drop for AuditQuiet {
    fn drop(&mut self) {
        if self.added {
            let _ = auditctl(&["-d", "never,task"]);
        }
    }
}

pub struct AuditQuietLifted {
    restore: bool,
}

impl Drop for AuditQuietLifted {
    fn drop(&mut self) {
        if self.restore {
            let _ = auditctl(&NEVER_TASK);
        }
    }
}

/// auditd in the foreground with its own log, and rules for the generator's syscalls.
pub struct Auditd {
    child: Child,
    pub log: PathBuf,
    was_enabled: u64,
    lost_before: u64,
}

impl Auditd {
    /// Starts auditd logging to `dir/audit.log` with rules for openat and connect by
    /// `generator`, and execve of /usr/bin/true (audit's narrowest filters: no cgroup field).
    pub fn start(dir: &Path, generator: &Path, cpu: Option<usize>) -> anyhow::Result<Self> {
        let running = audit_status("pid")?;
        if running != 0 {
            bail!("an audit daemon is already running (pid {running}); not touching it");
        }
        let was_enabled = audit_status("enabled")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("audit.log");
        let conf = fs::read_to_string("/etc/audit/auditd.conf")
            .context("reading /etc/audit/auditd.conf")?;
        let conf: String = conf
            .lines()
            .map(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                match key {
                    "log_file" => format!("log_file = {}\n", log.display()),
                    "max_log_file_action" => "max_log_file_action = IGNORE\n".to_string(),
                    "space_left_action" | "admin_space_left_action" | "disk_full_action" => {
                        format!("{key} = IGNORE\n")
                    }
                    _ => format!("{l}\n"),
                }
            })
            .collect();
        let conf_path = dir.join("auditd.conf");
        fs::write(&conf_path, conf).context("writing auditd.conf")?;
        fs::set_permissions(&conf_path, fs::Permissions::from_mode(0o640))
            .context("chmod auditd.conf")?;
        let mut cmd = Command::new("auditd");
        sys::place(&mut cmd, cpu, None)?;
        let child = cmd
            .arg("-n")
            .arg("-c")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("auditd.err")).context("auditd.err")?)
            .spawn()
            .context("starting auditd")?;
        let mut a = Self {
            child,
            log,
            was_enabled,
            lost_before: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while audit_status("pid")? != u64::from(a.child.id()) {
            if let Some(s) = a.child.try_wait().context("auditd")? {
                bail!(
                    "auditd exited ({s}): {}",
                    fs::read_to_string(dir.join("auditd.err")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("auditd did not register with the kernel within 10 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let exe = generator.to_string_lossy();
        auditctl(&["-b", "8192"])?;
        auditctl(&[
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "openat",
            "-S",
            "connect",
            "-F",
            &format!("exe={exe}"),
            "-k",
            "ambench",
        ])?;
        auditctl(&[
            "-a",
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "execve",
            "-F",
            "exe=/usr/bin/true",
            "-k",
            "ambench",
        ])?;
        auditctl(&["-e", "1"])?;
        a.lost_before = audit_status("lost")?;
        Ok(a)
    }

    /// Events the kernel's audit subsystem lost since the start.
    pub fn lost(&self) -> u64 {
        audit_status("lost").map_or(0, |l| l.saturating_sub(self.lost_before))
    }

    /// (openat PATH records for `file`, connect records, execve records with ppid `ppid`),
    /// once the log stops growing.
    pub fn count(&self, file: &Path, ppid: u32) -> (u64, u64, u64) {
        let mut last_len = 0;
        let mut still = Instant::now();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let len = fs::metadata(&self.log).map_or(0, |m| m.len());
            if len != last_len {
                last_len = len;
                still = Instant::now();
            } else if still.elapsed() > Duration::from_millis(500) {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let name = format!("name=\"{}\"", file.display());
        let ppid = format!(" ppid={ppid} ");
        let (mut open, mut conn, mut exec) = (0, 0, 0);
        for l in text.lines() {
            if l.starts_with("type=PATH ") && l.contains(&name) {
                open += 1;
            } else if l.starts_with("type=SYSCALL ") && l.contains("key=\"ambench\"") {
                if l.contains(" syscall=42 ") {
                    conn += 1;
                } else if l.contains(" syscall=59 ") && l.contains(&ppid) {
                    exec += 1;
                }
            }
        }
        (open, conn, exec)
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let _ = auditctl(&["-D"]);
        let _ = auditctl(&["-e", &self.was_enabled.to_string()]);
        sys::stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(10));
    }
}

/// bpftrace with a tracepoint script filtered on one cgroup id, printing one line per event.
pub struct Bpftrace {
    child: Child,
    pub out: PathBuf,
    err: PathBuf,
}

impl Bpftrace {
    pub fn start(dir: &Path, cgroup_id: u64, cpu: Option<usize>) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let out = dir.join("bpftrace.out");
        let err = dir.join("bpftrace.err");
        let _ = fs::remove_file(&out);
        let script = format!(
            r#"tracepoint:syscalls:sys_enter_openat /cgroup == {cgroup_id}/ {{ printf("openat %d %s\n", pid, str(args->filename)); }}
tracepoint:syscalls:sys_enter_connect /cgroup == {cgroup_id}/ {{ printf("connect %d\n", pid); }}
tracepoint:syscalls:sys_enter_execve /cgroup == {cgroup_id}/ {{ printf("execve %d %s\n", pid, str(args->filename)); }}
"#
        );
        let mut cmd = Command::new("bpftrace");
        sys::place(&mut cmd, cpu, None)?;
        let child = cmd
            .arg("-o")
            .arg(&out)
            .arg("-e")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).context("bpftrace.err")?)
            .spawn()
            .context("starting bpftrace")?;
        let mut b = Self { child, out, err };
        // Output to a file is fully buffered (as bpftrace does by default): readiness comes
        // from "Attaching N probes...", printed (to the -o file) just before it attaches.
        let deadline = Instant::now() + Duration::from_mins(1);
        let attaching = |p: &Path| fs::read_to_string(p).is_ok_and(|t| t.contains("Attaching"));
        while !(attaching(&b.out) || attaching(&b.err)) {
            if let Some(s) = b.child.try_wait().context("bpftrace")? {
                bail!(
                    "bpftrace exited ({s}): {}",
                    fs::read_to_string(&b.err).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("bpftrace did not attach within 60 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(500));
        if let Some(s) = b.child.try_wait().context("bpftrace")? {
            bail!(
                "bpftrace exited ({s}): {}",
                fs::read_to_string(&b.err).unwrap_or_default()
            );
        }
        Ok(b)
    }

    /// Stops bpftrace (SIGINT flushes its output) and counts (openat of `file`, connect,
    /// execve of /bin/true, lost).
    pub fn finish(mut self, file: &Path) -> (u64, u64, u64, u64) {
        sys::stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(20));
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        let err = fs::read_to_string(&self.err).unwrap_or_default();
        let file = file.to_string_lossy();
        let (mut open, mut conn, mut exec, mut lost) = (0, 0, 0, 0);
        for l in text.lines().chain(err.lines()) {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["openat", _, p] if *p == file => open += 1,
                ["connect", _] => conn += 1,
                ["execve", _, "/bin/true"] => exec += 1,
                ["Lost", n, "events"] => lost += n.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
        (open, conn, exec, lost)
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        sys::stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(20));
    }
}
