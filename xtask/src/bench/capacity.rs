//! The daemon's own capacity, independent of the load generator: `agent-monitor
//! bench-pipeline` builds ring-buffer records in memory and feeds them through the
//! daemon's userspace pipeline in-process (decoder, process table, path resolution, policy,
//! record, the audit log's writer to /dev/null). It attaches nothing, so it runs beside
//! the other sections' daemons without touching them.

use std::{fmt::Write as _, process::Command};

use anyhow::Context as _;

use super::{Env, Params, report::median, sys};

/// The kinds measured, what the daemon does for each beyond the policy, and the share of
/// the run's events each gets (exec is the slowest: fewer events keep the run short).
const KINDS: [(&str, &str, u64); 3] = [
    ("net", "none (addresses only)", 1),
    (
        "file",
        "canonical path of the directory (reused for 1 ms), lstat of the file (no /proc)",
        1,
    ),
    ("exec", "realpath of the image, readlink /proc/PID/exe", 4),
];

/// The target for events that need no path resolution.
pub const TARGET: f64 = 2e6;

/// One run of one kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// Events per CPU second of the whole process (pipeline and writer threads).
    pub per_core: f64,
    /// Events per CPU second of the pipeline's thread alone.
    pub pipeline: f64,
    /// Records per CPU second the decoder alone turns out.
    pub decode: f64,
}

#[derive(Debug, Default)]
pub struct Kind {
    pub name: &'static str,
    pub resolution: &'static str,
    pub events: u64,
    pub runs: Vec<Run>,
    pub error: Option<String>,
}

impl Kind {
    fn median(&self, f: impl Fn(&Run) -> f64) -> Option<f64> {
        median(&mut self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// The median per-core rate, when measured.
    pub fn per_core(&self) -> Option<f64> {
        self.median(|r| r.per_core)
    }
}

#[derive(Debug, Default)]
pub struct Capacity {
    pub kinds: Vec<Kind>,
    pub rounds: usize,
}

impl Capacity {
    /// The per-core rate of events without path resolution (`net`).
    pub fn unresolved(&self) -> Option<f64> {
        self.kinds.iter().find(|k| k.name == "net")?.per_core()
    }
}

pub fn run(env: &Env, p: &Params, out: &mut Capacity) {
    out.rounds = p.capacity_rounds;
    out.kinds = KINDS
        .iter()
        .map(|&(name, resolution, share)| Kind {
            name,
            resolution,
            events: p.capacity_events / share,
            ..Kind::default()
        })
        .collect();
    // Rounds interleave the kinds, so that a busy moment of the shared machine does not
    // fall on one kind alone.
    for round in 0..p.capacity_rounds {
        eprintln!("bench: capacity round {}/{}", round + 1, p.capacity_rounds);
        for kind in &mut out.kinds {
            if kind.error.is_some() {
                continue;
            }
            match once(env, kind.name, kind.events) {
                Ok(r) => kind.runs.push(r),
                Err(e) => kind.error = Some(format!("{e:#}")),
            }
        }
    }
}

fn once(env: &Env, kind: &str, events: u64) -> anyhow::Result<Run> {
    let mut cmd = Command::new(&env.daemon);
    cmd.args(["bench-pipeline", "--kind", kind, "--events"])
        .arg(events.to_string());
    // Both of its threads on the monitor's CPU: what one core does.
    sys::place(&mut cmd, env.mon_cpu(), None)?;
    let text = sys::output(&mut cmd)?;
    let v = sys::last_json(&text)?;
    let rate = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("bench-pipeline output has no {k}: {v}"))
    };
    let records = v["records"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        records == events && v["violations"].as_u64() == Some(0),
        "bench-pipeline wrote {records} records for {events} events: {v}"
    );
    Ok(Run {
        per_core: rate("events_per_cpu_sec")?,
        pipeline: rate("pipeline_events_per_cpu_sec")?,
        decode: rate("decode_only_per_sec")?,
    })
}

/// `### 7. The daemon's own capacity`.
pub fn render(w: &mut String, c: &Capacity) -> std::fmt::Result {
    writeln!(
        w,
        "\n### 7. The daemon's own capacity (synthetic ring-buffer records, in-process)\n\n\
         `agent-monitor bench-pipeline` feeds records built byte for byte as the kernel writes \
         them through the reader's handler: decoder, process table, path resolution, policy \
         (audit scope, every event allowed), record, and the audit log's writer thread \
         (JSON lines to /dev/null, published to the feed, usage and metrics). One process of \
         one task; both threads pinned to one CPU. Events/s per core = events / CPU time of \
         the whole process; median of {} runs.\n\n\
         | kind | what the daemon resolves | events per run | events/s per core | pipeline thread alone | decode alone |\n\
         |---|---|---:|---:|---:|---:|",
        c.rounds
    )?;
    let m = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.0}k", v / 1e3));
    for k in &c.kinds {
        if k.runs.is_empty() {
            let why = k.error.as_deref().unwrap_or("not run");
            let why = why.lines().next().unwrap_or("").replace('|', "/");
            writeln!(
                w,
                "| {} | {} | {} | failed: {why} | — | — |",
                k.name, k.resolution, k.events
            )?;
            continue;
        }
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            k.name,
            k.resolution,
            k.events,
            m(k.per_core()),
            m(k.median(|r| r.pipeline)),
            m(k.median(|r| r.decode)),
        )?;
    }
    Ok(())
}
