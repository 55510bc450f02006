//! The real-work section of the report.

use super::*;

pub(super) fn med(v: &[f64]) -> Option<f64> {
    median(&mut v.to_vec())
}

/// The median of one configuration's runs.
pub(super) fn med_runs(v: &[Option<f64>]) -> Option<f64> {
    median(&mut v.iter().flatten().copied().collect::<Vec<_>>())
}

/// The median over the rounds of `v`'s run divided by "no monitor"'s run of the same round:
/// the machine's speed drifts from round to round (other VMs), much less within one.
pub(super) fn paired_ratio(v: &[Vec<Option<f64>>; 4], col: usize) -> Option<f64> {
    let mut r: Vec<f64> = v[col]
        .iter()
        .zip(&v[0])
        .filter_map(|(x, b)| Some(x.as_ref()? / b.as_ref()?))
        .collect();
    median(&mut r)
}

/// The median of per-run counts, or "—" when there are none.
pub(super) fn count(v: &[u64]) -> String {
    let mut v = v.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => "—".to_string(),
        n if n % 2 == 1 => v[n / 2].to_string(),
        n => v[n / 2 - 1].midpoint(v[n / 2]).to_string(),
    }
}

/// `### 6. Real work`.
pub fn render(w: &mut String, rw: &RealWork) -> std::fmt::Result {
    writeln!(
        w,
        "\n### 6. Real work (wall time of real workloads, ratio to \"no monitor\")\n\n\
         Median of {} run(s) per configuration, rounds interleaved; the ratio is the median over \
         the rounds of a run's time divided by the same round's \"no monitor\" run (this VM's \
         speed drifts from round to round with its neighbours'). The workload runs on CPU 0 \
         (`sh -c`, directly or through `agent-monitor exec --scope`), the daemon on CPU 1. Each \
         workload has its own audit and enforce scope (`onViolation: kill-agent`) allowing \
         exactly what it needs: its programs, its input, `$HOME`, and writes in its run \
         directory. Every violation record is therefore a false positive. Held: operations the \
         kernel stopped (SIGSTOP) until the daemon had judged their path. The workspace is on \
         {}; every run works on a fresh copy of the generated input, made before the clock \
         starts.\n",
        rw.rounds,
        match rw.workspace_fs {
            Some("tmpfs") =>
                "a tmpfs of its own (this VM's disk is ext4 without a journal, \
                whose inode allocator slows down for up to 35 s after many deletions, more than \
                the monitor costs)",
            Some(fs) => fs,
            None => "—",
        }
    )?;
    if let Some(e) = &rw.error {
        let e = e.lines().next().unwrap_or("").replace('|', "/");
        return writeln!(w, "Not measured: {e}");
    }
    writeln!(
        w,
        "| workload | no monitor | daemon up, untagged | tagged, audit | tagged, enforce | \
         audit ≤ {:.2}x | enforce ≤ {:.2}x | violation records, all runs (audit / enforce) | held per run \
         (audit / enforce) | records per run (audit / enforce) | daemon CPU per run (audit / \
         enforce) |\n\
         |---|---:|---:|---:|---:|---|---|---|---|---:|---:|",
        TARGETS[0], TARGETS[1]
    )?;
    for row in &rw.rows {
        render_row(w, row)?;
    }
    writeln!(
        w,
        "\nCPU time of the workload (user + system of all its processes, `exec` included when \
         tagged; the kernel programs run inside it, the daemon's work and the time held do not, \
         nor does time the hypervisor steals), median and ratio to \"no monitor\" (paired by round, \
         as above):\n\n\
         | workload | no monitor | daemon up, untagged | tagged, audit | tagged, enforce |\n\
         |---|---:|---:|---:|---:|"
    )?;
    for row in &rw.rows {
        let c = cells(&row.cpu, &row.failed);
        writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            row.name, c[0], c[1], c[2], c[3]
        )?;
    }
    render_notes(w, rw)
}

/// "median s (ratio x)" per configuration, with the failed runs.
pub(super) fn cells(v: &[Vec<Option<f64>>; 4], failed: &[usize; 4]) -> Vec<String> {
    (0..4)
        .map(|col| {
            let cell = match (med_runs(&v[col]), paired_ratio(v, col)) {
                (Some(m), Some(x)) => format!("{m:.3} s ({x:.2}x)"),
                (Some(m), None) => format!("{m:.3} s"),
                _ => "—".to_string(),
            };
            if failed[col] > 0 {
                format!("{cell} **{} run(s) failed**", failed[col])
            } else {
                cell
            }
        })
        .collect()
}

/// One workload's line of the table.
pub(super) fn render_row(w: &mut String, row: &WorkRow) -> std::fmt::Result {
    let ratio = |col: usize| paired_ratio(&row.secs, col);
    let cells = cells(&row.secs, &row.failed);
    let target = |col: usize, t: f64| {
        if row.reference {
            return "n/a (reference)".to_string();
        }
        ratio(col).map_or("not measured".to_string(), |x| {
            if x <= t && row.failed[col] == 0 {
                "**hit**".to_string()
            } else {
                "**MISS**".to_string()
            }
        })
    };
    let viol = |n: u64| {
        if n == 0 {
            "0".to_string()
        } else {
            format!("**{n} (FALSE POSITIVES)**")
        }
    };
    let cpu = |v: &[f64]| med(v).map_or("—".to_string(), |s| format!("{:.0} ms", s * 1e3));
    writeln!(
        w,
        "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} |",
        row.name,
        cells[0],
        cells[1],
        cells[2],
        cells[3],
        target(2, TARGETS[0]),
        target(3, TARGETS[1]),
        viol(row.violations[0]),
        viol(row.violations[1]),
        count(&row.held[0]),
        count(&row.held[1]),
        count(&row.records[0]),
        count(&row.records[1]),
        cpu(&row.daemon_cpu[0]),
        cpu(&row.daemon_cpu[1]),
    )
}

/// What ran, what was not measured, what failed, and the false positives.
pub(super) fn render_notes(w: &mut String, rw: &RealWork) -> std::fmt::Result {
    writeln!(w, "\nWorkloads (`sh -c` in a fresh copy of the input):\n")?;
    for row in &rw.rows {
        writeln!(w, "- {}: `{}`", row.name, row.script)?;
    }
    match rw.held_source {
        Some(HeldSource::Metrics) => {
            writeln!(w, "\nHeld: the daemon's counter in `GET /metrics`.")?;
        }
        Some(HeldSource::Bpftrace) => writeln!(
            w,
            "\nHeld: the daemon exposes no held-operations counter in `GET /metrics`; counted \
             instead as the SIGCONTs the daemon sent (bpftrace on `signal:signal_generate`): it \
             sends one per held operation it judged in scope, to resume the process the kernel \
             stopped at the syscall's exit."
        )?,
        None => writeln!(
            w,
            "\nHeld: not measured (no counter in `GET /metrics`, and bpftrace could not count \
             them{}).",
            rw.held_error
                .as_deref()
                .map_or(String::new(), |e| format!(": {}", e.replace('\n', " ")))
        )?,
    }
    if let Some(steal) = rw.steal.filter(|&s| s >= 0.02) {
        writeln!(
            w,
            "\nThe hypervisor stole {:.0}% of this VM's CPU time during the section: wall times \
             are noisy, and the CPU-time table is the steadier measure of what the hooks cost.",
            steal * 100.0
        )?;
    }
    if rw.other_monitors > 0 {
        writeln!(
            w,
            "\n{} other `agent-monitor run` process(es) were running: every configuration, \"no \
             monitor\" included, paid their hooks, and the figures are noisier.",
            rw.other_monitors
        )?;
    }
    let failures: Vec<(&str, &str, &str)> = rw
        .rows
        .iter()
        .flat_map(|row| {
            row.errors
                .iter()
                .enumerate()
                .filter_map(move |(c, e)| Some((row.name, CONFIGS[c], e.as_deref()?)))
        })
        .collect();
    if !failures.is_empty() {
        writeln!(w, "\n**Failed runs** (first failure per configuration):\n")?;
        for (name, config, e) in failures {
            let e = e.replace('\n', " ").replace('|', "/");
            writeln!(w, "- {name}, {config}: {e}")?;
        }
    }
    if rw.rows.iter().any(|row| !row.findings.is_empty()) {
        writeln!(
            w,
            "\n**FINDING: violation records for in-scope work (false positives)**, distinct \
             records with their count over all runs:\n"
        )?;
        for row in &rw.rows {
            for ((mode, text), n) in &row.findings {
                writeln!(w, "- {} ({mode}), {n}x: {text}", row.name)?;
            }
        }
    } else if !rw.rows.is_empty() {
        writeln!(w, "\nNo violation record in any tagged run.")?;
    }
    Ok(())
}
