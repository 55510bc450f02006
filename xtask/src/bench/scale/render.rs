//! The scale section of the report.

use std::{fmt::Write as _, time::Duration};

use super::{MAX_RULES, Scale};
use crate::bench::report::{median, percentile};

#[expect(
    clippy::cast_precision_loss,
    reason = "KiB and counts fit f64 well enough"
)]
fn f(v: u64) -> f64 {
    v as f64
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", f(kib) / 1024.0)
}

fn med(v: &[f64]) -> Option<f64> {
    median(&mut v.to_vec())
}

fn med_u(v: &[u64]) -> Option<f64> {
    median(&mut v.iter().map(|&x| f(x)).collect::<Vec<_>>())
}

fn med_d(v: &[Duration]) -> Option<f64> {
    median(&mut v.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>())
}

/// `x` formatted with `fmt`, or "—".
fn or_dash(x: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "—".to_string(), fmt)
}

/// The rule count as the table shows it.
fn rules_label(n: usize) -> String {
    if n == MAX_RULES {
        format!("{n} + {n} (the scope limits)")
    } else {
        format!("{n} + {n}")
    }
}

/// "1.20x (1.05x)": to "no monitor", and to the adjacent untagged run.
fn ratios(base: &[f64], adjacent: &[f64]) -> String {
    format!(
        "{} ({})",
        or_dash(med(base), |v| format!("{v:.2}x")),
        or_dash(med(adjacent), |v| format!("{v:.2}x"))
    )
}

/// `### 8. Scale`.
#[expect(clippy::too_many_lines, reason = "one table after the other")]
pub fn render(w: &mut String, s: &Scale) -> std::fmt::Result {
    let Some(sizes) = &s.sizes else {
        return Ok(());
    };
    writeln!(
        w,
        "\n### 8. Scale (cost as work grows)\n\n\
         One release daemon per part (CPU 1), `--quiet`; agents are `agent-monitor exec` tasks. \
         Ratios are to a \"no monitor\" run of the same round (no daemon at all), medians over \
         {} round(s); generator runs last {} s each, on CPU 0. Scopes `scale-audit` / \
         `scale-enforce` allow the generator, `sleep` and `true`, reads of the bench data and \
         of the file tree, and UDP to 127.0.0.1.",
        sizes.rounds, sizes.secs
    )?;
    if s.other_monitors > 0 {
        writeln!(
            w,
            "\n{} other `agent-monitor run` process(es) of other developers were running: \
             every process pays their untagged cost, \"no monitor\" included.",
            s.other_monitors
        )?;
    }
    for (part, e) in &s.errors {
        writeln!(w, "\n**{part} failed**: {}", e.lines().next().unwrap_or(""))?;
    }

    writeln!(
        w,
        "\n**Task starts at once.** {} shells wait on one pipe; closing its write end releases \
         them together, each then runs `agent-monitor exec --scope S -- /bin/true` (the client \
         retries with backoff: for 5 s while nobody answers, for 60 s while the daemon \
         answers busy). Wall: release to the last \
         `exec` exiting; ended: release until the daemon had ended and removed every task \
         (its sweep every 200 ms).\n",
        sizes.burst
    )?;
    writeln!(
        w,
        "| scope | starts | succeeded | failures | wall | per start p50 / p99 / max | all ended | \
         daemon CPU | daemon RSS before → peak |\n|---|---:|---:|---|---:|---:|---:|---:|---:|"
    )?;
    for b in &s.bursts {
        let failures = if b.failures.is_empty() {
            "none".to_string()
        } else {
            b.failures
                .iter()
                .map(|(why, n)| format!("{n}× {}", why.replace('|', "/")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let p = |q| or_dash(percentile(&b.lat_ms, q), |v| format!("{v:.0}"));
        writeln!(
            w,
            "| {} | {} | {} | {failures} | {:.2} s | {} / {} / {} ms | {} | {:.2} s | {} → {} |",
            b.scope,
            b.n,
            if b.ok == b.n {
                format!("**{}**", b.ok)
            } else {
                format!("**{} (MISS)**", b.ok)
            },
            b.wall.as_secs_f64(),
            p(50.0),
            p(99.0),
            p(100.0),
            b.ended.map_or("not within 60 s".to_string(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            )),
            b.cpu_secs,
            mib(b.rss_before),
            mib(b.rss_peak)
        )?;
    }

    writeln!(
        w,
        "\n**Live tasks.** Tasks `exec -- sleep 3600` in `scale-audit`, started 100 at a time; \
         RSS once the daemon's counters settle; idle CPU over the next second (its housekeeping: \
         the sweep every 200 ms reads the cgroups that changed); per task: (RSS − RSS with 0) / \
         tasks.\n\n| live tasks | daemon RSS | anon / file | descriptors | idle CPU (1 core = \
         100%) | RSS per task |\n|---:|---:|---:|---:|---:|---:|"
    )?;
    let zero = s.live.first().map(|l| l.rss_kib);
    let live_row = |w: &mut String, label: String, l: &super::Live| {
        let per = match zero {
            Some(z) if l.tasks > 0 => {
                #[expect(clippy::cast_precision_loss, reason = "task counts")]
                let n = l.tasks as f64;
                format!("{:.1} KiB", (f(l.rss_kib) - f(z)) / n)
            }
            _ => "—".to_string(),
        };
        writeln!(
            w,
            "| {label} | {} | {:.1} / {:.1} MiB | {} | {:.1}% | {per} |",
            mib(l.rss_kib),
            f(l.parts[0]) / 1024.0,
            f(l.parts[1]) / 1024.0,
            l.fds,
            l.idle_cpu * 100.0
        )
    };
    for l in &s.live {
        live_row(w, l.tasks.to_string(), l)?;
    }
    if let Some(l) = &s.live_after {
        live_row(w, "0 again (all ended)".to_string(), l)?;
    }

    writeln!(
        w,
        "\n**Concurrent agents.** One agent runs the generator (openat+close at full speed) \
         while the other tasks are alive and idle (`sleep`): 100 generators time-sharing CPU 0 \
         would measure the scheduler, not the monitor; idle tasks measure what each task adds \
         to another's syscalls and to the daemon. Daemon CPU over the generator run and its \
         drain. \"No monitor\" is the mean of a run before the round's daemon started and one \
         after it stopped; \"untagged\" a run outside any agent just before the tagged one, \
         the daemon and the tasks up.\n\n| agent tasks | openat+close tagged | untagged | \
         ratio to no monitor | tagged / untagged | daemon CPU |\n|---:|---:|---:|---:|---:|---:|"
    )?;
    for a in &s.agents {
        let adjacent: Vec<f64> = a.ns.iter().zip(&a.untagged).map(|(t, u)| t / u).collect();
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            a.tasks,
            or_dash(med(&a.ns), |v| format!("{v:.0} ns")),
            or_dash(med(&a.untagged), |v| format!("{v:.0} ns")),
            or_dash(med(&a.ratio), |v| format!("{v:.2}x")),
            or_dash(med(&adjacent), |v| format!("{v:.2}x")),
            or_dash(med(&a.cpu), |v| format!("{:.1}%", v * 100.0)),
        )?;
    }

    writeln!(
        w,
        "\n**Scope size.** One scope per size and mode, N generated `files.read` rules (half \
         existing files, half `DIR/gI/**/*.txt` globs) and N `network.connect` rules (distinct \
         10.x.y.z/32, TCP 443), besides the rules the generator needs; {MAX_RULES} is the most \
         one scope takes (8,192 entries per scope, 4,096 per list: a scope of 10,000 of either \
         is refused when loaded, naming the limit). Task start: `exec -- /bin/true`, wall. \
         Ratios: openat+close of an allowed file, UDP socket+connect+close to an allowed \
         port, to \"no monitor\" (the mean of a run before the round's daemon and one after) \
         and, in brackets, to an untagged run just before the tagged one.\n\n| file + network \
         rules | mode | task start | openat+close ratio | UDP connect ratio |\n\
         |---|---|---:|---:|---:|"
    )?;
    for r in &s.rules {
        if r.openat.is_empty() {
            writeln!(
                w,
                "| {} | {} | — | — | failed: {} |",
                rules_label(r.count),
                r.mode,
                r.error
                    .as_deref()
                    .and_then(|e| e.lines().next())
                    .unwrap_or("not run")
                    .replace('|', "/")
            )?;
            continue;
        }
        writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            rules_label(r.count),
            r.mode,
            or_dash(med(&r.start_ms), |v| format!("{v:.0} ms")),
            ratios(&r.openat, &r.adjacent[0]),
            ratios(&r.udp, &r.adjacent[1]),
        )?;
    }
    writeln!(
        w,
        "\nThe daemon with all these scopes loaded and no task: RSS {}, start to attached {}.",
        or_dash(med_u(&s.rules_rss), |v| format!("{:.1} MiB", v / 1024.0)),
        or_dash(med_d(&s.rules_attach), |v| format!("{v:.0} ms")),
    )?;

    writeln!(
        w,
        "\n**Many distinct files.** One task opens, reads and closes {} distinct files of a \
         generated tree (a tmpfs of its own; 1,000 per directory) once each; the generator \
         times the loop (\"no monitor\": the mean of a run before the round's daemon started \
         and one after it stopped; an untimed run first fills the dentry cache). Records and \
         dropped: the daemon's counters over the run; held: \
         operations stopped until the daemon judged them; drain: how long the daemon still \
         worked after the task's last read. In enforce, a directory every file of which the \
         scope lets the agent read costs one held read; \"every read held\" adds a \
         `**/*.key` deny glob, which could match a new file in any directory, so every \
         first read is held as before directories were found readable whole.\n\n| configuration | time | per file | ratio | \
         daemon CPU | drain | records | dropped | held | daemon RSS after | after the task \
         ended |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        sizes.files
    )?;
    for r in &s.files {
        #[expect(clippy::cast_precision_loss, reason = "a file count")]
        let n = sizes.files as f64;
        let tagged = r.config != "no monitor";
        let cell = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| {
            if tagged {
                or_dash(v, fmt)
            } else {
                "—".to_string()
            }
        };
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.config,
            or_dash(med(&r.secs), |v| format!("{v:.3} s")),
            or_dash(med(&r.secs), |v| format!("{:.1} µs", v / n * 1e6)),
            or_dash(med(&r.ratio), |v| format!("{v:.2}x")),
            cell(med(&r.cpu), &|v| format!("{v:.2} s")),
            cell(med_d(&r.drain), &|v| format!("{v:.0} ms")),
            cell(med_u(&r.records), &|v| format!("{v:.0}")),
            cell(med_u(&r.dropped), &|v| format!("{v:.0}")),
            cell(med_u(&r.held), &|v| format!("{v:.0}")),
            cell(med_u(&r.rss_after), &|v| format!("{:.1} MiB", v / 1024.0)),
            cell(med_u(&r.rss_ended), &|v| format!("{:.1} MiB", v / 1024.0)),
        )?;
    }
    Ok(())
}
