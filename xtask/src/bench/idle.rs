//! What an idle daemon (no agent runs, so no syscall hook attached) costs other processes,
//! in pairs: "no monitor" and "daemon idle" measured back to back, their order alternating
//! from pair to pair, so that the drift of this shared VM falls on both sides alike.
//!
//! One generator run's openat+close figure is bimodal on this VM (runs settle near one of
//! two speeds, whichever configuration runs), so a single run per configuration per round
//! (the overhead table) cannot resolve a 2% target. Each side of a pair is the fastest of
//! `RUNS` back-to-back generator runs: noise only adds time, and the fastest run is the one
//! least disturbed. The pair's ratio is idle over none; the figure is the median of the
//! pairs' ratios.

use std::fmt::Write as _;

use super::{Daemon, Env, Ops, Params, Via, report::median};

/// Generator runs per side of a pair (the fastest counts).
const RUNS: usize = 3;

#[derive(Debug, Default)]
pub struct Idle {
    /// (no monitor, daemon idle): the fastest of `RUNS` runs of each side, per pair.
    pub pairs: Vec<(Ops, Ops)>,
    pub error: Option<String>,
}

impl Idle {
    /// The median over the pairs of idle / none for one field of `Ops`.
    pub fn ratio(&self, f: fn(&Ops) -> f64) -> Option<f64> {
        median(
            &mut self
                .pairs
                .iter()
                .map(|(none, idle)| f(idle) / f(none))
                .collect::<Vec<_>>(),
        )
    }
}

pub fn run(env: &Env, p: &Params, out: &mut Idle) {
    for pair in 0..p.idle_pairs {
        eprintln!("bench: idle pair {}/{}", pair + 1, p.idle_pairs);
        // Even pairs measure "none" first, odd pairs the idle daemon first.
        let measured = if pair % 2 == 0 {
            none(env, p).and_then(|n| Ok((n, idle(env, p)?)))
        } else {
            idle(env, p).and_then(|i| Ok((none(env, p)?, i)))
        };
        match measured {
            Ok(m) => out.pairs.push(m),
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                return;
            }
        }
    }
}

/// The fastest of `RUNS` generator runs, field by field.
fn fastest(env: &Env, p: &Params) -> anyhow::Result<Ops> {
    let args = env.ops_args(p);
    let mut best: Option<Ops> = None;
    for _ in 0..RUNS {
        let (v, _) = env.generate(&Via::Direct(None), &args)?;
        let ops = Ops::from_json(&v)?;
        best = Some(best.map_or(ops, |b| Ops {
            getpid: b.getpid.min(ops.getpid),
            openat: b.openat.min(ops.openat),
            udp: b.udp.min(ops.udp),
            forkexec: b.forkexec.min(ops.forkexec),
            ..b
        }));
    }
    best.ok_or_else(|| anyhow::anyhow!("no generator run"))
}

fn none(env: &Env, p: &Params) -> anyhow::Result<Ops> {
    fastest(env, p)
}

/// A fresh daemon, once its syscall hooks (attached at start to check them) are detached.
fn idle(env: &Env, p: &Params) -> anyhow::Result<Ops> {
    let d = Daemon::start(
        &env.daemon,
        &env.dir.join("daemon-idle"),
        &env.scopes,
        &env.name,
        env.mon_cpu(),
        &[],
    )?;
    d.wait_syscall_hooks(false)?;
    fastest(env, p)
}

pub fn render(w: &mut String, idle: &Idle) -> anyhow::Result<()> {
    writeln!(w, "\n#### The idle daemon, in pairs\n")?;
    if let Some(e) = &idle.error {
        writeln!(w, "Not measured to the end: {e}\n")?;
    }
    let cell = |f: fn(&Ops) -> f64| {
        idle.ratio(f)
            .map_or_else(|| "—".to_string(), |x| format!("{x:.3}x"))
    };
    writeln!(
        w,
        "{} pairs of \"no monitor\" and \"daemon idle\" (a fresh daemon, no agent, no syscall \
         hook attached), back to back, the order alternating; each side the fastest of {RUNS} \
         generator runs. Median over the pairs of idle / none: getpid {}, openat+close {}, UDP \
         socket+connect+close {}, fork+execve {}.",
        idle.pairs.len(),
        cell(|o| o.getpid),
        cell(|o| o.openat),
        cell(|o| o.udp),
        cell(|o| o.forkexec),
    )?;
    if !idle.pairs.is_empty() {
        writeln!(
            w,
            "\n| pair | openat+close none (ns) | idle (ns) | ratio |\n|---:|---:|---:|---:|"
        )?;
        for (i, (none, idle)) in idle.pairs.iter().enumerate() {
            writeln!(
                w,
                "| {} | {:.0} | {:.0} | {:.3}x |",
                i + 1,
                none.openat,
                idle.openat,
                idle.openat / none.openat
            )?;
        }
    }
    Ok(())
}
