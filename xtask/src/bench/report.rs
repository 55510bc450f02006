//! The markdown report: tables, the targets with hit/miss, and docs/BENCHMARKS.md.

use std::{fmt::Write as _, fs, process::Command, time::Duration};

use anyhow::Context as _;

use super::{Delivery, LoadRun, Ops, Params, Results, Row};

pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile<T: Copy>(sorted: &[T], pct: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within the slice"
    )]
    let rank = ((pct / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn med_of(runs: &[Ops], f: impl Fn(&Ops) -> f64) -> Option<f64> {
    median(&mut runs.iter().map(f).collect::<Vec<_>>())
}

type Field = fn(&Ops) -> f64;
const FIELDS: [(&str, Field); 4] = [
    ("getpid", |o| o.getpid),
    ("openat+close", |o| o.openat),
    ("UDP socket+connect+close", |o| o.udp),
    ("fork+execve /bin/true", |o| o.forkexec),
];

fn ratio(row: &Row, base: &Row, f: Field) -> Option<f64> {
    Some(med_of(&row.runs, f)? / med_of(&base.runs, f)?)
}

fn delivery_cell(d: Option<&Delivery>) -> String {
    d.map_or_else(
        || "n/a".to_string(),
        |d| {
            let counted = if d.counted > 0 {
                format!(" (+{} counted)", d.counted)
            } else {
                String::new()
            };
            format!(
                "{}{counted}/{} · {}/{} · {}/{} · lost {}",
                d.open.0, d.open.1, d.conn.0, d.conn.1, d.exec.0, d.exec.1, d.lost
            )
        },
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[expect(clippy::cast_precision_loss, reason = "ns and KiB fit f64 well enough")]
fn f(v: u64) -> f64 {
    v as f64
}

fn hit(ok: bool) -> &'static str {
    if ok { "**hit**" } else { "**MISS**" }
}

/// The whole report (without the document's preamble).
#[expect(clippy::too_many_lines, reason = "one table after the other")]
pub fn render(res: &Results, params: &Params, took: Duration) -> anyhow::Result<String> {
    let mut s = String::new();
    let w = &mut s;
    let base = res.rows.first().context("no overhead rows")?;
    writeln!(
        w,
        "### 1. Syscall overhead\n\nMedian ns/op of {} runs per configuration ({} iterations of \
         getpid, openat+close and UDP socket+connect+close, {} of fork+execve), rounds \
         interleaved with the baseline; ratio to \"no monitor\" in brackets. Events: \
         delivered/generated for openat · connect · execve, summed over the runs, and events \
         the tool reported lost. agent-monitor reports an open once per process, file and \
         access per second and counts the repeats (its `deduplicated` counter, all \
         files of the run, shown as \"counted\").\n",
        params.rounds, params.iters, params.exec_iters
    )?;
    write!(w, "| configuration |")?;
    for (name, _) in FIELDS {
        write!(w, " {name} |")?;
    }
    writeln!(w, " events delivered/generated |")?;
    writeln!(w, "|---|---:|---:|---:|---:|---|")?;
    for row in &res.rows {
        write!(w, "| {} |", row.name)?;
        if row.runs.is_empty() {
            let why = row.error.as_deref().unwrap_or("not run");
            writeln!(w, " — | — | — | — | not measured: {} |", one_line(why))?;
            continue;
        }
        for (_, field) in FIELDS {
            let m = med_of(&row.runs, field).unwrap_or(f64::NAN);
            let x = ratio(row, base, field).unwrap_or(f64::NAN);
            write!(w, " {m:.0} ({x:.2}x) |")?;
        }
        let mut cell = delivery_cell(row.delivery.as_ref());
        if let Some(e) = &row.error {
            write!(
                cell,
                " ({} of {} runs failed, first: {})",
                params.rounds - row.runs.len(),
                params.rounds,
                one_line(e)
            )?;
        }
        writeln!(w, " {cell} |")?;
    }
    if res.other_monitors > 0 {
        writeln!(
            w,
            "\n{} other `agent-monitor run` process(es) of other developers were running during \
             this bench: their hooks are attached for every process, so \"no monitor\" already \
             pays their untagged cost.",
            res.other_monitors
        )?;
    }
    if res.audit_quiet {
        writeln!(
            w,
            "\nauditd has run on this machine since boot, so the kernel gives every new task an \
             audit context that every syscall pays for. A `never,task` audit rule kept the \
             generator out of it in every configuration but auditd's own (removed at the end)."
        )?;
    } else {
        writeln!(
            w,
            "\nNo `never,task` audit rule was added (audit rules were present or auditctl is \
             missing): if auditd ran since boot, every configuration pays the kernel's audit \
             context on every syscall."
        )?;
    }

    writeln!(
        w,
        "\n### 2. Throughput (tagged generator on CPU 0, daemon on CPU 1, audit scope)\n"
    )?;
    writeln!(
        w,
        "| syscall | target/s | achieved/s | generated | emitted | dropped | records | daemon CPU (1 core = 100%) | drain after run | daemon RSS |"
    )?;
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for l in &res.load {
        let target = if l.target == 0 {
            "max".to_string()
        } else {
            l.target.to_string()
        };
        if !l.alive {
            writeln!(
                w,
                "| {} | {target} | — | — | — | — | — | — | **daemon died** | — |",
                l.kind
            )?;
            continue;
        }
        writeln!(
            w,
            "| {} | {target} | {:.0} | {} | {} | {} | {} | {:.0}% | {:.0} ms | {:.1} MiB |",
            l.kind,
            l.achieved,
            l.generated,
            l.emitted,
            l.dropped,
            l.records,
            l.cpu_frac * 100.0,
            ms(l.drain),
            f(l.rss_kib) / 1024.0
        )?;
    }
    if let Some(e) = &res.load_error {
        writeln!(w, "\nThroughput stopped early: {}", one_line(e))?;
    }
    let sustained = res
        .load
        .iter()
        .filter(|l| l.alive && l.dropped == 0 && l.emitted > 0)
        .map(|l| l.achieved)
        .fold(0.0, f64::max);
    let beyond: Vec<&LoadRun> = res.load.iter().filter(|l| l.dropped > 0).collect();
    writeln!(
        w,
        "\nHighest rate with zero drops: **{sustained:.0} events/s**. {}",
        if beyond.is_empty() {
            "No run dropped an event: the generator, not the daemon, was the limit.".to_string()
        } else {
            format!(
                "Beyond it {} run(s) dropped events (counted by the kernel, reported in status); \
                 the daemon {}.",
                beyond.len(),
                if res.load.iter().all(|l| l.alive) {
                    "stayed up"
                } else {
                    "DIED"
                }
            )
        }
    )?;

    writeln!(
        w,
        "\n### 3. Enforcement (enforce scope, onViolation: kill-process)\n"
    )?;
    writeln!(
        w,
        "| violation | decided in | n | outcome | p50 | p99 | max |\n|---|---|---:|---|---:|---:|---:|"
    )?;
    let mut kill_p99 = None;
    for v in &res.violations {
        if let Some(e) = &v.error {
            writeln!(
                w,
                "| {} | — | {} | failed: {} | — | — | — |",
                v.kind,
                v.count,
                one_line(e)
            )?;
            continue;
        }
        let mut lat = v.lat_ns.clone();
        lat.sort_unstable();
        let pct =
            |q| percentile(&lat, q).map_or("—".to_string(), |n| format!("{:.3} ms", f(n) / 1e6));
        let (what, outcome) = match v.kind {
            "read" => (
                "Landlock refuses (EACCES), then the daemon kills (kill-process): read outside files.read, syscall to death",
                format!(
                    "{} killed, {} never killed within 2 s",
                    v.killed, v.timeouts
                ),
            ),
            "deny" => (
                "kernel (files.deny inside the readable tree, sys_exit_openat): syscall to death",
                format!(
                    "{} killed, syscall returned {} time(s){}",
                    v.killed,
                    v.returned,
                    if v.returned == 0 && v.killed == v.count {
                        " (verified: never)"
                    } else {
                        " **(leak)**"
                    }
                ),
            ),
            _ => (
                "kernel (connect4 outside network.connect): connect duration",
                format!("{} of {} refused with EPERM", v.eperm, v.count),
            ),
        };
        if v.kind == "read" {
            kill_p99 = percentile(&lat, 99.0);
        }
        writeln!(
            w,
            "| {} | {what} | {} | {outcome} | {} | {} | {} |",
            v.kind,
            v.count,
            pct(50.0),
            pct(99.0),
            pct(100.0)
        )?;
    }

    let mut idle: Vec<f64> = res.idle_rss_kib.iter().map(|&k| f(k) / 1024.0).collect();
    let idle = median(&mut idle);
    let mut attach: Vec<f64> = res.attach.iter().map(|&d| ms(d)).collect();
    let attach = median(&mut attach);
    let load_peak = res.load.iter().max_by_key(|l| l.rss_kib);
    let load_rss = load_peak.map(|l| f(l.rss_kib) / 1024.0);
    // CPU seconds per event x 100k events/s = the share of a core that rate costs.
    let mut per100k: Vec<f64> = res
        .load
        .iter()
        .filter(|l| l.alive && l.dropped == 0 && l.emitted >= 10_000)
        .map(|l| l.cpu_secs / f(l.emitted) * 100_000.0 * 100.0)
        .collect();
    let per100k = median(&mut per100k);
    let opt =
        |v: Option<f64>, unit: &str| v.map_or("—".to_string(), |v| format!("{v:.1} {unit}"));
    writeln!(w, "\n### 4. The daemon\n\n| metric | value |\n|---|---:|")?;
    let parts = |p: &[u64; 3]| {
        format!(
            "anon {:.1} / file {:.1} / shmem {:.1} MiB",
            f(p[0]) / 1024.0,
            f(p[1]) / 1024.0,
            f(p[2]) / 1024.0
        )
    };
    writeln!(
        w,
        "| RSS idle (median of {} starts; last: {}, of which eBPF mappings {:.1} MiB) | {} |",
        res.idle_rss_kib.len(),
        parts(&res.idle_rss_parts),
        f(res.idle_bpf_kib) / 1024.0,
        opt(idle, "MiB")
    )?;
    writeln!(
        w,
        "| RSS at load (max during throughput; {}) | {} |",
        load_peak.map_or(String::new(), |l| parts(&l.rss_parts)),
        opt(load_rss, "MiB")
    )?;
    writeln!(
        w,
        "| CPU per 100k events/s (median of zero-drop runs) | {} |",
        opt(per100k, "% of a core")
    )?;
    writeln!(
        w,
        "| start to all hooks attached (median of {} starts) | {} |",
        res.attach.len(),
        opt(attach, "ms")
    )?;
    if !res.failed_hooks.is_empty() {
        writeln!(
            w,
            "| hooks that did not attach | {} |",
            res.failed_hooks.join(", ")
        )?;
    }

    let mut attach_sys = res.syscall_attach_ms.clone();
    let mut detach_sys = res.syscall_detach_ms.clone();
    if !attach_sys.is_empty() {
        writeln!(
            w,
            "\nThe syscall tracepoints are attached only while an agent runs. Attaching them \
             when the first agent starts took {} (median of {}, as the daemon measures it; the \
             agent's `exec` waits for it); detaching them after the last one ended took {} \
             (each link's close waits for RCU grace periods; nothing waits for it).",
            opt(median(&mut attach_sys), "ms"),
            attach_sys.len(),
            opt(median(&mut detach_sys), "ms"),
        )?;
    }

    super::idle::render(w, &res.idle)?;

    // Targets: the paired measurement when it ran (one run per configuration per round
    // cannot resolve a few percent on this VM), else the table's rows.
    let paired = |side: super::idle::Side, row: usize| {
        res.idle.ratio(side, |o| o.openat).or_else(|| {
            res.rows
                .get(row)
                .and_then(|row| ratio(row, base, FIELDS[1].1))
        })
    };
    let idle_ratio = paired(|p| &p.idle, 1);
    let untagged_row = res.rows.get(2);
    let untagged = untagged_row.and_then(|row| ratio(row, base, FIELDS[1].1));
    let floor = untagged_row.and_then(|row| ratio(row, base, FIELDS[0].1));
    let audit_row = res.rows.get(3);
    let enforce = paired(|p| &p.enforce, 4);
    let audit = paired(|p| &p.audit, 3);
    let audit_lossless = audit_row
        .and_then(|row| row.delivery)
        // Reported or counted (the issue allows counting repeats within a short window
        // instead of reporting each), and nothing lost.
        .is_some_and(|d| d.lost == 0 && d.open.0 + d.counted >= d.open.1);
    super::dns::render(w, &res.dns)?;
    super::realwork::render(w, &res.realwork)?;
    super::capacity::render(w, &res.capacity)?;
    super::scale::render(w, &res.scale)?;
    super::export::render(w, &res.export)?;
    super::calls::render(w, &res.calls)?;
    super::approve::render(w, &res.approve)?;
    writeln!(w, "\n### Targets\n\n| target | measured | |\n|---|---|---|")?;
    let line = |w: &mut String, t: &str, m: String, ok: Option<bool>| {
        let verdict = ok.map_or("not measured", hit);
        writeln!(w, "| {t} | {m} | {verdict} |")
    };
    line(
        w,
        "idle (no agent runs) openat+close ≤ 1.02x",
        idle_ratio.map_or("—".into(), |x| format!("{x:.2}x")),
        idle_ratio.map(|x| x <= 1.02),
    )?;
    writeln!(
        w,
        "| untagged while an agent runs: openat+close as close to the slow-path floor as \
         measurable | {} (floor: getpid {}) | shown |",
        untagged.map_or("—".into(), |x| format!("{x:.2}x")),
        floor.map_or("—".into(), |x| format!("{x:.2}x")),
    )?;
    // What Landlock itself costs (the enforce scope's layer, no monitor), and the monitor's
    // share over it: enforce over Landlock alone, pair by pair.
    let landlock = res.idle.ratio(|p| &p.landlock, |o| o.openat);
    let over_landlock = median(
        &mut res
            .idle
            .pairs
            .iter()
            .map(|p| p.enforce.openat / p.landlock.openat)
            .collect::<Vec<_>>(),
    );
    line(
        w,
        "tagged enforce openat+close ≤ 1.30x",
        format!(
            "{} (Landlock alone, no monitor: {}; enforce over Landlock alone: {})",
            enforce.map_or("—".into(), |x| format!("{x:.2}x")),
            landlock.map_or("—".into(), |x| format!("{x:.2}x")),
            over_landlock.map_or("—".into(), |x| format!("{x:.2}x")),
        ),
        enforce.map(|x| x <= 1.30),
    )?;
    line(
        w,
        "tagged audit openat ≤ 1.25x no monitor, zero lost",
        format!(
            "{}, {}",
            audit.map_or("—".into(), |x| format!("{x:.2}x")),
            delivery_cell(audit_row.and_then(|row| row.delivery.as_ref()))
        ),
        audit.map(|x| x <= 1.25 && audit_lossless),
    )?;
    line(
        w,
        "≥ 1M events/s sustained, zero drops",
        format!("{sustained:.0} events/s"),
        (!res.load.is_empty()).then_some(sustained >= 1e6),
    )?;
    let capacity = res.capacity.unresolved();
    line(
        w,
        "daemon ≥ 2M events/s per core without path resolution (connect, in-process)",
        capacity.map_or("—".into(), |v| format!("{v:.0} events/s")),
        capacity.map(|v| v >= super::capacity::TARGET),
    )?;
    line(
        w,
        "userspace-path kill p99 ≤ 5 ms",
        kill_p99.map_or("—".into(), |n| format!("{:.3} ms", f(n) / 1e6)),
        kill_p99.map(|n| n <= 5_000_000),
    )?;
    let burst = res.scale.bursts.iter().map(|b| (b.ok, b.n));
    let (ok, n) = burst.fold((0, 0), |(a, b), (ok, n)| (a + ok, b + n));
    line(
        w,
        "task starts released at once all succeed",
        format!("{ok} of {n}"),
        (n > 0).then_some(ok == n),
    )?;
    line(
        w,
        "RSS ≤ 32 MiB idle",
        opt(idle, "MiB"),
        idle.map(|m| m <= 32.0),
    )?;
    line(
        w,
        "start to attached ≤ 500 ms",
        opt(attach, "ms"),
        attach.map(|m| m <= 500.0),
    )?;
    writeln!(w, "\nThe bench took {:.0} s.", took.as_secs_f64())?;
    Ok(s)
}

fn one_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("").replace('|', "/");
    if l.len() > 400 {
        format!("{}…", &l[..l.floor_char_boundary(400)])
    } else {
        l
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// docs/BENCHMARKS.md: what was measured, how, on what, then the report.
pub fn document(report: &str, quick: bool) -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown");
    format!(
        "# Benchmarks\n\n\
         Produced by `cargo xtask bench{}` (as root); rerun it to refresh this file.\n\n\
         - machine: {} CPUs, {model}\n- kernel: {}\n- date: {}\n\n\
         ## Method\n\n\
         - The load generator (`bench/`, package `agent-monitor-bench`) makes raw syscalls in a \
         loop and prints ns/op as JSON: getpid (the floor, not monitored), openat+close of an \
         existing file, UDP socket+connect+close to 127.0.0.1, fork+execve of /bin/true. It \
         runs on CPU 0, the monitor under test (daemon, auditd or bpftrace) on CPU 1.\n\
         - Each round runs every configuration once, in the same order, starting with \"no \
         monitor\"; the tables give medians over the rounds and ratios of medians, because \
         other developers' builds and tests share this machine.\n\
         - agent-monitor runs from a release build with `--quiet` (the audit log still gets \
         every record). Tagged runs go through `agent-monitor exec --scope`; delivered events \
         are the audit log's records for the generator's file, port and /bin/true, lost events \
         the kernel's `dropped` counter from `GET /v1/status`.\n\
         - auditd: `-a always,exit -F arch=b64 -S openat -S connect -F exe=<generator>` and \
         `-S execve -F exe=/usr/bin/true` (audit has no cgroup filter; exe is its narrowest), \
         backlog 8192, its own log file; delivered = PATH records of the file, connect and \
         execve SYSCALL records; lost = `auditctl -s` lost.\n\
         - bpftrace: sys_enter_openat/connect/execve tracepoints filtered with `cgroup == <id>` \
         of the generator's cgroup, one printf per event; lost = its \"Lost N events\".\n\
         - Throughput: a tagged generator paced at a target rate (0 = as fast as it can) for a \
         fixed time, with openat+close (one file event each) and with fchdir (a cheaper \
         monitored syscall, to load the daemon beyond what openat can on one core). \
         Emitted/dropped are the kernel's counters, records the daemon's; drain is how long \
         the daemon still worked after the generator stopped. CPU is the daemon's \
         utime+stime from /proc over the run.\n\
         - Enforcement: the generator forks a child per violation; the child stores \
         CLOCK_MONOTONIC just before the syscall in shared memory and, if the syscall returns, \
         a marker; the parent watches the child's pidfd and takes the time it sees it dead. \
         `read` is a read outside `files.read` (only the daemon decides it), `deny` a file in \
         `files.deny` (the kernel kills at sys_exit_openat: the marker must never be set), \
         `connect` a UDP connect outside `network.connect` (EPERM from the kernel).\n\
         - Idle and untagged: \"idle\" is the daemon up with no agent, once it reports its \
         syscall tracepoints detached; \"untagged\" is the generator outside any agent while \
         an agent (a sleeping task) runs, so that they are attached. The idle target is \
         judged, as are the tagged ones, on the paired measurement below the table (fastest \
         of several runs per configuration, order alternating), not on the table's rows.\n\
         - The daemon: VmRSS from /proc 300 ms after each start (once idle); start to \
         attached is spawn to the first `GET /v1/status` answer (the daemon only answers once its hooks are \
         attached; failed hooks are listed).\n\
         - Real work: git (init, three commits of a generated tree, log, gc, local clone), \
         Python (compileall of a generated package, then a module importing all of it) and \
         tar with gzip (czf, xzf, rm -rf), each timed as a whole `sh -c` on a fresh copy of its \
         input, with no monitor, untagged under a running daemon while another agent (a \
         sleeping task) runs, and tagged in an audit and in an enforce scope (`onViolation: kill-agent`) that allows exactly what the workload \
         needs; violation records are those the daemon wrote for the task (false positives).\n\
         - Capacity: `agent-monitor bench-pipeline --kind net|file|exec` (hidden) loads the \
         eBPF object's maps without loading or attaching a program, registers one task of its \
         own cgroup in an audit scope that allows every event, and feeds ring-buffer records \
         built in memory (the `agent-monitor-common` wire structs, as the kernel fills them, \
         of its own pid) to the reader's handler in drains of 1024, after 20,000 untimed; it \
         waits until the writer thread has written every record (to /dev/null) and prints \
         events per CPU second of the process (`CLOCK_PROCESS_CPUTIME_ID`), of the pipeline's \
         thread, and of the decoder alone. It runs pinned to CPU 1.\n\n\
         ## Results\n\n{report}",
        if quick { " --quick" } else { "" },
        sh("nproc", &[]),
        sh("uname", &["-r"]),
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}
