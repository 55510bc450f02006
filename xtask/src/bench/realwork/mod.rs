//! "Real work": the wall time of real workloads (git, Python, tar with gzip) with no monitor,
//! with the daemon up but the workload untagged, and tagged in an `audit` and in an
//! `enforce` scope (`onViolation: kill-agent`) that allows exactly what the workload needs.
//! Every violation record of a tagged run is a false positive and is listed with its path,
//! access and rule.
//!
//! The input (a tree of 300 text files in 30 directories and a Python package of 400
//! modules) is generated once, in a tmpfs of the section's own; every run gets a fresh copy
//! in `ws/run`, made by the bench before the clock starts. Rounds interleave the
//! configurations, as in the rest of the bench. Held operations are counted from the daemon's
//! `GET /metrics` when it has a counter for them, else with bpftrace (`HoldCounter`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Env, Params, daemon::Daemon, report::median, sys};

/// The configurations, in the order each round runs them.
pub const CONFIGS: [&str; 4] = [
    "no monitor",
    "daemon up, untagged",
    "tagged, audit",
    "tagged, enforce (kill-agent)",
];
/// Targets: ratio of the median wall time to "no monitor" (audit, enforce).
pub const TARGETS: [f64; 2] = [1.15, 1.25];

mod input;
mod render;

use input::{scope_name, scope_yaml, workloads, workspace};
pub use render::render;

const DIRS: usize = 30;
const FILES_PER_DIR: usize = 10;
const MODULES: usize = 400;
const FUNCS_PER_MODULE: usize = 40;
/// The vocabulary of the generated text files.
const WORDS: [&str; 16] = [
    "agent", "scope", "kernel", "monitor", "file", "read", "write", "exec", "policy", "record",
    "daemon", "task", "cgroup", "probe", "ring", "verdict",
];

/// One workload: what it runs, what it needs, how its run directory is prepared.
struct Workload {
    name: &'static str,
    /// Run by `sh -c` in `ws/run`.
    script: String,
    /// `exec.allow` (besides `/bin/sh`).
    exec: Vec<String>,
    /// `files.read` (besides the baseline and the run directory, which is writable).
    read: Vec<String>,
    /// `files.list`: directories opened only for their entries (`tar -C DIR` opens DIR).
    list: Vec<String>,
    /// What is copied from `ws/src` into `ws/run` before the clock starts.
    copy: &'static [(&'static str, &'static str)],
    /// A reference, not a workload: no target applies.
    reference: bool,
}

/// The results of one workload over all rounds.
#[derive(Debug, Default)]
pub struct WorkRow {
    pub name: &'static str,
    /// A reference row (the fixed cost of a task), without targets.
    pub reference: bool,
    pub script: String,
    /// Wall seconds per configuration (`CONFIGS` order), one per round (None: failed).
    pub secs: [Vec<Option<f64>>; 4],
    /// User + system seconds of the workload's processes (with `exec` when tagged).
    pub cpu: [Vec<Option<f64>>; 4],
    /// The first failure per configuration, and how many runs failed.
    pub errors: [Option<String>; 4],
    pub failed: [usize; 4],
    /// Audit, enforce: violation records, summed over the runs.
    pub violations: [u64; 2],
    /// Audit, enforce: held operations per run (empty: not counted).
    pub held: [Vec<u64>; 2],
    /// Audit, enforce: records written per run.
    pub records: [Vec<u64>; 2],
    /// Audit, enforce: the daemon's CPU seconds per run (run and drain).
    pub daemon_cpu: [Vec<f64>; 2],
    /// Distinct violation records: (mode, one line) -> count.
    pub findings: BTreeMap<(&'static str, String), u64>,
}

#[derive(Debug, Default)]
pub struct RealWork {
    pub rows: Vec<WorkRow>,
    pub rounds: usize,
    /// Set when the section could not run at all.
    pub error: Option<String>,
    /// Other developers' daemons running at the start (their hooks cost every process).
    pub other_monitors: usize,
    /// Share of the machine's CPU time the hypervisor stole during the section.
    pub steal: Option<f64>,
    /// Where the workspace was: "tmpfs", or "the disk" when mounting one failed.
    pub workspace_fs: Option<&'static str>,
    /// Where held counts come from (None: nowhere, not counted).
    pub held_source: Option<HeldSource>,
    /// Why bpftrace could not count holds, when it was needed and failed.
    pub held_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldSource {
    /// A counter in the daemon's `GET /metrics`.
    Metrics,
    /// bpftrace, counting the SIGCONTs with which the daemon resumes held processes.
    Bpftrace,
}

/// Paths of the scratch workspace.
struct Ws {
    root: PathBuf,
    src: PathBuf,
    home: PathBuf,
    run: PathBuf,
    /// `root` is a tmpfs of our own (unmounted on drop).
    tmpfs: bool,
}

impl Drop for Ws {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.src);
        let _ = fs::remove_dir_all(&self.run);
        if self.tmpfs
            && let Ok(path) = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
        {
            // SAFETY: a NUL-terminated path; MNT_DETACH never blocks.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

pub fn run(env: &Env, params: &Params, out: &mut RealWork) {
    out.rounds = params.work_rounds;
    out.other_monitors = super::count_other_monitors();
    let steal0 = steal_jiffies();
    if let Err(e) = measure(env, params, out) {
        out.error = Some(format!("{e:#}"));
    }
    if let (Some((s0, t0)), Some((s1, t1))) = (steal0, steal_jiffies()) {
        #[expect(clippy::cast_precision_loss, reason = "jiffies")]
        let share = (s1 - s0) as f64 / (t1 - t0).max(1) as f64;
        out.steal = Some(share);
    }
}

fn measure(env: &Env, params: &Params, out: &mut RealWork) -> anyhow::Result<()> {
    for bin in [
        "/usr/bin/git",
        "/usr/bin/python3",
        "/usr/bin/tar",
        "/usr/bin/gzip",
    ] {
        if !Path::new(bin).is_file() {
            bail!("{bin} is missing");
        }
    }
    let ws = workspace(&env.dir)?;
    out.workspace_fs = Some(if ws.tmpfs { "tmpfs" } else { "the disk" });
    let workloads = workloads(&ws)?;
    for w in &workloads {
        for mode in ["audit", "enforce"] {
            let name = scope_name(w.name, mode);
            fs::write(
                env.scopes.join(format!("{name}.yaml")),
                scope_yaml(&name, mode, w, &ws),
            )
            .context("writing a real-work scope")?;
        }
    }
    out.rows = workloads
        .iter()
        .map(|w| WorkRow {
            name: w.name,
            reference: w.reference,
            script: w.script.clone(),
            ..WorkRow::default()
        })
        .collect();
    for round in 0..params.work_rounds {
        eprintln!(
            "bench: real work round {}/{}",
            round + 1,
            params.work_rounds
        );
        for (w, row) in workloads.iter().zip(out.rows.iter_mut()) {
            timed(env, &ws, w, None, row, 0);
        }
        let d = Daemon::start(
            &env.daemon,
            &env.dir.join("daemon-realwork"),
            &env.scopes,
            &env.name,
            env.mon_cpu(),
            &[],
        )?;
        // An agent runs throughout: "untagged" is the cost to the rest of the machine while
        // the syscall hooks are attached (with no agent they are detached).
        let _sleeper = d.sleeper(&env.daemon, super::SLEEPER)?;
        d.wait_syscall_hooks(true)?;
        // Without a held counter in the daemon, count from outside the SIGCONTs that end holds.
        let counter = if held_total(&d).is_some() {
            out.held_source = Some(HeldSource::Metrics);
            None
        } else {
            match HoldCounter::start(&env.dir.join("bpftrace-holds"), d.pid(), env.mon_cpu()) {
                Ok(c) => {
                    out.held_source = Some(HeldSource::Bpftrace);
                    Some(c)
                }
                Err(e) => {
                    out.held_error.get_or_insert(format!("{e:#}"));
                    None
                }
            }
        };
        let held = || held_total(&d).or_else(|| counter.as_ref()?.read());
        for (w, row) in workloads.iter().zip(out.rows.iter_mut()) {
            timed(env, &ws, w, None, row, 1);
            for (i, mode) in ["audit", "enforce"].into_iter().enumerate() {
                if let Err(e) = tagged(env, &ws, w, &d, &held, mode, row, i) {
                    eprintln!("bench: real work {} ({mode}): {e:#}", w.name);
                    row.errors[2 + i].get_or_insert(format!("{e:#}"));
                }
            }
        }
    }
    Ok(())
}

/// One tagged run: the clock, then the records it caused and what the daemon spent on it.
#[expect(clippy::too_many_arguments, reason = "one run's context")]
fn tagged(
    env: &Env,
    ws: &Ws,
    w: &Workload,
    d: &Daemon,
    held: &dyn Fn() -> Option<u64>,
    mode: &'static str,
    row: &mut WorkRow,
    i: usize,
) -> anyhow::Result<()> {
    d.settle()?;
    d.take_records()?;
    let held0 = held();
    let cpu0 = sys::cpu_secs(d.pid())?;
    let scope = scope_name(w.name, mode);
    timed(env, ws, w, Some((d, &scope)), row, 2 + i);
    d.settle()?;
    row.daemon_cpu[i].push(sys::cpu_secs(d.pid())? - cpu0);
    let records = d.take_records()?;
    row.records[i].push(records.len() as u64);
    if let (Some(a), Some(b)) = (held0, held()) {
        row.held[i].push(b.saturating_sub(a));
    }
    for rec in records
        .iter()
        .filter(|r| r["verdict"].as_str() == Some("violation"))
    {
        row.violations[i] += 1;
        *row.findings.entry((mode, describe(rec))).or_insert(0) += 1;
    }
    Ok(())
}

/// Prepares `ws/run`, then runs the workload once (directly, or tagged through
/// `agent-monitor exec`) and keeps its wall time or its failure in column `col`.
fn timed(
    env: &Env,
    ws: &Ws,
    w: &Workload,
    agent: Option<(&Daemon, &str)>,
    row: &mut WorkRow,
    col: usize,
) {
    let result = fresh_run_dir(ws, w).and_then(|()| {
        let mut cmd = match agent {
            None => Command::new("sh"),
            Some((d, scope)) => {
                let mut c = Command::new(&env.daemon);
                c.arg("exec")
                    .arg("--socket")
                    .arg(&d.socket)
                    .args(["--scope", scope, "--", "sh"]);
                c
            }
        };
        cmd.args(["-c", &w.script])
            .current_dir(&ws.run)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &ws.home)
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        sys::place(&mut cmd, env.gen_cpu(), None)?;
        let cpu0 = children_cpu();
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("starting {}", w.name))?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = children_cpu() - cpu0;
        if !out.status.success() {
            bail!(
                "{} ({}): {}",
                w.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((secs, cpu))
    });
    match result {
        Ok((secs, cpu)) => {
            eprintln!(
                "bench: real work {} [{}]: {secs:.3} s, CPU {cpu:.3} s",
                w.name, CONFIGS[col]
            );
            row.secs[col].push(Some(secs));
            row.cpu[col].push(Some(cpu));
        }
        Err(e) => {
            row.secs[col].push(None);
            row.cpu[col].push(None);
            eprintln!("bench: real work {} [{}]: {e:#}", w.name, CONFIGS[col]);
            row.failed[col] += 1;
            row.errors[col].get_or_insert(format!("{e:#}"));
        }
    }
}

/// User + system seconds of this process's children that have been waited for (and of
/// theirs: the whole tree of a workload once it is reaped).
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru);
        ru
    };
    #[expect(clippy::cast_precision_loss, reason = "seconds of CPU time")]
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Jiffies stolen by the hypervisor and in total, over all CPUs, from /proc/stat.
fn steal_jiffies() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    Some((*f.get(7)?, f.iter().take(8).sum()))
}

fn fresh_run_dir(ws: &Ws, w: &Workload) -> anyhow::Result<()> {
    if ws.run.exists() {
        fs::remove_dir_all(&ws.run).with_context(|| format!("removing {}", ws.run.display()))?;
    }
    fs::create_dir_all(&ws.run).with_context(|| format!("creating {}", ws.run.display()))?;
    for (from, to) in w.copy {
        copy_tree(&ws.src.join(from), &ws.run.join(to))?;
    }
    // Every run starts alike: nothing of the copy or of the run before still being written
    // back, and a short rest (the tagged runs wait for the daemon to settle anyway).
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(std::time::Duration::from_millis(100));
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            fs::copy(e.path(), &dest).with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// The sum of every `/metrics` sample whose name mentions held operations, or None when
/// the daemon exposes none.
pub(super) fn held_total(d: &Daemon) -> Option<u64> {
    let (code, body) = sys::http_get(&d.socket, "/metrics").ok()?;
    if code != 200 {
        return None;
    }
    let mut found = false;
    let mut sum = 0.0;
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap_or("");
        if name.contains("held") {
            found = true;
            sum += l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a counter"
    )]
    found.then_some(sum as u64)
}

/// bpftrace on `signal:signal_generate`, counting the SIGCONTs the daemon sends: it sends
/// one to resume each held operation it judged in scope (`Step::Release`), and nothing else.
/// (The holds' SIGSTOPs cannot be counted there: they are raised inside the hook's own BPF
/// program, where no other BPF program runs; and a process resumed before it reached user
/// space never takes its SIGSTOP, so `signal_deliver` undercounts.) Printed every 100 ms.
struct HoldCounter {
    child: std::process::Child,
    out: PathBuf,
}

impl HoldCounter {
    fn start(dir: &Path, daemon_pid: u32, cpu: Option<usize>) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let out = dir.join("holds.out");
        let _ = fs::remove_file(&out);
        let script = format!(
            "tracepoint:signal:signal_generate /args->sig == {} && pid == {daemon_pid}/ \
             {{ @held = count(); }}\ninterval:ms:100 {{ print(@held); }}\n",
            libc::SIGCONT
        );
        let mut cmd = Command::new("bpftrace");
        sys::place(&mut cmd, cpu, None)?;
        let child = cmd
            .args(["-B", "line", "-o"])
            .arg(&out)
            .arg("-e")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace (holds)")?;
        let mut c = Self { child, out };
        let deadline = Instant::now() + std::time::Duration::from_mins(1);
        while c.read().is_none() {
            if let Some(status) = c.child.try_wait().context("bpftrace")? {
                bail!("bpftrace (holds) exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("bpftrace (holds) printed no count within 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(c)
    }

    /// The last count printed (at most 100 ms old).
    fn read(&self) -> Option<u64> {
        let text = fs::read_to_string(&self.out).ok()?;
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("@held: ")?.trim().parse().ok())
    }
}

impl Drop for HoldCounter {
    fn drop(&mut self) {
        sys::stop_child(
            &mut self.child,
            libc::SIGINT,
            std::time::Duration::from_secs(10),
        );
    }
}

/// One line for a violation record: what, by whom, which rule, what was done.
fn describe(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let object = if r["file"].is_object() {
        let f = &r["file"];
        let mut o = format!("{} {}", s(&f["access"]), s(&f["path"]));
        if let Some(to) = f["new_path"].as_str() {
            write!(o, " -> {to}").ok();
        }
        if f["unresolved"].as_bool() == Some(true) {
            o.push_str(" (unresolved)");
        }
        o
    } else if r["exec"].is_object() {
        format!("exec {}", s(&r["exec"]["path"]))
    } else if r["net"].is_object() {
        let n = &r["net"];
        format!(
            "{} {}:{}",
            s(&n["protocol"]),
            s(&n["address"]),
            n["port"].as_u64().unwrap_or(0)
        )
    } else if r["escape"].is_object() {
        format!("escape {}", s(&r["escape"]["syscall"]))
    } else if r["task"].is_object() {
        format!(
            "task {}: {}",
            s(&r["task"]["event"]),
            s(&r["task"]["reason"])
        )
    } else {
        String::new()
    };
    let p = &r["process"];
    let by = if p.is_object() {
        format!(" by {} ({})", s(&p["comm"]), s(&p["exe"]))
    } else {
        String::new()
    };
    let layer = r["layer"]
        .as_str()
        .map_or(String::new(), |l| format!(", layer {l}"));
    format!(
        "{}: {object}{by}; rule `{}`: {}; action {}{layer}",
        s(&r["kind"]),
        s(&r["violation"]["rule"]),
        s(&r["violation"]["reason"]),
        s(&r["action"]),
    )
}
