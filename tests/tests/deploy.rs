//! Deployment: the systemd unit (verified offline, started from its own `ExecStart` line
//! under its own capability set), `cargo xtask install | uninstall`, and the Kubernetes
//! manifests (strict schema validation).

use std::{
    ffi::OsStr,
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use agent_monitor_e2e::{
    DEADLINE, assert_exit, binary, cgroup2_root, remove_cgroup_tree, require_root, s, unique,
    wait_for, workspace_root, xtask,
};
use serde_json::Value;

const UNIT: &str = "etc/systemd/system/agent-monitor.service";

/// `cargo xtask install --destdir <tmp>` with the binary under test.
fn install(extra: &[&str]) -> tempfile::TempDir {
    let dest = tempfile::tempdir().expect("tempdir");
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("install"),
        OsStr::new("--destdir"),
        dest.path().as_os_str(),
    ];
    let bin = binary();
    args.extend([OsStr::new("--binary"), bin.as_os_str()]);
    args.extend(extra.iter().map(OsStr::new));
    xtask(&args);
    dest
}

/// Values of `key=` lines in a unit file (repeated keys in order).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn install_lays_out_the_tree_and_uninstall_removes_it_and_the_pinned_state() {
    require_root();
    let dest = install(&[]);
    let d = dest.path();
    let expect = [
        ("usr/local/bin/agent-monitor", 0o755),
        (UNIT, 0o644),
        ("etc/agent-monitor/config.yaml", 0o644),
        ("etc/agent-monitor/scopes.d/code-reviewer.yaml", 0o644),
        ("etc/agent-monitor/scopes.d/mcp-fetch.yaml", 0o644),
        ("usr/local/share/doc/agent-monitor/README.md", 0o644),
    ];
    for (file, mode) in expect {
        let meta = fs::metadata(d.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert_eq!(
        fs::read(d.join("usr/local/bin/agent-monitor")).expect("read"),
        fs::read(binary()).expect("read"),
        "the binary under test is what was installed"
    );
    let unit = fs::read_to_string(d.join(UNIT)).expect("unit");
    assert_eq!(
        fs::read_to_string(workspace_root().join("deploy/systemd/agent-monitor.service"))
            .expect("shipped unit"),
        unit,
        "the default prefix installs the unit unchanged"
    );
    // An operator's edit survives a reinstall and an uninstall.
    let edited = d.join("etc/agent-monitor/scopes.d/mcp-fetch.yaml");
    fs::write(&edited, "# mine\n").expect("edit");
    install_into(d, &["--prefix", "/opt/agent-monitor"]);
    assert_eq!(fs::read_to_string(&edited).expect("kept"), "# mine\n");
    let unit = fs::read_to_string(d.join(UNIT)).expect("unit");
    assert!(
        unit_values(&unit, "ExecStart")[0].starts_with("/opt/agent-monitor/bin/agent-monitor run "),
        "{unit}"
    );
    assert!(d.join("opt/agent-monitor/bin/agent-monitor").is_file());

    // Pinned state: a directory in the real bpffs, named for this test.
    let pins = PathBuf::from("/sys/fs/bpf").join(unique("am-e2e-pins"));
    fs::create_dir_all(pins.join("maps")).expect("mkdir in bpffs");
    for prefix in ["/usr/local", "/opt/agent-monitor"] {
        xtask(&[
            OsStr::new("uninstall"),
            OsStr::new("--destdir"),
            d.as_os_str(),
            OsStr::new("--prefix"),
            OsStr::new(prefix),
            OsStr::new("--pin-path"),
            pins.as_os_str(),
        ]);
    }
    assert!(!pins.exists(), "pinned state removed");
    let left: Vec<PathBuf> = walk(d).into_iter().filter(|p| p.is_file()).collect();
    assert_eq!(left, [edited], "only the edited scope is left");
}

fn install_into(dest: &Path, extra: &[&str]) {
    let bin = binary();
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("install"),
        OsStr::new("--destdir"),
        dest.as_os_str(),
        OsStr::new("--binary"),
        bin.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    xtask(&args);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out.sort();
    out
}

#[test]
fn systemd_analyze_verify_accepts_the_installed_unit() {
    require_root();
    let dest = install(&[]);
    let unit_path = dest.path().join(UNIT);
    let unit = fs::read_to_string(&unit_path).expect("unit");
    let exec = unit_values(&unit, "ExecStart");
    let bin = exec[0].split_whitespace().next().expect("a command");
    let bin_dir = Path::new(bin).parent().expect("bin dir");
    // verify checks that ExecStart's binary exists. In a private mount namespace, the
    // installed bin directory stands in for the real one; nothing on the host changes.
    let staged = dest
        .path()
        .join(bin_dir.strip_prefix("/").expect("absolute"));
    let script = format!(
        "mount --bind '{}' '{}' && exec systemd-analyze verify --man=no '{}'",
        staged.display(),
        bin_dir.display(),
        unit_path.display()
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .expect("run systemd-analyze (cargo xtask setup installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 0);
    // Nothing but systemd's own syscall-table notes (names this libseccomp lacks).
    for line in stderr.lines() {
        assert!(
            line.contains("Failed to parse system call, ignoring"),
            "systemd-analyze complained: {stderr}"
        );
    }
    // The check is not vacuous: systemd-analyze reports a bad value (it still exits 0,
    // which is why the output above must be clean).
    let bad = dest.path().join("etc/systemd/system/broken.service");
    fs::write(&bad, unit.replace("\nType=notify\n", "\nType=notifyy\n")).expect("write");
    let script = format!(
        "mount --bind '{}' '{}' && exec systemd-analyze verify --man=no '{}'",
        staged.display(),
        bin_dir.display(),
        bad.display()
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Failed to parse service type"), "{stderr}");
}

/// `CAP_BPF CAP_PERFMON` -> `-all,+bpf,+perfmon` for setpriv.
fn bounding_set(unit: &str) -> String {
    let caps = unit_values(unit, "CapabilityBoundingSet");
    assert_eq!(caps.len(), 1, "one CapabilityBoundingSet line");
    let mut out = String::from("-all");
    for cap in caps[0].split_whitespace() {
        out.push_str(",+");
        out.push_str(
            &cap.strip_prefix("CAP_")
                .expect("CAP_ names")
                .to_ascii_lowercase(),
        );
    }
    out
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, start to stop, in order"
)]
fn the_daemon_starts_from_the_units_exec_start_with_its_capabilities_and_notifies() {
    require_root();
    let dest = install(&[]);
    let root = dest.path();
    let unit = fs::read_to_string(root.join(UNIT)).expect("unit");
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    // The exact line; its absolute paths (binary, config) live under the install root.
    let argv: Vec<PathBuf> = exec[0]
        .split_whitespace()
        .map(|a| {
            a.strip_prefix('/')
                .map_or_else(|| PathBuf::from(a), |rel| root.join(rel))
        })
        .collect();
    let config = argv
        .iter()
        .position(|a| a == Path::new("--config"))
        .map(|i| argv[i + 1].clone())
        .expect("ExecStart passes --config");
    // The config file moves every path the daemon writes under the temp root.
    let state = root.join("state");
    fs::create_dir_all(state.join("run")).expect("mkdir");
    fs::create_dir_all(state.join("log")).expect("mkdir");
    let socket = state.join("run/agent-monitor.sock");
    let audit = state.join("log/audit.jsonl");
    let parent = unique("am-e2e-unit");
    // Pinned state must be on bpffs: a directory of this test's own.
    let pins = PathBuf::from("/sys/fs/bpf").join(&parent);
    let shipped = fs::read_to_string(&config).expect("installed config");
    let rewritten = shipped
        .replace(
            "/etc/agent-monitor/scopes.d",
            &root
                .join("etc/agent-monitor/scopes.d")
                .display()
                .to_string(),
        )
        .replace(
            "/run/agent-monitor/agent-monitor.sock",
            &socket.display().to_string(),
        )
        .replace(
            "/var/log/agent-monitor/audit.jsonl",
            &audit.display().to_string(),
        )
        .replace(
            "cgroup-parent: agent-monitor",
            &format!("cgroup-parent: {parent}"),
        )
        .replace("/sys/fs/bpf/agent-monitor", &pins.display().to_string());
    assert_ne!(rewritten, shipped);
    fs::write(&config, rewritten).expect("rewrite config");

    // systemd's side of Type=notify.
    let notify_path = state.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let log = state.join("daemon.log");
    // CapabilityBoundingSet= and NoNewPrivileges= of the unit, applied by setpriv.
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);
    let mut child = Command::new("setpriv")
        .arg(format!("--bounding-set={}", bounding_set(&unit)))
        .args(["--inh-caps=-all", "--no-new-privs", "--"])
        .args(&argv)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("NODE_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the unit's ExecStart");
    let _cleanup = Cleanup {
        pid: child.id(),
        cgroup: cgroup2_root().join(&parent),
        pins: pins.clone(),
    };
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).unwrap_or_else(|e| {
        panic!(
            "no READY=1 ({e}):\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );

    let status = Command::new(binary())
        .args(["status", "--json", "--socket"])
        .arg(&socket)
        .output()
        .expect("status");
    assert_exit(&status, 0);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let hooks = status["hooks"].as_array().expect("hooks");
    let failed: Vec<&Value> = hooks.iter().filter(|h| h["attached"] != true).collect();
    assert!(
        failed.is_empty(),
        "hooks not attached with the unit's capabilities: {failed:?}"
    );

    // An agent running as another user opens a file relative to a directory fd: the
    // daemon needs CAP_SYS_PTRACE to read its /proc/PID/fd link, which the unit grants.
    let ws = root.join("ws");
    fs::create_dir_all(&ws).expect("mkdir");
    fs::set_permissions(&ws, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(ws.join("f.txt"), "x").expect("write");
    let script = format!(
        "import os, time\nd = os.open('{}', os.O_RDONLY)\ntime.sleep(0.3)\nos.close(os.open('f.txt', os.O_RDONLY, dir_fd=d))\ntime.sleep(0.5)\n",
        ws.display()
    );
    let out = Command::new(binary())
        .args(["exec", "--scope", "code-reviewer", "--socket"])
        .arg(&socket)
        .args([
            "--",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["/usr/bin/python3", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert_exit(&out, 0);
    let want = ws.join("f.txt").display().to_string();
    wait_for("the dirfd-relative read, resolved", || {
        fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| s(r, "/file/path") == want)
    });

    // systemctl stop: SIGTERM, STOPPING=1, a clean exit.
    #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let deadline = Instant::now() + DEADLINE;
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        code.success(),
        "exit {code}:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Kills the daemon (if still running) and removes its cgroups, also when a test fails.
struct Cleanup {
    pid: u32,
    cgroup: PathBuf,
    /// The unit keeps enforcement pinned when it stops (no --release-on-exit).
    pins: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        #[expect(clippy::cast_possible_wrap, reason = "pids fit in i32")]
        // SAFETY: our own child; a finished (reaped) pid is not reused this quickly.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(300));
        remove_cgroup_tree(&self.cgroup);
        let _ = fs::remove_dir_all(&self.pins);
    }
}

/// kubernetes-validate in the virtualenv that `cargo xtask setup` makes.
fn kubernetes_validate() -> PathBuf {
    let tool = std::env::var_os("KUBERNETES_VALIDATE").map_or_else(
        || workspace_root().join("target/tools/venv/bin/kubernetes-validate"),
        PathBuf::from,
    );
    assert!(
        tool.is_file(),
        "{} is missing: run `cargo xtask setup`",
        tool.display()
    );
    tool
}

fn manifests() -> Vec<PathBuf> {
    let dir = workspace_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

fn validate(files: &[PathBuf], version: &str) -> std::process::Output {
    Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate")
}

#[test]
fn kubernetes_manifests_validate_strictly_against_the_schemas() {
    let files = manifests();
    // The newest schemas the tool ships, and the oldest release the client targets.
    for version in ["1.37.0", "1.33.0"] {
        let out = validate(&files, version);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_exit(&out, 0);
        for kind in [
            "namespace/agent-monitor",
            "serviceaccount/agent-monitor",
            "clusterrole/agent-monitor",
            "clusterrolebinding/agent-monitor",
            "configmap/agent-monitor-scopes",
            "daemonset/agent-monitor",
            "customresourcedefinition/agentscopes.agent-monitor.dev",
            "customresourcedefinition/clusteragentscopes.agent-monitor.dev",
        ] {
            assert!(
                stdout.contains(&format!("passed for resource {kind}")),
                "{stdout}"
            );
        }
    }
    // Strict means strict: one unknown field fails the DaemonSet.
    let dir = tempfile::tempdir().expect("tempdir");
    let ds = fs::read_to_string(workspace_root().join("deploy/kubernetes/30-daemonset.yaml"))
        .expect("daemonset");
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        ds.replace(
            "      hostPID: true\n",
            "      hostPID: true\n      hostPid: true\n",
        ),
    )
    .expect("write");
    let out = validate(&[bad], "1.37.0");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "an unknown field passed: {stdout}");
    assert!(stdout.contains("'hostPid' was unexpected"), "{stdout}");
}

#[test]
fn the_rbac_grants_reading_pods_and_agentscopes_and_patching_their_status_only() {
    let rbac =
        fs::read_to_string(workspace_root().join("deploy/kubernetes/10-rbac.yaml")).expect("rbac");
    let rules: Vec<&str> = rbac
        .split("\n---")
        .find(|doc| doc.contains("kind: ClusterRole\n"))
        .expect("a ClusterRole")
        .split("rules:")
        .nth(1)
        .expect("rules")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        rules,
        [
            "  - apiGroups: [\"\"]",
            "    resources: [pods]",
            "    verbs: [get, list, watch]",
            "  - apiGroups: [agent-monitor.dev]",
            "    resources: [agentscopes, clusteragentscopes]",
            "    verbs: [get, list, watch]",
            "  - apiGroups: [agent-monitor.dev]",
            "    resources: [agentscopes/status, clusteragentscopes/status]",
            "    verbs: [patch]",
        ]
    );
}

#[test]
fn the_scopes_shipped_in_deploy_are_valid() {
    // The ConfigMap's scopes, checked by the daemon's own parser (PyYAML from the tools
    // virtualenv extracts them).
    let python = workspace_root().join("target/tools/venv/bin/python");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "import sys, yaml, pathlib\nfor doc in yaml.safe_load_all(open(sys.argv[1])):\n    if doc['metadata']['name'] == 'agent-monitor-scopes':\n        for name, text in doc['data'].items():\n            pathlib.Path(sys.argv[2], name).write_text(text)\n";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(workspace_root().join("deploy/kubernetes/20-config.yaml"))
        .arg(dir.path())
        .output()
        .expect("python (cargo xtask setup makes the virtualenv)");
    assert_exit(&out, 0);
    let scopes: Vec<PathBuf> = fs::read_dir(dir.path())
        .expect("read")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!scopes.is_empty());
    let out = Command::new(binary())
        .arg("check")
        .args(&scopes)
        .output()
        .expect("check");
    assert_exit(&out, 0);
}

#[test]
fn the_example_agentscopes_validate_strictly_against_the_generated_crd() {
    // The CRD's schema as the API server applies it, with unknown fields refused as
    // `kubectl apply --validate=strict` does (jsonschema from the tools virtualenv).
    let python = workspace_root().join("target/tools/venv/bin/python");
    let script = r#"
import sys, yaml, jsonschema
def strict(s):
    if isinstance(s, dict):
        if "properties" in s and "additionalProperties" not in s:
            s["additionalProperties"] = False
        for v in s.values():
            strict(v)
    return s
schemas = {}
for crd in yaml.safe_load_all(open(sys.argv[1])):
    if crd:
        schemas[crd["spec"]["names"]["kind"]] = strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
for doc in yaml.safe_load_all(open(sys.argv[2])):
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    try:
        jsonschema.validate(body, schemas[doc["kind"]])
        print("valid", doc["kind"], doc["metadata"]["name"])
    except jsonschema.ValidationError as e:
        print("invalid", doc["kind"], doc["metadata"]["name"], e.message)
"#;
    let run = |objects: &Path| {
        let out = Command::new(&python)
            .args(["-c", script])
            .arg(workspace_root().join("deploy/kubernetes/05-crd.yaml"))
            .arg(objects)
            .output()
            .expect("python (cargo xtask setup makes the virtualenv)");
        assert_exit(&out, 0);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let examples = workspace_root().join("examples/kubernetes/agentscopes.yaml");
    assert_eq!(
        run(&examples),
        "valid AgentScope coder\nvalid ClusterAgentScope mcp-fetch\n"
    );
    // A misspelt field and a wrong type are refused.
    let text = fs::read_to_string(&examples).expect("examples");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        text.replace("  onViolation: kill-process", "  onViolaton: kill-process")
            .replace("mode: enforce", "mode: 3"),
    )
    .expect("write");
    let out = run(&bad);
    assert_eq!(
        out,
        "invalid AgentScope coder Additional properties are not allowed ('onViolaton' was unexpected)\n\
         invalid ClusterAgentScope mcp-fetch 3 is not one of ['audit', 'enforce']\n"
    );
}
