//! `onViolation: ask`: how long a held agent waits after a person approves. An agent opens a
//! file outside its scope again and again (each open is held); the bench waits until the
//! request is listed, stamps `CLOCK_MONOTONIC`, approves it through the socket (a fresh
//! connection, as `agent-monitor approve` makes), and the agent stamps `CLOCK_MONOTONIC` as
//! its open returns. Approve-to-resume is the difference: the request, the daemon's check
//! of the approver, the resume (every thread settled, SIGCONT) and the agent's wake-up.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Env,
    daemon::Daemon,
    report::{median, percentile},
};

const SCOPE: &str = "bench-ask";

/// The agent: opens the file `n` times, a `CLOCK_MONOTONIC` stamp (ns) after each.
const AGENT: &str = "import sys, time\n\
    path, n = sys.argv[1], int(sys.argv[2])\n\
    for _ in range(n):\n    open(path).close()\n    print(time.monotonic_ns(), flush=True)\n";

#[derive(Debug, Default)]
pub struct Approve {
    /// Approve-to-resume, ns.
    pub lat_ns: Vec<u64>,
    /// Holds that were approved but whose agent never resumed within 10 s.
    pub lost: u64,
    pub error: Option<String>,
}

pub fn run(env: &Env, approvals: u64, out: &mut Approve) {
    if let Err(e) = measure(env, approvals, out) {
        out.error = Some(format!("{e:#}"));
    }
}

fn scope_yaml() -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: {SCOPE}, owner: bench@example.org}}\n\
         spec:\n  mode: enforce\n  onViolation: ask\n  approval: {{timeout: 30s}}\n  exec: {{allow: [/usr/bin/python3*]}}\n"
    )
}

fn measure(env: &Env, approvals: u64, out: &mut Approve) -> anyhow::Result<()> {
    let scopes = env.dir.join("approve-scopes");
    fs::create_dir_all(&scopes).with_context(|| format!("creating {}", scopes.display()))?;
    fs::write(scopes.join(format!("{SCOPE}.yaml")), scope_yaml()).context("writing the scope")?;
    let d = Daemon::start(
        &env.daemon,
        &env.dir.join("approve"),
        &scopes,
        &env.name,
        env.mon_cpu(),
        &[],
    )?;
    let mut agent = Command::new(&env.daemon);
    agent
        .arg("exec")
        .arg("--socket")
        .arg(d.socket())
        .args([
            "--scope",
            SCOPE,
            "--",
            "/usr/bin/python3",
            "-I",
            "-c",
            AGENT,
        ])
        .arg(&env.other)
        .arg(approvals.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    super::sys::place(&mut agent, env.gen_cpu(), None)?;
    let mut child = agent.spawn().context("starting the agent")?;
    let stdout = child.stdout.take().context("the agent's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let result = (|| {
        for _ in 0..approvals {
            let id = wait_pending(d.socket())?;
            let t0 = monotonic_ns();
            post(d.socket(), &format!("/v1/holds/{id}/approve"))?;
            let Some(line) = lines.next() else {
                out.lost += 1;
                bail!("the agent ended before its open returned");
            };
            let t1: u64 = line
                .context("reading the agent")?
                .trim()
                .parse()
                .context("the agent's stamp")?;
            out.lat_ns.push(t1.saturating_sub(t0));
        }
        anyhow::Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The id of the one pending request, once it is listed.
fn wait_pending(socket: &Path) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = super::sys::get_json(socket, "/v1/holds")?;
        if let Some(id) = v.get(0).and_then(|h| h["id"].as_u64()) {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("no request was listed within 10 s");
        }
        thread::sleep(Duration::from_micros(500));
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// One POST with an empty JSON body on a fresh connection; fails unless 200.
fn post(socket: &Path, path: &str) -> anyhow::Result<()> {
    let (code, body) = super::sys::http_request(socket, "POST", path, Some("{}"))?;
    if code != 200 {
        bail!("POST {path}: HTTP {code}: {body}");
    }
    Ok(())
}

/// `### 11. Approvals`.
pub fn render(w: &mut String, a: &Approve) -> std::fmt::Result {
    writeln!(
        w,
        "\n### 11. Approvals (`onViolation: ask`: an agent's out-of-scope open held, approved through the socket)\n"
    )?;
    if let Some(err) = &a.error {
        writeln!(w, "Error: {err}")?;
        if a.lat_ns.is_empty() {
            return Ok(());
        }
    }
    let mut sorted = a.lat_ns.clone();
    sorted.sort_unstable();
    #[expect(clippy::cast_precision_loss, reason = "ns fit f64 well enough")]
    let fmt = |q: f64| {
        percentile(&sorted, q).map_or("—".to_string(), |n| format!("{:.3} ms", n as f64 / 1e6))
    };
    #[expect(clippy::cast_precision_loss, reason = "ns fit f64 well enough")]
    let mid = median(&mut sorted.iter().map(|&n| n as f64).collect::<Vec<_>>())
        .map_or("—".to_string(), |n| format!("{:.3} ms", n / 1e6));
    writeln!(
        w,
        "| operation | n | median | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|"
    )?;
    writeln!(
        w,
        "| approve-to-resume (POST /v1/holds/ID/approve sent → the held open returns) | {} | {mid} | {} | {} | {} |",
        sorted.len(),
        fmt(50.0),
        fmt(99.0),
        fmt(100.0)
    )?;
    if a.lost > 0 {
        writeln!(w, "\n{} approved holds never resumed.", a.lost)?;
    }
    Ok(())
}
