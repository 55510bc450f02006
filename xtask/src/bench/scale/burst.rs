//! Task starts released at once: every one must succeed.

use super::*;

/// 1. `sizes.burst` starts of `exec -- /bin/true`, in an audit and in an enforce scope.
pub(super) fn bursts(
    env: &Env,
    paths: &Paths,
    sizes: &Sizes,
    out: &mut Scale,
) -> anyhow::Result<()> {
    let d = start_daemon(env, "daemon-scale-burst", &paths.scopes)?;
    for scope in ["scale-audit", "scale-enforce"] {
        let b = burst(env, &d, scope, sizes.burst)?;
        eprintln!(
            "bench: scale burst {scope}: {}/{} in {:.2} s",
            b.ok,
            b.n,
            b.wall.as_secs_f64()
        );
        out.bursts.push(b);
    }
    Ok(())
}

fn burst(env: &Env, d: &Daemon, scope: &'static str, n: usize) -> anyhow::Result<Burst> {
    // The gate: every starter is a shell reading its stdin, the read end of one pipe whose
    // only write end is ours. Closing it releases all of them at once.
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    let (gate_r, gate_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut out = Burst {
        scope,
        n,
        rss_before: sys::rss_kib(d.pid())?,
        ..Burst::default()
    };
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Command::new("sh");
        c.args(["-c", "read -r gate; exec \"$@\" </dev/null", "sh"])
            .arg(&env.daemon)
            .arg("exec")
            .arg("--socket")
            .arg(&d.socket)
            .args(["--scope", scope, "--", "/bin/true"])
            .stdin(Stdio::from(gate_r.try_clone().context("dup")?))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        children.push(Some(c.spawn().context("starting a burst starter")?));
    }
    drop(gate_r);
    let cpu0 = sys::cpu_secs(d.pid())?;
    let released = Instant::now();
    drop(gate_w);
    let deadline = released + Duration::from_mins(2);
    let mut pending = n;
    while pending > 0 {
        for slot in &mut children {
            let Some(child) = slot else { continue };
            let status = if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                None
            } else if let Some(status) = child.try_wait().context("burst starter")? {
                Some(status)
            } else {
                continue;
            };
            let took = released.elapsed();
            out.lat_ms.push(took.as_secs_f64() * 1e3);
            out.wall = out.wall.max(took);
            pending -= 1;
            match status {
                Some(status) if status.success() => out.ok += 1,
                other => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    let err: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
                    let why = if err.is_empty() {
                        match other {
                            Some(status) => format!("ended with {status}, no message"),
                            None => "not done within 120 s".to_string(),
                        }
                    } else {
                        // Task names and times differ from one failure to the next.
                        normalize(&err.join(" / "))
                    };
                    *out.failures.entry(why).or_default() += 1;
                }
            }
            *slot = None;
        }
        out.rss_peak = out.rss_peak.max(sys::rss_kib(d.pid()).unwrap_or(0));
        thread::sleep(Duration::from_millis(1));
    }
    out.ended = wait_tasks(d, 0, Duration::from_mins(1))
        .ok()
        .map(|_| released.elapsed());
    out.cpu_secs = sys::cpu_secs(d.pid())? - cpu0;
    out.lat_ms.sort_by(f64::total_cmp);
    Ok(out)
}

/// A failure's first line with digits folded, so that alike failures count together.
fn normalize(line: &str) -> String {
    let mut s = String::new();
    let mut digits = false;
    for ch in line.chars() {
        if ch.is_ascii_digit() {
            if !digits {
                s.push('N');
            }
            digits = true;
        } else {
            digits = false;
            s.push(ch);
        }
    }
    s
}
