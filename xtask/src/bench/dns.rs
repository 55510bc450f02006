//! DNS-name egress cost: the same lookups asked straight of a dnsmasq on a loopback address
//! (untagged) and by an agent whose scope has a `host:` rule (the kernel sends them to the
//! agent's resolver in the daemon, which judges, forwards to that dnsmasq, writes the answer
//! into the kernel map and replies). Both sides are the generator's `dns` mode.

use std::{
    net::UdpSocket,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Env, Params, Results, Via, daemon::Daemon};

/// dnsmasq listens here; the zone has one name.
const SERVER: &str = "127.53.250.1";
const NAME: &str = "bench.example.test";

#[derive(Debug, Default)]
pub struct DnsBench {
    /// Round trips straight to dnsmasq, ns.
    pub direct_ns: Vec<u64>,
    /// Round trips of an agent through the daemon's resolver, ns.
    pub daemon_ns: Vec<u64>,
    /// Lookups without an answer (direct, through the daemon).
    pub lost: (u64, u64),
    /// Answers that were not NOERROR through the daemon (a refusal would be a bug here).
    pub not_noerror: u64,
    pub error: Option<String>,
}

/// The scope of the agent that resolves: the one name, on some port.
pub fn scope_yaml(generator: &dyn std::fmt::Display) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: bench-dns, owner: bench@example.org}}\nspec:\n  mode: enforce\n  exec: {{allow: [{generator}]}}\n  network: {{connect: [{{host: {NAME}, ports: [443]}}]}}\n"
    )
}

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq() -> anyhow::Result<Dnsmasq> {
    let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let bin = if let Some(b) = bin {
        b
    } else {
        crate::install::apt_install(&["dnsmasq-base"])?;
        "/usr/sbin/dnsmasq"
    };
    let mut child = Command::new(bin)
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--pid-file=",
            "--local=/test/",
            "--local-ttl=300",
        ])
        .arg(format!("--listen-address={SERVER}"))
        .arg(format!("--host-record={NAME},127.0.0.1"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq")?;
    let probe = UdpSocket::bind("127.0.0.1:0").context("probe socket")?;
    probe.set_read_timeout(Some(Duration::from_millis(200)))?;
    // A question for `.` is enough to know it answers.
    let question = [0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("dnsmasq exited at start ({status})");
        }
        let _ = probe.send_to(&question, (SERVER, 53));
        let mut buf = [0u8; 512];
        if probe.recv_from(&mut buf).is_ok() {
            return Ok(Dnsmasq(child));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("dnsmasq did not answer on {SERVER}:53");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(env: &Env, params: &Params, res: &mut Results) {
    if let Err(e) = measure(env, params, &mut res.dns) {
        res.dns.error = Some(format!("{e:#}"));
    }
}

fn measure(env: &Env, params: &Params, out: &mut DnsBench) -> anyhow::Result<()> {
    let _dnsmasq = dnsmasq()?;
    let d = Daemon::start(
        &env.daemon,
        &env.dir.join("daemon-dns"),
        &env.scopes,
        &env.name,
        env.mon_cpu(),
        &["--dns-upstream", SERVER],
    )?;
    let half = (params.dns_lookups / 2).max(1);
    let args = |count: u64| -> Vec<String> {
        ["dns", "--server", SERVER, "--name", NAME, "--count"]
            .iter()
            .map(ToString::to_string)
            .chain([count.to_string(), "--timeout-ms".into(), "2000".into()])
            .collect()
    };
    eprintln!(
        "bench: DNS, {} lookups direct and {} through the daemon",
        2 * half,
        2 * half
    );
    // Interleaved halves, so a noisy moment hits both sides alike.
    for _ in 0..2 {
        let (v, _) = env.generate(&Via::Direct(None), &args(half))?;
        out.direct_ns.extend(lat(&v));
        out.lost.0 += v["errors"].as_u64().unwrap_or(0);
        let (v, _) = env.generate(&Via::Agent(&d, "bench-dns"), &args(half))?;
        out.daemon_ns.extend(lat(&v));
        out.lost.1 += v["errors"].as_u64().unwrap_or(0);
        out.not_noerror += v["count"].as_u64().unwrap_or(0)
            - v["noerror"].as_u64().unwrap_or(0)
            - v["errors"].as_u64().unwrap_or(0);
    }
    Ok(())
}

fn lat(v: &Value) -> Vec<u64> {
    v["lat_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// `### 5. DNS-name egress`: p50/p99 of both paths and what the daemon adds.
pub fn render(w: &mut String, d: &DnsBench) -> std::fmt::Result {
    use super::report::percentile;
    use std::fmt::Write as _;
    writeln!(
        w,
        "\n### 5. DNS-name egress (UDP lookups of one name, one at a time)\n\n| path | n | lost | p50 | p99 |\n|---|---:|---:|---:|---:|"
    )?;
    if let Some(e) = &d.error {
        let e = e.lines().next().unwrap_or("").replace('|', "/");
        return writeln!(w, "| — | — | — | failed: {e} | — |");
    }
    let mut direct = d.direct_ns.clone();
    let mut daemon = d.daemon_ns.clone();
    direct.sort_unstable();
    daemon.sort_unstable();
    #[expect(clippy::cast_precision_loss, reason = "display")]
    let us = |v: Option<u64>| v.map_or("—".to_string(), |n| format!("{:.1} µs", n as f64 / 1e3));
    for (name, lat, lost) in [
        ("direct to dnsmasq (untagged)", &direct, d.lost.0),
        (
            "agent with a host rule, through the daemon's resolver",
            &daemon,
            d.lost.1,
        ),
    ] {
        writeln!(
            w,
            "| {name} | {} | {lost} | {} | {} |",
            lat.len(),
            us(percentile(lat, 50.0)),
            us(percentile(lat, 99.0))
        )?;
    }
    let added = |q| {
        percentile(&daemon, q)
            .zip(percentile(&direct, q))
            .map(|(a, b)| a.saturating_sub(b))
    };
    writeln!(
        w,
        "| **added by the daemon** | | | {} | {} |",
        us(added(50.0)),
        us(added(99.0))
    )?;
    if d.not_noerror > 0 {
        writeln!(
            w,
            "\n{} answers through the daemon were not NOERROR.",
            d.not_noerror
        )?;
    }
    Ok(())
}
