//! What tagged agents pay as the work grows: more agents, bigger scopes, many files.

use super::*;

/// 3. One generating agent among 1, 10, 100 tasks.
pub(super) fn agents(
    env: &Env,
    paths: &Paths,
    sizes: &Sizes,
    out: &mut Scale,
) -> anyhow::Result<()> {
    out.agents = sizes
        .agents
        .iter()
        .map(|&tasks| Agents {
            tasks,
            ..Agents::default()
        })
        .collect();
    for round in 0..sizes.rounds {
        eprintln!("bench: scale agents round {}/{}", round + 1, sizes.rounds);
        let (base, ()) = bracketed(env, "openat", sizes.secs, || {
            let d = start_daemon(env, "daemon-scale-agents", &paths.scopes)?;
            let mut fleet = Fleet::default();
            for row in &mut out.agents {
                fleet.grow(env, &d, "scale-audit", row.tasks - 1)?;
                d.settle()?;
                // Right before the tagged run: what every process pays with these tasks.
                row.untagged
                    .push(gen_ns(env, &Via::Direct(None), "openat", sizes.secs)?);
                let cpu0 = sys::cpu_secs(d.pid())?;
                let t0 = Instant::now();
                let ns = gen_ns(env, &Via::Agent(&d, "scale-audit"), "openat", sizes.secs)?;
                d.settle()?;
                row.cpu
                    .push((sys::cpu_secs(d.pid())? - cpu0) / t0.elapsed().as_secs_f64());
                row.ns.push(ns);
            }
            Ok(())
        })?;
        for row in &mut out.agents {
            if let Some(ns) = row.ns.last() {
                row.ratio.push(ns / base);
            }
        }
    }
    Ok(())
}

/// 4. Scopes of 10, 1,000, 4,092 file rules and as many network rules.
pub(super) fn rules(
    env: &Env,
    paths: &Paths,
    sizes: &Sizes,
    out: &mut Scale,
) -> anyhow::Result<()> {
    for &n in &sizes.rules {
        for mode in ["audit", "enforce"] {
            out.rules.push(Rules {
                count: n,
                mode,
                ..Rules::default()
            });
        }
    }
    for round in 0..sizes.rounds {
        eprintln!("bench: scale rules round {}/{}", round + 1, sizes.rounds);
        let before = gen_ns(env, &Via::Direct(None), "udp", sizes.secs)?;
        let (base_open, ns) = bracketed(env, "openat", sizes.secs, || {
            let d = start_daemon(env, "daemon-scale-rules", &paths.rules_scopes)?;
            out.rules_attach.push(d.attach);
            d.settle()?;
            out.rules_rss.push(sys::rss_kib(d.pid())?);
            let mut ns = Vec::new();
            for row in &mut out.rules {
                match rules_run(env, &d, row, sizes.secs) {
                    Ok(pair) => ns.push(Some(pair)),
                    Err(e) => {
                        eprintln!("bench: scale rules {} {}: {e:#}", row.count, row.mode);
                        row.error.get_or_insert(format!("{e:#}"));
                        ns.push(None);
                    }
                }
            }
            Ok(ns)
        })?;
        let base_udp = f64::midpoint(before, gen_ns(env, &Via::Direct(None), "udp", sizes.secs)?);
        for (row, ns) in out.rules.iter_mut().zip(ns) {
            if let Some((open, udp)) = ns {
                row.openat.push(open / base_open);
                row.udp.push(udp / base_udp);
            }
        }
    }
    Ok(())
}

/// One scope size: the task start, then (tagged, untagged) pairs for openat and UDP; returns
/// the tagged ns of each.
fn rules_run(env: &Env, d: &Daemon, row: &mut Rules, secs: f64) -> anyhow::Result<(f64, f64)> {
    let scope = rules_scope(row.count, row.mode);
    let t0 = Instant::now();
    let out = exec_cmd(env, d, &scope)
        .arg("/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .context("exec /bin/true")?;
    if !out.status.success() {
        bail!(
            "exec --scope {scope} -- /bin/true ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    row.start_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    let via = Via::Agent(d, &scope);
    let mut tagged = [0.0; 2];
    for (i, kind) in ["openat", "udp"].into_iter().enumerate() {
        let untagged = gen_ns(env, &Via::Direct(None), kind, secs)?;
        tagged[i] = gen_ns(env, &via, kind, secs)?;
        row.adjacent[i].push(tagged[i] / untagged);
    }
    // Every connect is a record: keep the audit log small between runs.
    d.settle()?;
    fs::write(&d.audit, "").context("truncating the audit log")?;
    Ok((tagged[0], tagged[1]))
}

/// One tagged run of the files generator in `scope`, and what the daemon spent on it.
fn files_run(
    env: &Env,
    d: &Daemon,
    args: &[String],
    scope: &str,
    row: &mut Files,
) -> anyhow::Result<()> {
    let (before, _) = d.settle()?;
    fs::write(&d.audit, "").context("truncating the audit log")?;
    let held0 = held_total(d);
    let cpu0 = sys::cpu_secs(d.pid())?;
    let (v, _) = env.generate(&Via::Agent(d, scope), args)?;
    let (after, drain) = d.settle()?;
    row.cpu.push(sys::cpu_secs(d.pid())? - cpu0);
    row.secs.push(v["secs"].as_f64().context("no secs")?);
    row.drain.push(drain);
    row.records.push(after.records - before.records);
    row.dropped.push(after.dropped - before.dropped);
    if let (Some(a), Some(b)) = (held0, held_total(d)) {
        row.held.push(b.saturating_sub(a));
    }
    row.rss_after.push(sys::rss_kib(d.pid())?);
    wait_tasks(d, 0, Duration::from_secs(30))?;
    d.settle()?;
    row.rss_ended.push(sys::rss_kib(d.pid())?);
    fs::write(&d.audit, "").context("truncating the audit log")?;
    Ok(())
}

/// 5. One task reads `sizes.files` distinct files once each.
pub(super) fn files(
    env: &Env,
    paths: &Paths,
    sizes: &Sizes,
    out: &mut Scale,
) -> anyhow::Result<()> {
    out.files = [
        "no monitor",
        "tagged, audit",
        "tagged, enforce",
        "tagged, enforce, every read held",
    ]
    .into_iter()
    .map(|config| Files {
        config,
        ..Files::default()
    })
    .collect();
    let args: Vec<String> = vec![
        "files".into(),
        "--file".into(),
        paths.tree.display().to_string(),
        "--count".into(),
        sizes.files.to_string(),
    ];
    let secs = |v: &serde_json::Value| v["secs"].as_f64().context("no secs");
    // Untimed: every run then finds the tree's dentries and inodes cached alike.
    env.generate(&Via::Direct(None), &args)?;
    for round in 0..sizes.rounds {
        eprintln!("bench: scale files round {}/{}", round + 1, sizes.rounds);
        let before = secs(&env.generate(&Via::Direct(None), &args)?.0)?;
        let d = start_daemon(env, "daemon-scale-files", &paths.scopes)?;
        for (row, scope) in
            out.files[1..]
                .iter_mut()
                .zip(["scale-audit", "scale-enforce", super::HELD_SCOPE])
        {
            files_run(env, &d, &args, scope, row)?;
        }
        drop(d);
        let base = f64::midpoint(before, secs(&env.generate(&Via::Direct(None), &args)?.0)?);
        for row in &mut out.files {
            if row.config == "no monitor" {
                row.secs.push(base);
            }
            if let Some(s) = row.secs.last() {
                row.ratio.push(s / base);
            }
        }
    }
    Ok(())
}
