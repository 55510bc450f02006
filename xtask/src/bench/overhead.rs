//! The syscall overhead table: the generator with no monitor, beside an idle daemon, as an
//! untagged process while an agent runs, as a tagged agent (audit and enforce), under
//! auditd and under bpftrace, round by round.

use super::*;

pub(super) fn overhead(
    env: &Env,
    params: &Params,
    r: &mut Results,
    auditd_ok: Result<(), String>,
    bpftrace_ok: Result<(), String>,
    quiet: &tools::AuditQuiet,
) -> anyhow::Result<()> {
    let mut rows = vec![
        Row::new("no monitor", false),
        Row::new("agent-monitor, idle (no agent runs)", false),
        Row::new("agent-monitor, untagged (an agent runs)", false),
        Row::new("agent-monitor, tagged, audit", true),
        Row::new("agent-monitor, tagged, enforce (all in scope)", true),
        Row::new("auditd (same syscalls, exe filter)", true),
        Row::new("bpftrace (tracepoints, cgroup filter)", true),
    ];
    rows[5].error = auditd_ok.err();
    rows[6].error = bpftrace_ok.err();
    let args = env.ops_args(params);
    let cgroup_id = fs::metadata(&env.cgroup)
        .with_context(|| format!("stat {}", env.cgroup.display()))?
        .ino();
    for round in 0..params.rounds {
        eprintln!("bench: overhead round {}/{}", round + 1, params.rounds);
        let (v, _) = env.generate(&Via::Direct(None), &args)?;
        rows[0].runs.push(Ops::from_json(&v)?);
        {
            let d = Daemon::start(
                &env.daemon,
                &env.dir.join("daemon"),
                &env.scopes,
                &env.name,
                env.mon_cpu(),
                &[],
            )?;
            r.attach.push(d.attach);
            r.failed_hooks.clone_from(&d.failed_hooks);
            // Idle: the syscall hooks, checked at start, are detached once no agent runs.
            d.wait_syscall_hooks(false)?;
            thread::sleep(Duration::from_millis(300));
            r.idle_rss_kib.push(sys::rss_kib(d.pid())?);
            r.idle_rss_parts = sys::rss_parts(d.pid())?;
            r.idle_bpf_kib = sys::bpf_rss_kib(d.pid());
            let (v, _) = env.generate(&Via::Direct(None), &args)?;
            rows[1].runs.push(Ops::from_json(&v)?);
            let sleeper = d.sleeper(&env.daemon, SLEEPER)?;
            if let Some(h) = d.wait_syscall_hooks(true)? {
                r.syscall_attach_ms
                    .push(h["last_attach_ms"].as_f64().unwrap_or(f64::NAN));
            }
            let (v, _) = env.generate(&Via::Direct(None), &args)?;
            rows[2].runs.push(Ops::from_json(&v)?);
            for (i, scope) in [(3, "bench-audit"), (4, "bench-enforce")] {
                let (before, _) = d.settle()?;
                d.take_records()?;
                // A failed tagged run (e.g. the agent killed for a violation it did not
                // commit) is a finding: keep it in the table and go on.
                let ops = match env
                    .generate(&Via::Agent(&d, scope), &args)
                    .and_then(|(v, _)| Ops::from_json(&v))
                {
                    Ok(ops) => ops,
                    Err(e) => {
                        eprintln!("bench: {scope} run failed: {e:#}");
                        let msg = format!("{e:#}").replace('\n', " ");
                        rows[i].error.get_or_insert(msg);
                        continue;
                    }
                };
                let (after, _) = d.settle()?;
                let records = d.take_records()?;
                let mut got = delivered(&records, &env.file, &ops, after.dropped - before.dropped);
                got.counted = after.deduplicated - before.deduplicated;
                rows[i].runs.push(ops);
                if let Some(t) = rows[i].delivery.as_mut() {
                    t.add(&got);
                }
            }
            drop(sleeper);
            if let Some(h) = d.wait_syscall_hooks(false)? {
                r.syscall_detach_ms
                    .push(h["last_detach_ms"].as_f64().unwrap_or(f64::NAN));
            }
        }
        if rows[5].error.is_none()
            && let Err(e) = under_auditd(env, &args, &mut rows[5], quiet)
        {
            rows[5].error = Some(format!("{e:#}"));
        }
        if rows[6].error.is_none()
            && let Err(e) = under_bpftrace(env, &args, cgroup_id, &mut rows[6])
        {
            rows[6].error = Some(format!("{e:#}"));
        }
    }
    r.rows = rows;
    Ok(())
}

/// What the daemon recorded of one generator run.
fn delivered(records: &[Value], file: &Path, ops: &Ops, dropped: u64) -> Delivery {
    let file = file.to_string_lossy();
    let (mut open, mut conn, mut exec) = (0, 0, 0);
    for rec in records {
        match rec["kind"].as_str() {
            Some("file") if rec["file"]["path"].as_str() == Some(&file) => open += 1,
            Some("connect") if rec["net"]["port"].as_u64() == Some(u64::from(PORT)) => {
                conn += 1;
            }
            Some("exec")
                if matches!(
                    rec["exec"]["path"].as_str(),
                    Some("/usr/bin/true" | "/bin/true")
                ) =>
            {
                exec += 1;
            }
            _ => {}
        }
    }
    Delivery {
        open: (open, ops.calls),
        conn: (conn, ops.calls),
        exec: (exec, ops.exec_calls),
        lost: dropped,
        counted: 0,
    }
}

fn under_auditd(
    env: &Env,
    args: &[String],
    row: &mut Row,
    quiet: &tools::AuditQuiet,
) -> anyhow::Result<()> {
    let _lifted = quiet.lift();
    let a = tools::Auditd::start(&env.dir.join("auditd"), &env.generator, env.mon_cpu())?;
    let (v, pid) = env.generate(&Via::Direct(Some(&env.cgroup)), args)?;
    let ops = Ops::from_json(&v)?;
    let (open, conn, exec) = a.count(&env.file, pid);
    let got = Delivery {
        open: (open, ops.calls),
        conn: (conn, ops.calls),
        exec: (exec, ops.exec_calls),
        lost: a.lost(),
        counted: 0,
    };
    drop(a);
    let _ = fs::remove_file(env.dir.join("auditd/audit.log"));
    row.runs.push(ops);
    if let Some(t) = row.delivery.as_mut() {
        t.add(&got);
    }
    Ok(())
}

fn under_bpftrace(env: &Env, args: &[String], cgroup_id: u64, row: &mut Row) -> anyhow::Result<()> {
    let b = tools::Bpftrace::start(&env.dir.join("bpftrace"), cgroup_id, env.mon_cpu())?;
    let (v, _) = env.generate(&Via::Direct(Some(&env.cgroup)), args)?;
    let ops = Ops::from_json(&v)?;
    let (open, conn, exec, lost) = b.finish(&env.file);
    row.runs.push(ops);
    if let Some(t) = row.delivery.as_mut() {
        t.add(&Delivery {
            open: (open, ops.calls),
            conn: (conn, ops.calls),
            exec: (exec, ops.exec_calls),
            lost,
            counted: 0,
        });
    }
    Ok(())
}
