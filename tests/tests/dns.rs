//! DNS-name egress end to end: a real dnsmasq serves a test zone on a loopback address, the
//! daemon forwards agents' allowed questions to it, and small HTTP servers on several
//! 127.x addresses stand for the hosts. An address is reachable for an agent only after
//! that agent resolved an allowed name to it, and only for the answer's TTL.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use agent_monitor_e2e::{Daemon, assert_exit, s, wait_for, workspace};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

/// A per-process 127.x.y block, so runs in parallel with other test processes do not meet.
fn block() -> u8 {
    u8::try_from(std::process::id() % 200).expect("below 200") + 20
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 54, block(), last)
}

/// dnsmasq from Debian's packages, in the foreground on its own loopback address; killed
/// on drop.
struct Dnsmasq {
    child: Child,
    addr: Ipv4Addr,
}

impl Dnsmasq {
    /// Serves `records` (name, address) with the given TTL, nothing else (no upstream, no
    /// /etc/hosts).
    fn start(records: &[(&str, Ipv4Addr)], ttl: u32) -> Self {
        let addr = Ipv4Addr::new(127, 53, block(), 1);
        let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("dnsmasq is installed (cargo xtask setup installs dnsmasq-base)");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--pid-file=",
            "--local=/test/",
        ])
        .arg(format!("--listen-address={addr}"))
        .arg(format!("--local-ttl={ttl}"));
        for (name, a) in records {
            cmd.arg(format!("--host-record={name},{a}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        let mut d = Self { child, addr };
        // Ready when it answers a question (the test process is not an agent).
        let probe = query("ready.test", 0x4242);
        wait_for("dnsmasq to answer", || {
            if let Some(status) = d.child.try_wait().expect("wait") {
                let mut err = String::new();
                let _ = d
                    .child
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_string(&mut err));
                panic!("dnsmasq exited ({status}): {err}");
            }
            let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .ok()?;
            sock.send_to(&probe, (d.addr, 53)).ok()?;
            let mut buf = [0u8; 512];
            sock.recv_from(&mut buf).ok().filter(|(n, _)| *n >= 12)
        });
        d
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A question for `name` (type A), as the test's readiness probe sends it.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A tiny HTTP server answering every request with its own name; stopped on drop.
struct Http {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Http {
    fn start(addr: SocketAddr, name: &str) -> Self {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, body) = (Arc::clone(&stop), name.to_owned());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { stop, addr }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// The zone every test serves, the servers behind it, and a daemon forwarding to it.
struct Zone {
    _dnsmasq: Dnsmasq,
    _servers: Vec<Http>,
    port: u16,
    daemon: Daemon,
    _ws: tempfile::TempDir,
    ws: PathBuf,
}

/// a.example.test and b.example.test share .10; x.wild.test is .20; evil.test is .30.
fn zone(ttl: u32, scopes: &[(&str, &str)], min_ttl: &str) -> Zone {
    let shared = ip(10);
    let first = Http::start(SocketAddr::from((shared, 0)), "shared");
    let port = first.addr.port();
    let servers = vec![
        first,
        Http::start(SocketAddr::from((ip(20), port)), "wild"),
        Http::start(SocketAddr::from((ip(30), port)), "evil"),
    ];
    let dnsmasq = Dnsmasq::start(
        &[
            ("a.example.test", shared),
            ("b.example.test", shared),
            ("x.wild.test", ip(20)),
            ("evil.test", ip(30)),
        ],
        ttl,
    );
    let upstream = dnsmasq.addr.to_string();
    let scopes: Vec<(String, String)> = scopes
        .iter()
        .map(|(n, y)| ((*n).to_owned(), y.replace("PORT", &port.to_string())))
        .collect();
    let refs: Vec<(&str, &str)> = scopes
        .iter()
        .map(|(n, y)| (n.as_str(), y.as_str()))
        .collect();
    let daemon = Daemon::start_with(
        &refs,
        &["--dns-upstream", &upstream, "--dns-min-ttl", min_ttl],
    );
    let (guard, ws) = workspace();
    Zone {
        _dnsmasq: dnsmasq,
        _servers: servers,
        port,
        daemon,
        _ws: guard,
        ws,
    }
}

fn scope(name: &str, hosts: &[&str]) -> (String, String) {
    let rules = hosts.iter().fold(String::new(), |mut out, h| {
        let _ = writeln!(out, "      - {{host: \"{h}\", ports: [PORT]}}");
        out
    });
    (
        format!("{name}.yaml"),
        format!(
            "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: {name}, owner: dns@example.org}}\nspec:\n  mode: enforce\n  onViolation: alert\n  exec:\n    allow: [/usr/bin/python3*]\n  files:\n    read: [\"/tmp/**\"]\n  network:\n    connect:\n{rules}"
        ),
    )
}

/// Helpers every agent script starts with: `t(f)` prints `ok`, the value f returns, or the
/// errno name; `get(addr)` fetches / from a zone server; `res(name)` resolves through the
/// system resolver (glibc, /etc/resolv.conf); `raw(server, name)` asks `server` directly
/// over UDP and returns the reply's source and rcode.
fn script(port: u16, body: &str) -> String {
    format!(
        r"import socket, errno, time, os
def t(fn):
  try:
    r = fn(); print('ok' if r is None else r, flush=True)
  except socket.gaierror as e:
    print('gaierror', flush=True)
  except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), flush=True)
def get(addr):
  s = socket.create_connection((addr, {port}), timeout=5)
  s.sendall(b'GET / HTTP/1.0\r\n\r\n')
  data = b''
  while True:
    chunk = s.recv(200)
    if not chunk:
      break
    data += chunk
  s.close()
  return data.decode().split('\r\n\r\n')[-1]
def res(name):
  return socket.getaddrinfo(name, {port}, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
def raw(server, name):
  q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\x00\x00\x01\x00\x01'
  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
  s.settimeout(5)
  s.sendto(q, (server, 53))
  data, src = s.recvfrom(512)
  s.close()
  return '%s:%d rcode=%d answers=%d' % (src[0], src[1], data[3] & 15, data[7])
{body}"
    )
}

fn run(z: &Zone, scope: &str, body: &str) -> Vec<String> {
    let out = z
        .daemon
        .exec(scope, &[], &[PY, "-I", "-c", &script(z.port, body)]);
    assert_exit(&out, 0);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn connects_to(d: &Daemon, addr: Ipv4Addr, port: u16) -> Vec<Value> {
    d.records()
        .into_iter()
        .filter(|r| {
            s(r, "/kind") == "connect"
                && s(r, "/net/address") == addr.to_string()
                && r["net"]["port"].as_u64() == Some(u64::from(port))
        })
        .collect()
}

#[test]
fn dns_allowed_name_resolves_then_connects_until_the_ttl_passes() {
    let (file, yaml) = scope("dns-a", &["a.example.test"]);
    let z = zone(2, &[(&file, &yaml)], "1s");
    let shared = ip(10);
    // Without resolving first, the address is not reachable.
    let lines = run(&z, "dns-a", &format!("t(lambda: get('{shared}'))"));
    assert_eq!(lines, ["EPERM"], "connect before any answer");
    // Resolve, connect at once (allowed), then again after the 2 s TTL (blocked).
    let lines = run(
        &z,
        "dns-a",
        &format!(
            "t(lambda: res('a.example.test'))\nt(lambda: get('{shared}'))\ntime.sleep(3.5)\nt(lambda: get('{shared}'))"
        ),
    );
    assert_eq!(
        lines,
        [shared.to_string().as_str(), "shared", "EPERM"],
        "resolve, connect, connect after the TTL"
    );
    let allowed = z.daemon.wait_record("the allowed connect", |r| {
        s(r, "/kind") == "connect"
            && s(r, "/net/address") == shared.to_string()
            && s(r, "/verdict") == "allowed"
    });
    assert_eq!(s(&allowed, "/net/host"), "a.example.test", "{allowed}");
    // The connect before resolving and the one after the TTL.
    wait_for("two blocked connects", || {
        let blocked = connects_to(&z.daemon, shared, z.port)
            .into_iter()
            .filter(|r| s(r, "/action") == "blocked" && s(r, "/verdict") == "violation")
            .count();
        (blocked >= 2).then_some(())
    });
}

#[test]
fn dns_wildcard_rule_and_out_of_scope_names_are_refused_and_recorded() {
    let (file, yaml) = scope("dns-w", &["*.wild.test"]);
    let z = zone(30, &[(&file, &yaml)], "5s");
    let lines = run(
        &z,
        "dns-w",
        &format!(
            "t(lambda: res('x.wild.test'))\nt(lambda: get('{wild}'))\nt(lambda: res('wild.test'))\nt(lambda: res('evil.test'))\nt(lambda: get('{evil}'))",
            wild = ip(20),
            evil = ip(30)
        ),
    );
    assert_eq!(
        lines,
        [
            ip(20).to_string().as_str(),
            "wild",
            "gaierror",
            "gaierror",
            "EPERM"
        ],
        "subdomain allowed; the apex and other names refused"
    );
    let refused = z.daemon.wait_record("the refused question", |r| {
        s(r, "/net/host") == "evil.test" && s(r, "/verdict") == "violation"
    });
    assert_eq!(s(&refused, "/kind"), "send", "{refused}");
    assert_eq!(s(&refused, "/action"), "blocked", "{refused}");
    assert_eq!(s(&refused, "/net/protocol"), "udp", "{refused}");
    assert_eq!(s(&refused, "/violation/dimension"), "network", "{refused}");
    assert!(
        s(&refused, "/violation/reason").contains("evil.test"),
        "{refused}"
    );
    z.daemon.wait_record("the refused apex", |r| {
        s(r, "/net/host") == "wild.test" && s(r, "/verdict") == "violation"
    });
    let wild = connects_to(&z.daemon, ip(20), z.port);
    assert!(
        wild.iter()
            .any(|r| s(r, "/verdict") == "allowed" && s(r, "/net/host") == "x.wild.test"),
        "{wild:?}"
    );
}

#[test]
fn dns_nxdomain_refusal_is_configurable() {
    let (file, yaml) = scope("dns-nx", &["*.wild.test"]);
    let dnsmasq = Dnsmasq::start(&[("evil.test", ip(30))], 30);
    let upstream = dnsmasq.addr.to_string();
    let d = Daemon::start_with(
        &[(&file, &yaml.replace("PORT", "80"))],
        &["--dns-upstream", &upstream, "--dns-refuse", "nxdomain"],
    );
    let out = d.exec(
        "dns-nx",
        &[],
        &[
            PY,
            "-I",
            "-c",
            &script(80, "t(lambda: raw('127.0.0.1', 'evil.test'))"),
        ],
    );
    assert_exit(&out, 0);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(line, "127.0.0.1:53 rcode=3 answers=0", "NXDOMAIN");
}

#[test]
fn dns_answers_do_not_leak_between_agents_sharing_an_address() {
    let (fa, ya) = scope("dns-one", &["a.example.test"]);
    let (fb, yb) = scope("dns-two", &["*.wild.test"]);
    let z = zone(30, &[(&fa, &ya), (&fb, &yb)], "5s");
    let shared = ip(10);
    let flag = z.ws.join("done");
    // The first agent resolves a.example.test, connects, and stays alive until told.
    let first = script(
        z.port,
        &format!(
            "t(lambda: res('a.example.test'))\nt(lambda: get('{shared}'))\nwhile not os.path.exists('{flag}'):\n  time.sleep(0.05)",
            flag = flag.display()
        ),
    );
    let mut one = z.daemon.exec_spawn("dns-one", &[PY, "-I", "-c", &first]);
    let stdout = one.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), shared.to_string());
    assert_eq!(next(), "shared", "the first agent reaches the address");
    // Meanwhile the second agent cannot: neither name is in its scope, and what the first
    // agent learned is the first agent's alone.
    let lines = run(
        &z,
        "dns-two",
        &format!(
            "t(lambda: get('{shared}'))\nt(lambda: res('a.example.test'))\nt(lambda: res('b.example.test'))\nt(lambda: get('{shared}'))"
        ),
    );
    assert_eq!(lines, ["EPERM", "gaierror", "gaierror", "EPERM"]);
    std::fs::write(&flag, "").expect("write flag");
    let status = one.wait().expect("wait");
    assert!(status.success(), "first agent: {status}");
}

#[test]
fn dns_queries_to_another_resolver_are_judged_the_same() {
    let (file, yaml) = scope("dns-r", &["a.example.test"]);
    let z = zone(30, &[(&file, &yaml)], "5s");
    let (shared, evil) = (ip(10), ip(30));
    let dns = Ipv4Addr::new(127, 53, block(), 1);
    let lines = run(
        &z,
        "dns-r",
        &format!(
            // A resolver nobody runs, and dnsmasq itself, asked directly over UDP.
            "t(lambda: raw('127.9.9.9', 'evil.test'))\nt(lambda: raw('{dns}', 'evil.test'))\nt(lambda: get('{evil}'))\n\
             t(lambda: raw('127.9.9.9', 'a.example.test'))\nt(lambda: get('{shared}'))\n\
             t(lambda: socket.create_connection(('{dns}', 53), timeout=5).close())"
        ),
    );
    assert_eq!(
        lines,
        [
            "127.9.9.9:53 rcode=5 answers=0".to_owned(),
            format!("{dns}:53 rcode=5 answers=0"),
            "EPERM".to_owned(),
            "127.9.9.9:53 rcode=0 answers=1".to_owned(),
            "shared".to_owned(),
            "EPERM".to_owned(),
        ],
        "every UDP query is judged by the agent's rules, with the asked server as the \
         reply's source; DNS over TCP follows the ordinary rules"
    );
}

/// Descriptors the daemon has open.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// For `FLOOD_SECS` s, as fast as the socket takes them: half the questions for names the
/// scope allows (distinct, to an upstream that never answers), a quarter for one name it
/// does not allow, a quarter for distinct names it does not allow. Prints `sent N` and
/// `same N` (questions for the one name).
const FLOOD: &str = r"import socket, time, sys
secs = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
def q(i, name):
  return (i & 0xffff).to_bytes(2, 'big') + b'\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\x00\x00\x01\x00\x01'
def drain():
  while True:
    try:
      s.recv(4096)
    except (BlockingIOError, InterruptedError):
      return
sent = same = 0
end = time.monotonic() + secs
while time.monotonic() < end:
  k = sent % 4
  name = 'n%d.flood.test' % sent if k < 2 else ('same.elsewhere.test' if k == 2 else 'n%d.elsewhere.test' % sent)
  try:
    s.sendto(q(sent, name), ('127.0.0.1', 53))
    sent += 1
    same += k == 2
  except (BlockingIOError, InterruptedError):
    drain()
  if sent % 64 == 0:
    drain()
print('sent', sent, flush=True)
print('same', same, flush=True)
";

/// How long the flood lasts.
const FLOOD_SECS: u64 = 4;
/// What the flood may add to the daemon's descriptors: the flooding task's own (its two
/// resolver sockets, its cgroup's kill handle, pidfds) and the one upstream socket.
const FLOOD_FDS: u64 = 16;
/// What it may add to the daemon's resident memory (see liveness.rs).
const FLOOD_RSS_MIB: u64 = 64;

/// The out-of-scope records (refused questions) in the audit log.
fn refused(d: &Daemon) -> Vec<Value> {
    d.records()
        .into_iter()
        .filter(|r| {
            s(r, "/kind") == "send"
                && s(r, "/verdict") == "violation"
                && s(r, "/violation/reason").contains("DNS")
        })
        .collect()
}

fn count(r: &Value) -> u64 {
    r["count"].as_u64().unwrap_or(1)
}

/// What [`flood`] saw.
struct Flood {
    sent: u64,
    same_sent: u64,
    output: String,
    took: Duration,
    fds_before: u64,
    fds_peak: u64,
    rss_before: u64,
    rss_peak: u64,
}

/// Runs the flood in an agent of the `dns-flood` scope, sampling the daemon's descriptors
/// and RSS from before it until 5 s after it (the upstream questions still in flight time
/// out meanwhile).
fn flood(d: &Daemon) -> Flood {
    let pid = d.pid();
    let (fds_before, rss_before) = (open_fds(pid), vm_rss_kib(pid));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let (mut fds, mut rss) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                fds = open_fds(pid).max(fds);
                rss = vm_rss_kib(pid).max(rss);
                thread::sleep(Duration::from_millis(10));
            }
            (fds, rss)
        })
    };
    let started = std::time::Instant::now();
    let out = d.exec(
        "dns-flood",
        &[],
        &[PY, "-I", "-c", FLOOD, &FLOOD_SECS.to_string()],
    );
    let took = started.elapsed();
    thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let (fds_peak, rss_peak) = sampler.join().expect("sampler");
    assert_exit(&out, 0);
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let number = |key: &str| -> u64 {
        output
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    Flood {
        sent: number("sent "),
        same_sent: number("same "),
        took,
        output,
        fds_before,
        fds_peak,
        rss_before,
        rss_peak,
    }
}

#[test]
fn dns_flood_with_a_silent_upstream_keeps_descriptors_memory_and_records_bounded() {
    let (file, yaml) = scope("dns-flood", &["*.flood.test"]);
    // An upstream that never answers: every allowed question waits its full timeout.
    let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind the upstream");
    let upstream = black_hole.local_addr().expect("addr").to_string();
    let d = Daemon::start_with(
        &[(&file, &yaml.replace("PORT", "80"))],
        &["--dns-upstream", &upstream],
    );
    let started = std::time::Instant::now();
    let f = flood(&d);
    let (fds_before, fds_peak, rss_before, rss_peak) =
        (f.fds_before, f.fds_peak, f.rss_before, f.rss_peak);
    let (sent, same_sent, text) = (f.sent, f.same_sent, &f.output);
    let records = refused(&d);
    let same: Vec<&Value> = records
        .iter()
        .filter(|r| s(r, "/net/host") == "same.elsewhere.test")
        .collect();
    let questions: u64 = records.iter().map(count).sum();
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let per_second = records.len() as f64 / f.took.as_secs_f64();
    // Printed before any assertion, so that a run against another build still reports.
    eprintln!(
        "FIGURES dns flood ({FLOOD_SECS} s, silent upstream): {sent} questions sent ({same_sent} for one out-of-scope name); \
         daemon descriptors {fds_before} before, {fds_peak} at most; RSS {} MiB before, {} MiB at most; \
         {} out-of-scope records standing for {questions} questions ({per_second:.0} records/s over the flood); \
         {} records for the one name",
        rss_before / 1024,
        rss_peak / 1024,
        records.len(),
        same.len()
    );
    assert!(sent >= 5000, "the agent flooded its resolver: {text}");
    assert!(
        fds_peak <= fds_before + FLOOD_FDS,
        "daemon descriptors grew from {fds_before} to {fds_peak} (bound: +{FLOOD_FDS})"
    );
    assert!(
        rss_peak <= rss_before + FLOOD_RSS_MIB * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_peak} KiB (bound: +{FLOOD_RSS_MIB} MiB)"
    );
    // One name asked thousands of times: its first question recorded at once, the rest
    // counted into one record per 10 s interval.
    assert!(!same.is_empty(), "the name's first question is recorded");
    assert_eq!(count(same[0]), 1, "{}", same[0]);
    let aggregated = d.wait_record("the repeats of the one name, counted", |r| {
        s(r, "/net/host") == "same.elsewhere.test" && count(r) > 1
    });
    let same: Vec<Value> = refused(&d)
        .into_iter()
        .filter(|r| s(r, "/net/host") == "same.elsewhere.test")
        .collect();
    let same_counted: u64 = same.iter().map(count).sum();
    let all = refused(&d);
    eprintln!(
        "FIGURES after the first 10 s interval ({:.1} s from the flood's start): {} out-of-scope records in all, counting {} questions; {} for the one name, counting {same_counted} of {same_sent} questions; {aggregated}",
        started.elapsed().as_secs_f64(),
        all.len(),
        all.iter().map(count).sum::<u64>(),
        same.len()
    );
    assert!(
        same.len() <= 3,
        "at most a few records per interval for one name: {same:?}"
    );
    assert!(
        same_counted <= same_sent && same_counted > 1000,
        "{same_counted} counted of {same_sent}"
    );
    assert!(
        s(&aggregated, "/violation/reason").contains("more DNS queries"),
        "{aggregated}"
    );
    // Distinct names: at most 64 named one by one per interval and agent, the others
    // counted together; a few hundred records at most, whatever was asked.
    assert!(
        all.len() <= 3 * 129,
        "{} out-of-scope records for {sent} questions",
        all.len()
    );
    assert!(
        all.iter()
            .any(|r| r["net"]["host"].is_null() && s(r, "/violation/reason").contains("beyond")),
        "the names beyond the bound are counted together"
    );
    // The daemon still answers and resolves.
    assert!(d.get_json("/v1/status")["tasks"].is_number());
}

/// `exec --learn`: the learning agent's DNS goes through its own resolver, which answers
/// every name and remembers it, so that the proposal allows the name it resolved (not the
/// address); enforced, the same work passes and a name it never resolved stays refused.
#[test]
fn learning_names_the_hosts_an_agent_resolved_and_the_proposal_enforces_them() {
    let z = zone(60, &[], "5s");
    let (shared, evil) = (ip(10), ip(30));
    let work = "t(lambda: res('a.example.test'))\nt(lambda: get(res('a.example.test')))";
    let plan = z.ws.join("learned.yaml");
    let out = std::process::Command::new(agent_monitor_e2e::binary())
        .args(["exec", "--socket"])
        .arg(&z.daemon.socket)
        .args(["--learn", "dns-learned", "--task", "dns-learn-1", "--out"])
        .arg(&plan)
        .args(["--", PY, "-I", "-c", &script(z.port, work)])
        .stdin(Stdio::null())
        .output()
        .expect("exec --learn");
    assert_exit(&out, 0);
    let lines = stdout_lines(&out);
    assert_eq!(
        lines,
        [shared.to_string().as_str(), "shared"],
        "the learning run"
    );
    let yaml = std::fs::read_to_string(&plan).expect("the proposal");
    let rule = format!(
        "{{host: a.example.test, ports: [{}], protocol: tcp}}",
        z.port
    );
    assert!(
        yaml.contains(&rule),
        "a host rule for the resolved name:\n{yaml}"
    );
    assert!(
        !yaml.contains(&shared.to_string()),
        "no address rule:\n{yaml}"
    );
    let enforced = z.ws.join("enforced.yaml");
    std::fs::write(
        &enforced,
        yaml.replace("onViolation: kill-process", "onViolation: alert"),
    )
    .expect("write");
    let scope = enforced.to_str().expect("UTF-8");
    let out = z.daemon.exec(
        scope,
        &["--task", "dns-enforced-1"],
        &[PY, "-I", "-c", &script(z.port, work)],
    );
    assert_exit(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("shared"),
        "the same work under the proposal: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    z.daemon.wait_record("the enforced task's end", |r| {
        s(r, "/agent/task") == "dns-enforced-1" && s(r, "/kind") == "task"
    });
    let violations: Vec<Value> = z
        .daemon
        .records()
        .into_iter()
        .filter(|r| s(r, "/agent/task") == "dns-enforced-1" && s(r, "/verdict") == "violation")
        .collect();
    assert!(violations.is_empty(), "{violations:#?}");
    let twin = format!("t(lambda: res('evil.test'))\nt(lambda: get('{evil}'))");
    let out = z.daemon.exec(
        scope,
        &["--task", "dns-twin-1"],
        &[PY, "-I", "-c", &script(z.port, &twin)],
    );
    assert_exit(&out, 0);
    let lines = stdout_lines(&out);
    assert_eq!(
        lines,
        ["gaierror", "EPERM"],
        "an unlisted name and its address"
    );
}

fn stdout_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
