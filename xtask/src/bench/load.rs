//! Throughput (tagged generator at fixed rates, drops counted) and enforcement latency
//! (syscall to kill or refusal).

use super::*;

pub(super) fn throughput(env: &Env, params: &Params, r: &mut Results) -> anyhow::Result<()> {
    let mut d = Daemon::start(
        &env.daemon,
        &env.dir.join("daemon-load"),
        &env.scopes,
        &env.name,
        env.mon_cpu(),
        &[],
    )?;
    let plan = params
        .openat_rates
        .iter()
        .map(|&rate| ("openat", rate))
        .chain(params.fchdir_rates.iter().map(|&rate| ("fchdir", rate)));
    for (kind, rate) in plan {
        eprintln!(
            "bench: throughput {kind} at {}",
            if rate == 0 {
                "full speed".to_string()
            } else {
                format!("{rate}/s")
            }
        );
        let (before, _) = d.settle()?;
        d.take_records()?;
        let cpu0 = sys::cpu_secs(d.pid())?;
        let target = if kind == "fchdir" {
            &env.data
        } else {
            &env.file
        };
        let args: Vec<String> = vec![
            "load".into(),
            "--file".into(),
            target.display().to_string(),
            "--rate".into(),
            rate.to_string(),
            "--secs".into(),
            params.load_secs.to_string(),
            "--kind".into(),
            kind.into(),
        ];
        let mut child = env
            .command(&Via::Agent(&d, "bench-audit"), &args)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the load generator")?;
        let (mut rss, mut rss_parts) = (0, [0; 3]);
        let pid = d.pid();
        let mut sample = |rss: &mut u64| {
            let now = sys::rss_kib(pid).unwrap_or(0);
            if now > *rss {
                *rss = now;
                rss_parts = sys::rss_parts(pid).unwrap_or_default();
            }
        };
        while child
            .try_wait()
            .context("waiting for the generator")?
            .is_none()
        {
            sample(&mut rss);
            thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().context("generator output")?;
        let v = sys::last_json(&String::from_utf8_lossy(&out.stdout))
            .with_context(|| format!("load generator: {}", String::from_utf8_lossy(&out.stderr)))?;
        let alive = d.alive();
        if !alive {
            r.load.push(LoadRun {
                kind,
                target: rate,
                alive,
                ..LoadRun::default()
            });
            bail!("the daemon died under load:\n{}", d.log());
        }
        let (after, drain) = d.settle()?;
        let cpu = sys::cpu_secs(d.pid())? - cpu0;
        sample(&mut rss);
        d.take_records()?;
        let secs = v["secs"].as_f64().unwrap_or(params.load_secs);
        r.load.push(LoadRun {
            kind,
            target: rate,
            achieved: v["rate"].as_f64().unwrap_or(0.0),
            generated: v["events"].as_u64().unwrap_or(0),
            emitted: after.emitted - before.emitted,
            dropped: after.dropped - before.dropped,
            records: after.records - before.records,
            cpu_secs: cpu,
            cpu_frac: cpu / (secs + drain.as_secs_f64()).max(1e-3),
            rss_kib: rss,
            rss_parts,
            drain,
            alive,
        });
    }
    Ok(())
}

pub(super) fn latency(env: &Env, params: &Params, res: &mut Results) {
    let d = match Daemon::start(
        &env.daemon,
        &env.dir.join("daemon-kill"),
        &env.scopes,
        &env.name,
        env.mon_cpu(),
        &[],
    ) {
        Ok(d) => d,
        Err(e) => {
            res.violations.push(Violations {
                kind: "all",
                error: Some(format!("{e:#}")),
                ..Violations::default()
            });
            return;
        }
    };
    let plan: [(&'static str, &Path, u64); 3] = [
        ("read", &env.other, params.kills),
        ("deny", &env.denied, params.denies),
        ("connect", &env.other, params.connects),
    ];
    for (kind, file, count) in plan {
        eprintln!("bench: enforcement, {count} violations of kind {kind}");
        let args: Vec<String> = vec![
            "violate".into(),
            "--kind".into(),
            kind.into(),
            "--file".into(),
            file.display().to_string(),
            "--port".into(),
            (PORT + 1).to_string(),
            "--count".into(),
            count.to_string(),
            "--timeout-ms".into(),
            "2000".into(),
        ];
        let mut v = Violations {
            kind,
            count,
            ..Violations::default()
        };
        match env.generate(&Via::Agent(&d, "bench-enforce"), &args) {
            Ok((j, _)) => {
                let n = |k: &str| j[k].as_u64().unwrap_or(0);
                v.killed = n("killed");
                v.returned = n("returned");
                v.timeouts = n("timeouts");
                v.eperm = n("eperm");
                v.lat_ns = j["lat_ns"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
            }
            Err(e) => v.error = Some(format!("{e:#}")),
        }
        res.violations.push(v);
    }
}
