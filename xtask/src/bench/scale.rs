//! "Scale": how the cost grows with the work, against one release daemon at a time:
//!
//! 1. a burst of `agent-monitor exec` task starts released at once (every one must succeed);
//! 2. the daemon's RSS and idle CPU with 0, 10, 100, 1,000 live (sleeping) tasks;
//! 3. the tagged openat+close ratio and the daemon's CPU with 1, 10, 100 agent tasks: one
//!    generates while the others are alive and idle (100 generators time-sharing CPU 0
//!    would measure the scheduler; idle tasks measure what each task adds to the others);
//! 4. the tagged openat+close and UDP connect ratios, and the task start, with scopes of 10,
//!    1,000 and (as near 10,000 as the scope limits allow) file and network rules;
//! 5. one task reading 100k distinct files once each (every open judged), in enforce both
//!    with directories found readable whole and with every first read held.
//!
//! Ratios are to "no monitor" runs of the same round (no daemon at all), medians over the
//! rounds; the machine is shared, so only ratios measured side by side mean much.

mod burst;
mod load;
mod render;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::Read as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use render::render;

use super::{Env, PORT, Via, daemon::Daemon, realwork::held_total, sys};

/// The sizes of one run (`--quick`: smaller).
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Task starts released at once.
    pub burst: usize,
    /// Live tasks at which the daemon's RSS is taken.
    pub live: Vec<usize>,
    /// Agent tasks alive while one of them generates.
    pub agents: Vec<usize>,
    /// Generated file rules and network rules per scope (each).
    pub rules: Vec<usize>,
    /// Distinct files one task reads.
    pub files: usize,
    pub rounds: usize,
    /// Seconds of each openat or connect generator run.
    pub secs: f64,
}

/// The most generated rules of each kind one scope can hold: 8,192 entries per scope, of
/// which 3 are `exec.allow` and 4 the rules the generator needs (docs/SCOPES.md, "Limits").
pub const MAX_RULES: usize = 4_092;

impl Sizes {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                burst: 200,
                live: vec![0, 10, 100],
                agents: vec![1, 10],
                rules: vec![10, 1_000],
                files: 10_000,
                rounds: 1,
                secs: 0.3,
            }
        } else {
            Self {
                burst: 1_000,
                live: vec![0, 10, 100, 1_000],
                agents: vec![1, 10, 100],
                rules: vec![10, 1_000, MAX_RULES],
                files: 100_000,
                rounds: 3,
                secs: 1.0,
            }
        }
    }
}

/// One burst of task starts.
#[derive(Debug, Default)]
pub struct Burst {
    pub scope: &'static str,
    pub n: usize,
    pub ok: usize,
    /// First line of each failure's stderr (or how it ended) -> how many.
    pub failures: BTreeMap<String, usize>,
    /// From the release to the last `exec` exiting.
    pub wall: Duration,
    /// Each `exec`'s release to exit, in ms, sorted.
    pub lat_ms: Vec<f64>,
    /// From the release until the daemon had ended and removed every task.
    pub ended: Option<Duration>,
    pub cpu_secs: f64,
    pub rss_before: u64,
    pub rss_peak: u64,
}

/// The daemon with `tasks` live tasks.
#[derive(Debug, Default)]
pub struct Live {
    pub tasks: usize,
    pub rss_kib: u64,
    /// `RssAnon`, `RssFile`, `RssShmem`.
    pub parts: [u64; 3],
    /// Daemon CPU over an idle second (its housekeeping), share of one core.
    pub idle_cpu: f64,
    /// Descriptors the daemon holds.
    pub fds: usize,
}

/// One count of agent tasks: per round, the tagged run, the ratio to "no monitor", the
/// untagged run just before it and the daemon's CPU.
#[derive(Debug, Default)]
pub struct Agents {
    pub tasks: usize,
    pub ratio: Vec<f64>,
    pub ns: Vec<f64>,
    pub untagged: Vec<f64>,
    pub cpu: Vec<f64>,
}

/// One scope size in one mode, per round.
#[derive(Debug, Default)]
pub struct Rules {
    /// Generated rules of each kind.
    pub count: usize,
    pub mode: &'static str,
    /// Ratios to "no monitor".
    pub openat: Vec<f64>,
    pub udp: Vec<f64>,
    /// Ratios of openat and UDP to an untagged run just before (the daemon up).
    pub adjacent: [Vec<f64>; 2],
    /// `exec -- /bin/true` wall time in ms.
    pub start_ms: Vec<f64>,
    /// The first failure (the other sizes still run).
    pub error: Option<String>,
}

/// One configuration of the files run, per round.
#[derive(Debug, Default)]
pub struct Files {
    pub config: &'static str,
    pub secs: Vec<f64>,
    pub ratio: Vec<f64>,
    /// The daemon's CPU seconds over the run and its drain.
    pub cpu: Vec<f64>,
    pub drain: Vec<Duration>,
    pub records: Vec<u64>,
    pub dropped: Vec<u64>,
    pub held: Vec<u64>,
    /// Daemon RSS once the records are written, and once the task has ended.
    pub rss_after: Vec<u64>,
    pub rss_ended: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Scale {
    pub sizes: Option<Sizes>,
    pub bursts: Vec<Burst>,
    pub live: Vec<Live>,
    /// RSS once every live task has ended again.
    pub live_after: Option<Live>,
    pub agents: Vec<Agents>,
    pub rules: Vec<Rules>,
    /// Daemon RSS with the rule scopes loaded and no task, and its start to attached, per
    /// round.
    pub rules_rss: Vec<u64>,
    pub rules_attach: Vec<Duration>,
    pub files: Vec<Files>,
    /// Section that failed -> why.
    pub errors: Vec<(&'static str, String)>,
    pub other_monitors: usize,
}

/// Where the section's scopes and inputs are.
struct Paths {
    root: PathBuf,
    /// `scale-audit` and `scale-enforce`.
    scopes: PathBuf,
    /// `rules-N-MODE`, loaded only by the rules daemon.
    rules_scopes: PathBuf,
    /// The 100k-file tree (on a tmpfs of its own when it can be mounted).
    tree: PathBuf,
    tmpfs: bool,
}

impl Drop for Paths {
    fn drop(&mut self) {
        if self.tmpfs {
            unmount(&self.tree);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn unmount(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        // SAFETY: a NUL-terminated path; MNT_DETACH never blocks.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// One part of the section.
type Step<'a> = dyn Fn(&mut Scale) -> anyhow::Result<()> + 'a;

pub fn run(env: &Env, sizes: &Sizes, out: &mut Scale) {
    run_steps(env, sizes, out, None);
}

/// The steps named `only` (all when None): `XTASK_BENCH_ONLY=live` runs the live tasks
/// alone.
pub fn run_steps(env: &Env, sizes: &Sizes, out: &mut Scale, only: Option<&str>) {
    out.sizes = Some(sizes.clone());
    out.other_monitors = super::count_other_monitors();
    // The file tree only for the step that reads it (100k files take a while).
    let prep = Sizes {
        files: if only.is_some_and(|o| o != "files") {
            0
        } else {
            sizes.files
        },
        ..sizes.clone()
    };
    let paths = match prepare(env, &prep) {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(("all", format!("{e:#}")));
            return;
        }
    };
    let steps: [(&'static str, &Step); 5] = [
        ("burst", &|o| burst::bursts(env, &paths, sizes, o)),
        ("live", &|o| live(env, &paths, sizes, o)),
        ("agents", &|o| load::agents(env, &paths, sizes, o)),
        ("rules", &|o| load::rules(env, &paths, sizes, o)),
        ("files", &|o| load::files(env, &paths, sizes, o)),
    ];
    for (name, step) in steps {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        eprintln!("bench: scale: {name}");
        if let Err(e) = step(out) {
            eprintln!("bench: scale {name}: {e:#}");
            out.errors.push((name, format!("{e:#}")));
        }
    }
}

fn prepare(env: &Env, sizes: &Sizes) -> anyhow::Result<Paths> {
    let root = env.dir.join("scale");
    let _ = fs::remove_dir_all(&root);
    let paths = Paths {
        scopes: root.join("scopes"),
        rules_scopes: root.join("rules-scopes"),
        tree: root.join("tree"),
        root,
        tmpfs: false,
    };
    for d in [&paths.scopes, &paths.rules_scopes, &paths.tree] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // A tmpfs of its own: 100k files on this VM's ext4 would measure its inode allocator.
    let mut paths = paths;
    paths.tmpfs = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2g,mode=0755", "am-bench-scale"])
        .arg(&paths.tree)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    for i in 0..sizes.files {
        let dir = paths.tree.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(dir.join(format!("f{:03}", i % 1000)), format!("file {i}\n"))
            .with_context(|| format!("writing file {i} of the tree"))?;
    }
    // The enforce scope again with a deny glob ending in a wildcard: no directory is then
    // found readable whole (`DIR_OK`), and every first read is held, as any read in a
    // directory such a glob can reach is.
    fs::write(
        paths.scopes.join(format!("{HELD_SCOPE}.yaml")),
        scope_yaml(HELD_SCOPE, "enforce", env, &paths.tree, None)
            .replace("  files: {read: ", "  files: {deny: [\"**/*.key\"], read: "),
    )
    .context("writing a scale scope")?;
    for mode in ["audit", "enforce"] {
        fs::write(
            paths.scopes.join(format!("scale-{mode}.yaml")),
            scope_yaml(&format!("scale-{mode}"), mode, env, &paths.tree, None),
        )
        .context("writing a scale scope")?;
        for &n in &sizes.rules {
            fs::write(
                paths
                    .rules_scopes
                    .join(format!("{}.yaml", rules_scope(n, mode))),
                scope_yaml(
                    &rules_scope(n, mode),
                    mode,
                    env,
                    &paths.tree,
                    Some((&paths.root.join("rules"), n)),
                ),
            )
            .context("writing a rules scope")?;
        }
    }
    // Half the generated file rules name files that exist (Landlock and the identity maps
    // see them), half are globs.
    let rules = paths.root.join("rules");
    fs::create_dir_all(&rules).with_context(|| format!("creating {}", rules.display()))?;
    for i in (0..sizes.rules.iter().copied().max().unwrap_or(0)).step_by(2) {
        fs::write(rules.join(format!("r{i}.txt")), "rule\n").context("writing a rule's file")?;
    }
    Ok(paths)
}

/// The enforce scope whose every first read is held.
const HELD_SCOPE: &str = "scale-enforce-held";

fn rules_scope(n: usize, mode: &str) -> String {
    format!("rules-{n}-{mode}")
}

/// A scope allowing the generator, `sleep` and `true`, reads of the bench's data and of
/// `tree`, UDP to 127.0.0.1:PORT, and `rules`: N generated file rules (under a directory of
/// their own) and N network rules besides.
fn scope_yaml(
    name: &str,
    mode: &str,
    env: &Env,
    tree: &Path,
    rules: Option<(&Path, usize)>,
) -> String {
    let data = env.data.display();
    let mut read = format!("[{data}/**, {data}, {}/**", tree.display());
    let mut connect = format!("[{{cidr: 127.0.0.1/32, ports: [{PORT}], protocol: udp}}");
    let (dir, n) = rules.unwrap_or((tree, 0));
    for i in 0..n {
        if i % 2 == 0 {
            let _ = write!(read, ", {}/r{i}.txt", dir.display());
        } else {
            let _ = write!(read, ", {}/g{i}/**/*.txt", dir.display());
        }
        // Distinct /32s (the kernel's prefix trie holds each), TCP 443.
        let _ = write!(
            connect,
            ", {{cidr: 10.{}.{}.{}/32, ports: [443]}}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    read.push(']');
    connect.push(']');
    // The generator, and `sleep` and `true` where this system has them.
    let mut exec = vec![env.generator.display().to_string()];
    for bin in ["/usr/bin/sleep", "/usr/bin/true"] {
        exec.push(
            fs::canonicalize(bin).map_or_else(|_| bin.to_string(), |p| p.display().to_string()),
        );
    }
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\n\
         metadata: {{name: {name}, owner: bench@example.org}}\n\
         spec:\n  mode: {mode}\n  onViolation: kill-process\n\
         \x20 exec: {{allow: [{}]}}\n  files: {{read: {read}}}\n\
         \x20 network: {{connect: {connect}}}\n",
        exec.join(", ")
    )
}

fn start_daemon(env: &Env, dir: &str, scopes: &Path) -> anyhow::Result<Daemon> {
    Daemon::start(
        &env.daemon,
        &env.dir.join(dir),
        scopes,
        &env.name,
        env.mon_cpu(),
        &[],
    )
}

fn exec_cmd(env: &Env, d: &Daemon, scope: &str) -> Command {
    let mut c = Command::new(&env.daemon);
    c.arg("exec")
        .arg("--socket")
        .arg(&d.socket)
        .args(["--scope", scope, "--"]);
    c
}

/// The daemon's live task count.
fn tasks(d: &Daemon) -> anyhow::Result<usize> {
    let v = sys::get_json(&d.socket, "/v1/status")?;
    v["tasks"]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .context("status has no task count")
}

/// Polls until the daemon has exactly `n` tasks (or `limit` passes).
fn wait_tasks(d: &Daemon, n: usize, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let now = tasks(d)?;
        if now == n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!(
                "the daemon still has {now} tasks after {} s (waiting for {n})",
                limit.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `agent-monitor exec -- sleep` tasks kept alive; stopped (SIGTERM, which `exec` forwards)
/// on drop.
#[derive(Default)]
struct Fleet {
    children: Vec<Child>,
}

impl Fleet {
    /// Starts tasks (up to 100 at a time) until `n` are alive, each a `sleep`; returns once
    /// the daemon counts `n` tasks.
    fn grow(&mut self, env: &Env, d: &Daemon, scope: &str, n: usize) -> anyhow::Result<()> {
        while self.children.len() < n {
            let batch = (n - self.children.len()).min(100);
            for _ in 0..batch {
                let child = exec_cmd(env, d, scope)
                    .args(["/usr/bin/sleep", "3600"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("starting an idle task")?;
                self.children.push(child);
            }
            let want = self.children.len();
            let deadline = Instant::now() + Duration::from_mins(1);
            while tasks(d)? < want {
                for c in &mut self.children {
                    if let Some(status) = c.try_wait().context("idle task")? {
                        let mut err = String::new();
                        if let Some(mut e) = c.stderr.take() {
                            let _ = e.read_to_string(&mut err);
                        }
                        bail!("an idle task ended ({status}): {}", err.trim());
                    }
                }
                if Instant::now() > deadline {
                    bail!("{want} tasks not running within 60 s");
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    fn stop(&mut self) {
        for c in &self.children {
            sys::signal(c, libc::SIGTERM);
        }
        for mut c in self.children.drain(..) {
            sys::stop_child(&mut c, libc::SIGTERM, Duration::from_secs(10));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 2. RSS, descriptors and idle CPU with 0, 10, 100, 1,000 live tasks.
fn live(env: &Env, paths: &Paths, sizes: &Sizes, out: &mut Scale) -> anyhow::Result<()> {
    let d = start_daemon(env, "daemon-scale-live", &paths.scopes)?;
    let mut fleet = Fleet::default();
    for &n in &sizes.live {
        fleet.grow(env, &d, "scale-audit", n)?;
        out.live.push(sample(&d)?);
        eprintln!(
            "bench: scale live {n}: {} KiB",
            out.live.last().map_or(0, |l| l.rss_kib)
        );
    }
    fleet.stop();
    wait_tasks(&d, 0, Duration::from_mins(1))?;
    out.live_after = Some(sample(&d)?);
    Ok(())
}

/// The daemon at rest: RSS after its records are written, CPU over the next second.
fn sample(d: &Daemon) -> anyhow::Result<Live> {
    d.settle()?;
    let cpu0 = sys::cpu_secs(d.pid())?;
    let t0 = Instant::now();
    // A fixed window: what is measured is the daemon's housekeeping over it.
    thread::sleep(Duration::from_secs(1));
    let cpu = (sys::cpu_secs(d.pid())? - cpu0) / t0.elapsed().as_secs_f64();
    Ok(Live {
        tasks: tasks(d)?,
        rss_kib: sys::rss_kib(d.pid())?,
        parts: sys::rss_parts(d.pid())?,
        idle_cpu: cpu,
        fds: fds(d.pid()),
    })
}

/// One openat+close (or UDP connect) generator run at full speed: ns per call.
fn gen_ns(env: &Env, via: &Via, kind: &str, secs: f64) -> anyhow::Result<f64> {
    let args: Vec<String> = vec![
        "load".into(),
        "--file".into(),
        env.file.display().to_string(),
        "--rate".into(),
        "0".into(),
        "--secs".into(),
        secs.to_string(),
        "--kind".into(),
        kind.into(),
        "--port".into(),
        PORT.to_string(),
    ];
    let (v, _) = env.generate(via, &args)?;
    let rate = v["rate"].as_f64().filter(|r| *r > 0.0).context("no rate")?;
    Ok(1e9 / rate)
}

/// A "no monitor" baseline around a daemon's runs: the mean of a run before it starts and
/// one after it stops, so that a drift of the machine during the round shows less.
fn bracketed<T>(
    env: &Env,
    kind: &str,
    secs: f64,
    between: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, T)> {
    let before = gen_ns(env, &Via::Direct(None), kind, secs)?;
    let t = between()?;
    let after = gen_ns(env, &Via::Direct(None), kind, secs)?;
    Ok((f64::midpoint(before, after), t))
}
