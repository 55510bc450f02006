//! `cargo xtask bench [--quick]`: overhead, throughput, enforcement latency and the daemon's
//! own cost, in one run, side by side with "no monitor", auditd and bpftrace. Prints a
//! markdown report and writes it to docs/BENCHMARKS.md.
//!
//! The machine is shared and noisy: every configuration is run several times, interleaved
//! round by round with the "no monitor" baseline, and compared through ratios of medians.

mod approve;
mod calls;
mod capacity;
mod daemon;
mod dns;
mod export;
mod idle;
mod load;
mod overhead;
mod realwork;
mod report;
mod scale;
mod sys;
mod tools;

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use daemon::Daemon;

/// The generator runs on this CPU and the monitor (daemon, auditd, bpftrace) on the other,
/// when the machine has two or more.
const GEN_CPU: usize = 0;
const MON_CPU: usize = 1;
/// The UDP port the generator connects to (in scope); PORT + 1 is out of scope.
const PORT: u16 = 39_999;

/// The scope of an agent that only sleeps: with it running, the syscall hooks are attached.
const SLEEPER: &str = "bench-sleeper";
const SLEEPER_SCOPE: &str = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {name: bench-sleeper, owner: bench@example.org}\nspec:\n  mode: audit\n  exec:\n    allow: [/usr/bin/sleep]\n";

/// Sizes of one run.
#[derive(Debug, Clone)]
struct Params {
    rounds: usize,
    iters: u64,
    exec_iters: u64,
    load_secs: f64,
    openat_rates: Vec<u64>,
    fchdir_rates: Vec<u64>,
    kills: u64,
    denies: u64,
    connects: u64,
    dns_lookups: u64,
    /// Rounds of the real-work section (each runs every workload in every configuration).
    work_rounds: usize,
    /// Synthetic events per `bench-pipeline` run (exec gets fewer), and runs of each kind.
    capacity_events: u64,
    capacity_rounds: usize,
    /// Pairs of "no monitor" and "daemon idle" (see `idle`).
    idle_pairs: usize,
    /// Sizes of the scale section.
    scale: scale::Sizes,
    /// Held opens approved in the approvals section.
    approvals: u64,
}

impl Params {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 2,
                iters: 10_000,
                exec_iters: 30,
                load_secs: 0.5,
                openat_rates: vec![50_000, 0],
                fchdir_rates: vec![200_000, 0],
                kills: 30,
                denies: 10,
                connects: 10,
                dns_lookups: 200,
                work_rounds: 1,
                capacity_events: 100_000,
                capacity_rounds: 2,
                idle_pairs: 2,
                scale: scale::Sizes::new(true),
                approvals: 30,
            }
        } else {
            Self {
                rounds: 5,
                iters: 100_000,
                exec_iters: 300,
                load_secs: 2.0,
                openat_rates: vec![25_000, 50_000, 100_000, 200_000, 0],
                fchdir_rates: vec![100_000, 200_000, 400_000, 800_000, 1_000_000, 0],
                kills: 200,
                denies: 50,
                connects: 50,
                dns_lookups: 2000,
                work_rounds: 5,
                capacity_events: 200_000,
                capacity_rounds: 5,
                idle_pairs: 6,
                scale: scale::Sizes::new(false),
                approvals: 200,
            }
        }
    }
}

/// ns/op of one generator run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ops {
    pub getpid: f64,
    pub openat: f64,
    pub udp: f64,
    pub forkexec: f64,
    pub calls: u64,
    pub exec_calls: u64,
}

impl Ops {
    fn from_json(v: &Value) -> anyhow::Result<Self> {
        let ns = |k: &str| {
            v[k]["ns_per_op"]
                .as_f64()
                .with_context(|| format!("generator output has no {k}: {v}"))
        };
        Ok(Self {
            getpid: ns("getpid")?,
            openat: ns("openat")?,
            udp: ns("udp")?,
            forkexec: ns("forkexec")?,
            calls: v["openat"]["calls"].as_u64().unwrap_or(0),
            exec_calls: v["forkexec"]["calls"].as_u64().unwrap_or(0),
        })
    }
}

/// Events a monitor delivered against those the generator made: (delivered, generated) for
/// openat, connect and execve, and events the monitor says it lost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery {
    pub open: (u64, u64),
    pub conn: (u64, u64),
    pub exec: (u64, u64),
    pub lost: u64,
    /// Opens the kernel counted instead of reporting again (agent-monitor's
    /// `deduplicated`: the same process, file and access within a second).
    pub counted: u64,
}

impl Delivery {
    fn add(&mut self, o: &Self) {
        for (a, b) in [
            (&mut self.open, o.open),
            (&mut self.conn, o.conn),
            (&mut self.exec, o.exec),
        ] {
            a.0 += b.0;
            a.1 += b.1;
        }
        self.lost += o.lost;
        self.counted += o.counted;
    }
}

/// One configuration of the overhead table.
#[derive(Debug, Default)]
pub struct Row {
    pub name: &'static str,
    pub runs: Vec<Ops>,
    /// None: the configuration does not observe events (no monitor, untagged).
    pub delivery: Option<Delivery>,
    pub error: Option<String>,
}

impl Row {
    fn new(name: &'static str, counts: bool) -> Self {
        Self {
            name,
            delivery: counts.then(Delivery::default),
            ..Self::default()
        }
    }
}

/// One throughput run.
#[derive(Debug, Clone, Default)]
pub struct LoadRun {
    pub kind: &'static str,
    pub target: u64,
    pub achieved: f64,
    pub generated: u64,
    pub emitted: u64,
    pub dropped: u64,
    pub records: u64,
    /// Daemon CPU seconds over the run and its drain.
    pub cpu_secs: f64,
    pub cpu_frac: f64,
    pub rss_kib: u64,
    /// `RssAnon`, `RssFile`, `RssShmem` at the highest sample.
    pub rss_parts: [u64; 3],
    pub drain: Duration,
    pub alive: bool,
}

/// Violations of one kind.
#[derive(Debug, Clone, Default)]
pub struct Violations {
    pub kind: &'static str,
    pub count: u64,
    pub killed: u64,
    pub returned: u64,
    pub timeouts: u64,
    pub eperm: u64,
    pub lat_ns: Vec<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub attach: Vec<Duration>,
    /// The daemon's own figures for attaching the syscall hooks when an agent starts and
    /// detaching them after the last one ended.
    pub syscall_attach_ms: Vec<f64>,
    pub syscall_detach_ms: Vec<f64>,
    pub failed_hooks: Vec<String>,
    pub idle_rss_kib: Vec<u64>,
    /// `RssAnon`, `RssFile`, `RssShmem` of the last idle sample.
    pub idle_rss_parts: [u64; 3],
    /// Of the idle RSS, the eBPF mappings (ring buffer) in KiB.
    pub idle_bpf_kib: u64,
    pub load: Vec<LoadRun>,
    pub load_error: Option<String>,
    pub violations: Vec<Violations>,
    /// DNS lookups through an agent's resolver in the daemon vs straight to the upstream.
    pub dns: dns::DnsBench,
    /// Real workloads (git, Python, tar) with and without the monitor.
    pub realwork: realwork::RealWork,
    /// The userspace pipeline's own events/s per core (`agent-monitor bench-pipeline`).
    pub capacity: capacity::Capacity,
    /// The idle daemon against no monitor, in pairs.
    pub idle: idle::Idle,
    /// Cost as work grows: task bursts, live tasks, agents, scope sizes, many files.
    pub scale: scale::Scale,
    /// The OpenTelemetry export's cost.
    pub export: export::Export,
    /// What `agent-monitor mcp` costs per tool call.
    pub calls: calls::Calls,
    /// Approve-to-resume of held operations (`onViolation: ask`).
    pub approve: approve::Approve,
    pub other_monitors: usize,
    /// Whether new tasks were kept out of the kernel's audit context (`tools::AuditQuiet`).
    pub audit_quiet: bool,
}

/// Binaries and files of one bench run.
struct Env {
    daemon: PathBuf,
    generator: PathBuf,
    dir: PathBuf,
    data: PathBuf,
    file: PathBuf,
    other: PathBuf,
    denied: PathBuf,
    scopes: PathBuf,
    /// A plain cgroup (not an agent's) for the auditd and bpftrace runs.
    cgroup: PathBuf,
    name: String,
    pin: bool,
}

impl Drop for Env {
    fn drop(&mut self) {
        sys::remove_cgroup_tree(&self.cgroup);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn run(root: &Path, quick: bool) -> anyhow::Result<()> {
    crate::require_root("cargo xtask bench")?;
    let p = Params::new(quick);
    let only = std::env::var("XTASK_BENCH_ONLY").unwrap_or_default();
    if !only.is_empty() {
        return run_only(root, &only, &p);
    }
    let (daemon, generator) = build(root)?;
    let (auditd_ok, bpftrace_ok) = tools::ensure_installed();
    let env = prepare(daemon, &generator)?;
    let started = Instant::now();
    let mut r = Results {
        other_monitors: count_other_monitors(),
        ..Results::default()
    };
    let quiet = tools::AuditQuiet::start();
    r.audit_quiet = quiet.active();
    overhead::overhead(&env, &p, &mut r, auditd_ok, bpftrace_ok, &quiet)?;
    idle::run(&env, &p, &mut r.idle);
    if let Err(e) = load::throughput(&env, &p, &mut r) {
        r.load_error = Some(format!("{e:#}"));
    }
    load::latency(&env, &p, &mut r);
    dns::run(&env, &p, &mut r);
    realwork::run(&env, &p, &mut r.realwork);
    capacity::run(&env, &p, &mut r.capacity);
    export::run(&env, root, &mut r.export);
    calls::run(&env, root, &mut r.calls);
    approve::run(&env, p.approvals, &mut r.approve);
    scale::run(&env, &p.scale, &mut r.scale);
    drop(quiet);
    let md = report::render(&r, &p, started.elapsed())?;
    println!("{md}");
    let doc = root.join("docs/BENCHMARKS.md");
    fs::write(&doc, report::document(&md, quick))
        .with_context(|| format!("writing {}", doc.display()))?;
    eprintln!("bench: wrote {}", doc.display());
    Ok(())
}

/// `XTASK_BENCH_ONLY=realwork|capacity|scale|live|export|calls|approve|idle cargo xtask bench
/// [--quick]`: one section alone, printed (`live`: the scale section's live tasks only).
/// `XTASK_BENCH_DAEMON=<binary>` measures that daemon instead of this tree's release build.
/// docs/BENCHMARKS.md is written only by the full bench.
fn run_only(root: &Path, only: &str, p: &Params) -> anyhow::Result<()> {
    if !matches!(
        only,
        "realwork" | "capacity" | "scale" | "live" | "export" | "calls" | "approve" | "idle"
    ) {
        bail!(
            "XTASK_BENCH_ONLY={only}: the sections that run alone are `realwork`, `capacity`, `scale`, `live` (the scale section's live tasks), `export`, `calls`, `approve` and `idle`"
        );
    }
    let (daemon, generator) = build(root)?;
    let env = prepare(daemon, &generator)?;
    let started = Instant::now();
    let mut md = String::new();
    if only == "idle" {
        let mut i = idle::Idle::default();
        idle::run(&env, p, &mut i);
        idle::render(&mut md, &i)?;
    } else if only == "calls" {
        let mut c = calls::Calls::default();
        calls::run(&env, root, &mut c);
        calls::render(&mut md, &c)?;
    } else if only == "approve" {
        let mut a = approve::Approve::default();
        approve::run(&env, p.approvals, &mut a);
        approve::render(&mut md, &a)?;
    } else if only == "export" {
        let mut e = export::Export::default();
        export::run(&env, root, &mut e);
        export::render(&mut md, &e)?;
    } else if only == "capacity" {
        let mut c = capacity::Capacity::default();
        capacity::run(&env, p, &mut c);
        capacity::render(&mut md, &c)?;
    } else if only == "scale" || only == "live" {
        let quiet = tools::AuditQuiet::start();
        let mut sc = scale::Scale::default();
        let step = (only == "live").then_some("live");
        scale::run_steps(&env, &p.scale, &mut sc, step);
        drop(quiet);
        scale::render(&mut md, &sc)?;
    } else {
        let quiet = tools::AuditQuiet::start();
        let mut rw = realwork::RealWork::default();
        realwork::run(&env, p, &mut rw);
        drop(quiet);
        realwork::render(&mut md, &rw)?;
    }
    println!(
        "{md}\nThe section took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    eprintln!("bench: XTASK_BENCH_ONLY={only}: docs/BENCHMARKS.md not written (partial run)");
    Ok(())
}

fn build(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    crate::run_cmd(crate::cargo().args([
        "build",
        "--release",
        "--package",
        "agent-monitor",
        "--package",
        "agent-monitor-bench",
    ]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_relative() {
        root.join(target)
    } else {
        target
    };
    let release = target.join("release");
    // Another daemon build to measure instead (an older commit's, for a side-by-side run).
    let daemon = std::env::var_os("XTASK_BENCH_DAEMON")
        .map_or_else(|| release.join("agent-monitor"), PathBuf::from);
    Ok((daemon, release.join("agent-monitor-bench")))
}

/// Daemons of other developers or tests attach hooks that every process, ours included, pays
/// for: count them so the report can say so.
fn count_other_monitors() -> usize {
    fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                    args.first().is_some_and(|a| a.ends_with(b"agent-monitor"))
                        && args.get(1) == Some(&&b"run"[..])
                })
            })
            .count()
    })
}

fn prepare(daemon: PathBuf, generator: &Path) -> anyhow::Result<Env> {
    let name = format!("am-bench-{}", std::process::id());
    let dir = PathBuf::from("/tmp").join(&name);
    let _ = fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let secret = dir.join("secret");
    let scopes = dir.join("scopes");
    for d in [&data, &secret, &scopes] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let file = data.join("file");
    let other = secret.join("other");
    // Inside the readable tree: only the kernel's identity check stops it (Landlock, which
    // only allows, lets it through to the open's exit).
    let denied = data.join("denied");
    for f in [&file, &other, &denied] {
        fs::write(f, "bench\n").with_context(|| format!("writing {}", f.display()))?;
    }
    let cgroup = sys::cgroup2_root()?.join(format!("{name}-peers"));
    fs::create_dir_all(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
    let generator = fs::canonicalize(generator)
        .with_context(|| format!("{} (was it built?)", generator.display()))?;
    let (gen_path, data_path, denied_path) =
        (generator.display(), data.display(), denied.display());
    let scope =
        |name: &str, mode: &str| scope_yaml(name, mode, &gen_path, &data_path, &denied_path);
    for (n, mode) in [("bench-audit", "audit"), ("bench-enforce", "enforce")] {
        fs::write(scopes.join(format!("{n}.yaml")), scope(n, mode)).context("writing a scope")?;
    }
    fs::write(scopes.join("bench-dns.yaml"), dns::scope_yaml(&gen_path))
        .context("writing the DNS scope")?;
    fs::write(scopes.join(format!("{SLEEPER}.yaml")), SLEEPER_SCOPE)
        .context("writing the sleeper's scope")?;
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    Ok(Env {
        daemon,
        generator,
        dir,
        data,
        file,
        other,
        denied,
        scopes,
        cgroup,
        name,
        pin: cpus >= 2,
    })
}

/// Where a generator runs.
enum Via<'a> {
    /// A plain process, optionally in a (non-agent) cgroup.
    Direct(Option<&'a Path>),
    /// `agent-monitor exec --scope SCOPE`: a tagged agent.
    Agent(&'a Daemon, &'a str),
    /// `agent-monitor bench-landlock --scope FILE`: under the Landlock layer of that
    /// scope, with no monitor (what Landlock itself costs).
    Landlock(&'a Path),
}

impl Env {
    fn gen_cpu(&self) -> Option<usize> {
        self.pin.then_some(GEN_CPU)
    }

    fn mon_cpu(&self) -> Option<usize> {
        self.pin.then_some(MON_CPU)
    }

    fn command(&self, via: &Via, args: &[String]) -> anyhow::Result<Command> {
        let mut cmd = match via {
            Via::Direct(cgroup) => {
                let mut c = Command::new(&self.generator);
                sys::place(&mut c, self.gen_cpu(), *cgroup)?;
                c
            }
            Via::Agent(d, scope) => {
                let mut c = Command::new(&self.daemon);
                c.arg("exec")
                    .arg("--socket")
                    .arg(&d.socket)
                    .args(["--scope", scope, "--"])
                    .arg(&self.generator);
                sys::place(&mut c, self.gen_cpu(), None)?;
                c
            }
            Via::Landlock(scope) => {
                let mut c = Command::new(&self.daemon);
                c.arg("bench-landlock")
                    .arg("--scope")
                    .arg(scope)
                    .arg("--")
                    .arg(&self.generator);
                sys::place(&mut c, self.gen_cpu(), None)?;
                c
            }
        };
        cmd.args(args).stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs the generator to completion; its JSON output and its pid.
    fn generate(&self, via: &Via, args: &[String]) -> anyhow::Result<(Value, u32)> {
        let child = self
            .command(via, args)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the generator")?;
        let pid = child.id();
        let out = child
            .wait_with_output()
            .context("waiting for the generator")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v = sys::last_json(&stdout).with_context(|| {
            format!(
                "generator {args:?} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((v, pid))
    }

    fn ops_args(&self, p: &Params) -> Vec<String> {
        vec![
            "ops".into(),
            "--file".into(),
            self.file.display().to_string(),
            "--port".into(),
            PORT.to_string(),
            "--iters".into(),
            p.iters.to_string(),
            "--exec-iters".into(),
            p.exec_iters.to_string(),
        ]
    }
}

/// The scopes the bench runs under (the same rules in audit and in enforce mode).
fn scope_yaml(
    name: &str,
    mode: &str,
    generator: &dyn std::fmt::Display,
    data: &dyn std::fmt::Display,
    denied: &dyn std::fmt::Display,
) -> String {
    [
        "apiVersion: agent-monitor.dev/v1".to_string(),
        "kind: AgentScope".to_string(),
        format!("metadata: {{name: {name}, owner: bench@example.org}}"),
        "spec:".to_string(),
        format!("  mode: {mode}"),
        "  onViolation: kill-process".to_string(),
        format!("  exec: {{allow: [{generator}, /usr/bin/true, /bin/true]}}"),
        format!("  files: {{read: [{data}/**, {data}], deny: [{denied}]}}"),
        format!("  network: {{connect: [{{cidr: 127.0.0.1/32, ports: [{PORT}], protocol: udp}}]}}"),
    ]
    .join("\n")
        + "\n"
}
