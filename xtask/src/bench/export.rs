//! What the OpenTelemetry export costs: the same load (one task reading distinct files as
//! fast as it can: a record per open, nothing de-duplicates them) through a daemon with the
//! export off and one sending every record to a real OTLP receiver (`tests/otlp_receiver.py`,
//! on the official `opentelemetry-proto` definitions) on loopback. Daemon CPU per 100k
//! records, whether every record reached the receiver, and whether the kernel dropped any.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Env, Via, daemon::Daemon, report::median, sys};

/// The load: distinct files read once each (one record each), in a tree like the scale
/// section's; the rounds alternate off and on.
const FILES: u64 = 50_000;
/// Files per second: under the zero-drop rate with the export on (as fast as the task can,
/// about 100k/s here, the kernel drops records with or without it).
const RATE: u64 = 20_000;
const ROUNDS: usize = 3;

/// One run of one configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub records: u64,
    /// Records per second the task produced (its opens per second).
    pub rate: f64,
    pub dropped: u64,
    /// Daemon CPU seconds from the load's start until every record was written (off) or
    /// also acknowledged by the receiver (on).
    pub cpu_secs: f64,
    /// Records the receiver got (on only).
    pub received: u64,
    /// From the load's end until the export's backlog was empty (on only).
    pub catch_up: Duration,
}

impl Run {
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    fn cpu_per_100k(&self) -> f64 {
        if self.records == 0 {
            return 0.0;
        }
        self.cpu_secs * 100_000.0 / self.records as f64
    }
}

#[derive(Debug, Default)]
pub struct Export {
    pub off: Vec<Run>,
    pub on: Vec<Run>,
    pub protocol: &'static str,
    pub error: Option<String>,
}

/// A receiver process, stopped on drop.
struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(root: &Path, dir: &Path, protocol: &str) -> anyhow::Result<Self> {
        let python = root.join("target/tools/venv/bin/python");
        if !python.is_file() {
            bail!("{} is missing: run `cargo xtask setup`", python.display());
        }
        let out = dir.join("received.jsonl");
        let port_file = dir.join("receiver.port");
        let _ = fs::remove_file(&out);
        let _ = fs::remove_file(&port_file);
        let child = Command::new(python)
            .arg(root.join("tests/otlp_receiver.py"))
            .args(["--protocol", protocol, "--out"])
            .arg(&out)
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the OTLP receiver")?;
        let mut r = Self {
            child,
            out,
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                r.port = port;
                return Ok(r);
            }
            if let Some(status) = r.child.try_wait()? {
                bail!("the OTLP receiver exited early ({status})");
            }
            if Instant::now() > deadline {
                bail!("the OTLP receiver did not listen within 30 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log records received so far (the receiver writes one line per record and per metric).
    fn logs(&self) -> u64 {
        fs::read_to_string(&self.out).map_or(0, |t| {
            t.lines()
                .filter(|l| l.contains("\"signal\": \"log\"") || l.contains("\"signal\":\"log\""))
                .count() as u64
        })
    }
}

pub fn run(env: &Env, root: &Path, out: &mut Export) {
    out.protocol = "grpc";
    if let Err(e) = measure(env, root, out) {
        out.error = Some(format!("{e:#}"));
    }
}

fn measure(env: &Env, root: &Path, out: &mut Export) -> anyhow::Result<()> {
    let tree = env.dir.join("export-tree");
    for i in 0..FILES {
        let dir = tree.join(format!("d{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(dir.join(format!("f{:03}", i % 1000)), format!("file {i}\n"))
            .with_context(|| format!("writing file {i} of the tree"))?;
    }
    for round in 0..ROUNDS {
        for on in [false, true] {
            eprintln!(
                "bench: export {} round {}",
                if on { "on" } else { "off" },
                round + 1
            );
            let run = once(env, root, &tree, on)?;
            if on { &mut out.on } else { &mut out.off }.push(run);
        }
    }
    Ok(())
}

fn once(env: &Env, root: &Path, tree: &Path, on: bool) -> anyhow::Result<Run> {
    let dir = env.dir.join(if on { "export-on" } else { "export-off" });
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let receiver = if on {
        Some(Receiver::start(root, &dir, "grpc")?)
    } else {
        None
    };
    let endpoint = receiver
        .as_ref()
        .map(|r| format!("http://127.0.0.1:{}", r.port));
    let mut extra = Vec::new();
    if let Some(e) = &endpoint {
        extra.extend(["--otlp-endpoint", e.as_str(), "--otlp-protocol", "grpc"]);
    }
    let d = Daemon::start(
        &env.daemon,
        &dir.join("daemon"),
        &env.scopes,
        &env.name,
        env.mon_cpu(),
        &extra,
    )?;
    let (before, _) = d.settle()?;
    let cpu0 = sys::cpu_secs(d.pid())?;
    let args: Vec<String> = vec![
        "files".into(),
        "--file".into(),
        tree.display().to_string(),
        "--count".into(),
        FILES.to_string(),
        "--rate".into(),
        RATE.to_string(),
    ];
    let (v, _) = env.generate(&Via::Agent(&d, "bench-audit"), &args)?;
    let secs = v["secs"]
        .as_f64()
        .context("the generator reported no time")?;
    let (after, _) = d.settle()?;
    let load_end = Instant::now();
    let mut run = Run {
        records: after.records - before.records,
        dropped: after.dropped - before.dropped,
        ..Run::default()
    };
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    {
        run.rate = run.records as f64 / secs.max(1e-6);
    }
    if let Some(r) = &receiver {
        // Caught up: the daemon has nothing left to send and the receiver has every line of
        // the audit log.
        let lines = d.audit_lines();
        let deadline = Instant::now() + Duration::from_mins(3);
        loop {
            let status = sys::get_json(d.socket(), "/v1/status")?;
            let backlog = status["otlp"]["backlog_bytes"].as_u64();
            let sent = status["otlp"]["records_sent"].as_u64().unwrap_or(0);
            if backlog == Some(0) && sent >= lines {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the export did not catch up within 3 min: {sent} of {lines} records sent, status {}",
                    status["otlp"]
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        run.received = r.logs();
        run.catch_up = load_end.elapsed();
    }
    run.cpu_secs = sys::cpu_secs(d.pid())? - cpu0;
    Ok(run)
}

/// `### 9. OpenTelemetry export`.
pub fn render(w: &mut String, e: &Export) -> std::fmt::Result {
    write!(
        w,
        "\n### 9. OpenTelemetry export (one audit task reads {FILES} distinct files at {RATE}/s, a \
         record each, with the export off and on to a real OTLP receiver over {} on loopback, {ROUNDS} rounds \
         each, interleaved)\n\n",
        if e.protocol.is_empty() {
            "grpc"
        } else {
            e.protocol
        }
    )?;
    if let Some(err) = &e.error {
        writeln!(w, "Not measured: {err}")?;
        if e.off.is_empty() && e.on.is_empty() {
            return Ok(());
        }
    }
    writeln!(
        w,
        "| export | records (median) | records/s | dropped in the kernel | received | daemon CPU s per 100k records | catch-up after the load |\n|---|---:|---:|---:|---:|---:|---:|"
    )?;
    let med =
        |runs: &[Run], f: &dyn Fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    for (name, runs) in [("off", &e.off), ("on", &e.on)] {
        if runs.is_empty() {
            continue;
        }
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let records = med(runs, &|r| r.records as f64).unwrap_or(0.0);
        let dropped: u64 = runs.iter().map(|r| r.dropped).sum();
        let received = if name == "on" {
            let all: u64 = runs.iter().map(|r| r.received).sum();
            let written: u64 = runs.iter().map(|r| r.records).sum();
            format!("{all} of {written} written")
        } else {
            "-".into()
        };
        let cpu = med(runs, &|r| r.cpu_per_100k()).unwrap_or(0.0);
        let rate = med(runs, &|r| r.rate).unwrap_or(0.0);
        let catch_up = if name == "on" {
            format!(
                "{:.2} s",
                med(runs, &|r| r.catch_up.as_secs_f64()).unwrap_or(0.0)
            )
        } else {
            "-".into()
        };
        writeln!(
            w,
            "| {name} | {records:.0} | {rate:.0} | {dropped} | {received} | {cpu:.3} | {catch_up} |"
        )?;
    }
    let off = med(&e.off, &|r| r.cpu_per_100k());
    let on = med(&e.on, &|r| r.cpu_per_100k());
    if let (Some(off), Some(on)) = (off, on)
        && off > 0.0
    {
        writeln!(
            w,
            "\nWith the export on the daemon spends {:.2}x the CPU per record it spends with it off \
             (medians of one run). \"received\" counts log records the receiver wrote before it \
             answered; more than written would be duplicates (at-least-once after a failed batch).",
            on / off
        )?;
    }
    Ok(())
}
