//! The overhead targets measured in pairs: "no monitor" (and, beside it, the generator under
//! the enforce scope's Landlock layer alone, no monitor), then a fresh daemon idle (no agent
//! runs, so no syscall hook attached) and the generator as a tagged agent (audit, enforce),
//! back to back, the order alternating from pair to pair, so that the drift of this shared
//! VM falls on both sides alike.
//!
//! One generator run's openat+close figure is bimodal on this VM (a process settles near
//! one of two speeds, whichever configuration runs), so one run per configuration per round
//! (the overhead table) cannot resolve a target of a few percent. Each configuration of a
//! pair is the fastest of `RUNS` generator runs: noise only adds time, and the fastest run
//! is the one least disturbed. The figure is the median over the pairs of the ratio to the
//! pair's "no monitor".

use std::fmt::Write as _;

use super::{Daemon, Env, Ops, Params, Via, report::median};

/// Generator runs per side of a pair (the fastest counts).
const RUNS: usize = 3;

/// Picks one configuration of a pair.
pub type Side = fn(&Pair) -> &Ops;

/// One pair: the fastest of `RUNS` runs of each configuration.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub none: Ops,
    /// The enforce scope's Landlock layer, no monitor.
    pub landlock: Ops,
    pub idle: Ops,
    pub audit: Ops,
    pub enforce: Ops,
}

#[derive(Debug, Default)]
pub struct Idle {
    pub pairs: Vec<Pair>,
    pub error: Option<String>,
}

impl Idle {
    /// The median over the pairs of `side` / none for one field of `Ops`.
    pub fn ratio(&self, side: Side, f: fn(&Ops) -> f64) -> Option<f64> {
        median(
            &mut self
                .pairs
                .iter()
                .map(|p| f(side(p)) / f(&p.none))
                .collect::<Vec<_>>(),
        )
    }
}

pub fn run(env: &Env, p: &Params, out: &mut Idle) {
    for pair in 0..p.idle_pairs {
        eprintln!("bench: pair {}/{}", pair + 1, p.idle_pairs);
        // Even pairs measure "none" first, odd pairs the daemon's configurations first.
        let measured = if pair % 2 == 0 {
            without_daemon(env, p).and_then(|none| Ok((none, with_daemon(env, p)?)))
        } else {
            with_daemon(env, p).and_then(|d| Ok((without_daemon(env, p)?, d)))
        };
        match measured {
            Ok(((none, landlock), (idle, audit, enforce))) => out.pairs.push(Pair {
                none,
                landlock,
                idle,
                audit,
                enforce,
            }),
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                return;
            }
        }
    }
}

/// The fastest of `RUNS` generator runs, field by field.
fn fastest(env: &Env, p: &Params, via: &Via) -> anyhow::Result<Ops> {
    let args = env.ops_args(p);
    let mut best: Option<Ops> = None;
    for _ in 0..RUNS {
        let (v, _) = env.generate(via, &args)?;
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

/// No daemon: the generator alone, then under the enforce scope's Landlock layer.
fn without_daemon(env: &Env, p: &Params) -> anyhow::Result<(Ops, Ops)> {
    let none = fastest(env, p, &Via::Direct(None))?;
    let scope = env.scopes.join("bench-enforce.yaml");
    let landlock = fastest(env, p, &Via::Landlock(&scope))?;
    Ok((none, landlock))
}

/// A fresh daemon: idle once its syscall hooks (attached at start to check them) are
/// detached, then the generator as a tagged agent in audit and in enforce mode.
fn with_daemon(env: &Env, p: &Params) -> anyhow::Result<(Ops, Ops, Ops)> {
    let d = Daemon::start(
        &env.daemon,
        &env.dir.join("daemon-pairs"),
        &env.scopes,
        &env.name,
        env.mon_cpu(),
        &[],
    )?;
    d.wait_syscall_hooks(false)?;
    let idle = fastest(env, p, &Via::Direct(None))?;
    let audit = fastest(env, p, &Via::Agent(&d, "bench-audit"))?;
    let enforce = fastest(env, p, &Via::Agent(&d, "bench-enforce"))?;
    Ok((idle, audit, enforce))
}

pub fn render(w: &mut String, idle: &Idle) -> anyhow::Result<()> {
    writeln!(
        w,
        "\n#### In pairs: the fastest of {RUNS} runs per configuration\n"
    )?;
    if let Some(e) = &idle.error {
        writeln!(w, "Not measured to the end: {e}\n")?;
    }
    writeln!(
        w,
        "{} pairs of \"no monitor\" (and the generator under the enforce scope's Landlock \
         layer alone, no monitor) and a fresh daemon (idle: no agent, no syscall hook \
         attached; then the generator as a tagged agent, audit and enforce), back to back, the \
         order alternating from pair to pair; each configuration the fastest of {RUNS} \
         generator runs (noise only adds time). Median over the pairs of the ratio to the \
         pair's \"no monitor\":\n",
        idle.pairs.len(),
    )?;
    writeln!(
        w,
        "| configuration | getpid | openat+close | UDP socket+connect+close | fork+execve |\n|---|---:|---:|---:|---:|"
    )?;
    let sides: [(&str, Side); 4] = [
        ("idle (no agent runs)", |p| &p.idle),
        ("tagged, audit", |p| &p.audit),
        ("tagged, enforce", |p| &p.enforce),
        (
            "Landlock alone: the enforce scope's layer, no monitor",
            |p| &p.landlock,
        ),
    ];
    for (name, side) in sides {
        let cell = |f: fn(&Ops) -> f64| {
            idle.ratio(side, f)
                .map_or_else(|| "—".to_string(), |x| format!("{x:.2}x"))
        };
        writeln!(
            w,
            "| {name} | {} | {} | {} | {} |",
            cell(|o| o.getpid),
            cell(|o| o.openat),
            cell(|o| o.udp),
            cell(|o| o.forkexec),
        )?;
    }
    if !idle.pairs.is_empty() {
        writeln!(
            w,
            "\nopenat+close per pair (ns): none / Landlock alone / idle / audit / enforce: {}.",
            idle.pairs
                .iter()
                .map(|p| format!(
                    "{:.0} / {:.0} / {:.0} / {:.0} / {:.0}",
                    p.none.openat,
                    p.landlock.openat,
                    p.idle.openat,
                    p.audit.openat,
                    p.enforce.openat
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )?;
    }
    Ok(())
}
