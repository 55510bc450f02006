//! `AgentScope` objects end to end: the daemon lists and watches them on a local stand-in
//! for the API server (127.0.0.1 only; responses in tests/fixtures/kubernetes/), loads
//! them as scopes through its reload, keeps the last good version of one that turns
//! invalid, and writes each object's `Accepted` condition back with a merge patch to
//! `/status`.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread,
};

use agent_monitor_e2e::{
    Daemon, assert_exit, binary,
    fake_api::{respond, stream_watch},
    wait_for, workspace_root,
};
use serde_json::{Value, json};

const GROUP_PATH: &str = "/apis/agent-monitor.dev/v1";

fn fixture(name: &str) -> String {
    let path = workspace_root()
        .join("tests/fixtures/kubernetes")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    body: String,
}

/// The stand-in API server: `agentscopes` are listed from the fixture and watched with
/// the events the test sends; `clusteragentscopes` are listed from theirs, and pods are an
/// empty list, both with watches that stay open; a status patch is recorded and answered
/// with the patched object.
struct ApiServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    events: Sender<String>,
}

impl ApiServer {
    fn start(list: String, cluster_list: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (events, rx) = mpsc::channel::<String>();
        let rx = Arc::new(Mutex::new(rx));
        let log = Arc::clone(&requests);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let lists = [list.clone(), cluster_list.clone()];
                let (log, rx) = (Arc::clone(&log), Arc::clone(&rx));
                thread::spawn(move || serve(conn, &lists, &log, &rx));
            }
        });
        Self {
            port,
            requests,
            events,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// The status patches sent for `namespace/name` (a `ClusterAgentScope` for namespace
    /// ""), bodies parsed.
    fn patches(&self, namespace: &str, name: &str) -> Vec<Value> {
        let path = if namespace.is_empty() {
            format!("{GROUP_PATH}/clusteragentscopes/{name}/status")
        } else {
            format!("{GROUP_PATH}/namespaces/{namespace}/agentscopes/{name}/status")
        };
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.target.split('?').next() == Some(&path))
            .map(|r| serde_json::from_str(&r.body).expect("a JSON patch"))
            .collect()
    }

    /// The first patch of `namespace/name` whose condition satisfies `f`.
    fn wait_condition(
        &self,
        what: &str,
        namespace: &str,
        name: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, || {
            self.patches(namespace, name)
                .into_iter()
                .map(|p| p["status"]["conditions"][0].clone())
                .find(|c| f(c))
        })
    }
}

/// One connection: requests until the client closes it (the client keeps connections alive).
fn serve(
    conn: TcpStream,
    [list, cluster_list]: &[String; 2],
    log: &Mutex<Vec<Request>>,
    events: &Mutex<Receiver<String>>,
) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers: HashMap<String, String> = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut words = request_line.split_whitespace();
        let request = Request {
            method: words.next().unwrap_or_default().to_owned(),
            target: words.next().unwrap_or_default().to_owned(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        log.lock().expect("lock").push(request.clone());
        let path = request.target.split('?').next().unwrap_or_default();
        let watch = request.target.contains("watch=true");
        let ok = match (request.method.as_str(), path) {
            ("PATCH", p) if p.starts_with(GROUP_PATH) && p.ends_with("/status") => {
                // .../namespaces/NS/agentscopes/NAME/status or .../clusteragentscopes/NAME/status
                let parts: Vec<&str> = p.split('/').collect();
                let name = parts[parts.len() - 2];
                let namespaced = p.contains("/namespaces/");
                let metadata = if namespaced {
                    json!({"namespace": parts[5], "name": name})
                } else {
                    json!({"name": name})
                };
                let sent: Value = serde_json::from_str(&request.body).unwrap_or_default();
                let object = json!({
                    "apiVersion": "agent-monitor.dev/v1",
                    "kind": if namespaced { "AgentScope" } else { "ClusterAgentScope" },
                    "metadata": metadata,
                    "status": sent["status"],
                });
                respond(&mut out, "200 OK", &object.to_string())
            }
            ("GET", p) if p == format!("{GROUP_PATH}/agentscopes") && !watch => {
                respond(&mut out, "200 OK", list)
            }
            ("GET", p) if p == format!("{GROUP_PATH}/agentscopes") => {
                stream_watch(&mut out, &events.lock().expect("lock"));
                return;
            }
            ("GET", p) if p == format!("{GROUP_PATH}/clusteragentscopes") && !watch => {
                respond(&mut out, "200 OK", cluster_list)
            }
            ("GET", "/api/v1/pods") if !watch => {
                let empty = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []});
                respond(&mut out, "200 OK", &empty.to_string())
            }
            ("GET", p)
                if p == "/api/v1/pods" || p == format!("{GROUP_PATH}/clusteragentscopes") =>
            {
                // Nothing happens to them: the watch stays open until the test ends.
                let (_keep, nothing) = mpsc::channel::<String>();
                stream_watch(&mut out, &nothing);
                return;
            }
            _ => respond(
                &mut out,
                "404 Not Found",
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#,
            ),
        };
        if !ok {
            return;
        }
    }
}

const FILED: &str = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: filed\n  owner: files@example.org\nspec:\n  select:\n    cgroup: /am-e2e-filed/*\n";

/// The manifest the daemon renders from the fixture's generation-3 `coder` (keys in
/// alphabetical order, the object's namespace in `select.kubernetes`).
const CODER_3: &str = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: coder\n  owner: \"mallory@example.org\"\nspec:\n  exec:\n    allow:\n    - /usr/bin/cat\n  files:\n    read:\n    - \"/workspace/**\"\n    - \"/srv/data/**\"\n  mode: audit\n  select:\n    kubernetes:\n      container: agent\n      namespace: agents\n      podLabels:\n        app: coder\n  ttl: \"5x\"\n";

fn scopes(d: &Daemon) -> Vec<String> {
    d.get_json("/v1/status")["scopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: list, modify, modify invalid, delete"
)]
fn agentscope_objects_load_change_keep_their_last_good_version_and_get_a_status() {
    let events: Vec<String> = fixture("agentscopes-events.jsonl")
        .lines()
        .map(str::to_owned)
        .collect();
    let api = ApiServer::start(
        fixture("agentscopes-list.json"),
        fixture("clusteragentscopes-list.json"),
    );
    let config = format!(
        "kubernetes:\n  node-name: node-e2e\n  api-server: http://127.0.0.1:{}\n",
        api.port
    );
    let d = Daemon::start_with_config(&[("filed.yaml", FILED)], &config);

    // Listed: `coder` loads and is Accepted.
    wait_for("scope coder from its AgentScope", || {
        scopes(&d).contains(&"coder".to_owned()).then_some(())
    });
    let accepted = api.wait_condition("coder Accepted", "agents", "coder", |c| {
        c["status"] == "True"
    });
    assert_eq!(accepted["type"], "Accepted", "{accepted}");
    assert_eq!(accepted["reason"], "Valid", "{accepted}");
    assert_eq!(accepted["observedGeneration"], 1, "{accepted}");

    // A cluster object may select a cgroup.
    let fleet = api.wait_condition("fleet Accepted", "", "fleet", |c| c["status"] == "True");
    assert_eq!(fleet["reason"], "Valid", "{fleet}");
    assert!(scopes(&d).contains(&"fleet".to_owned()));

    // A scope file has the name `filed`: the file wins, the object is told why.
    let conflict = api.wait_condition("filed Conflict", "agents", "filed", |c| {
        c["status"] == "False"
    });
    assert_eq!(conflict["reason"], "Conflict", "{conflict}");
    let message = conflict["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "AgentScope agents/filed: duplicate scope name \"filed\", already defined in "
        ) && message.ends_with("filed.yaml"),
        "{conflict}"
    );
    // A namespaced object may select only its own namespace's pods.
    let wide = api.wait_condition("wide Invalid", "agents", "wide", |c| c["status"] == "False");
    assert_eq!(wide["reason"], "Invalid", "{wide}");
    assert!(
        wide["message"]
            .as_str()
            .unwrap_or_default()
            .contains("a namespaced AgentScope selects only pods of its namespace"),
        "{wide}"
    );
    assert!(!scopes(&d).contains(&"wide".to_owned()));
    // Judged once loaded: never written as accepted.
    for name in ["filed", "wide"] {
        for patch in api.patches("agents", name) {
            assert_eq!(
                patch["status"]["conditions"][0]["status"], "False",
                "{name}: {patch}"
            );
        }
    }

    // A task under `coder` follows the object's changes.
    let (task, _cgroup) = d.create_task("coder");
    let owner = |d: &Daemon| d.get_json(&format!("/v1/tasks/{task}"))["owner"].clone();
    assert_eq!(owner(&d), "alice@example.org");

    // MODIFIED: the new version is in force and Accepted for generation 2.
    api.events.send(events[0].clone()).expect("send MODIFIED");
    wait_for("coder's new owner", || {
        (owner(&d) == "bob@example.org").then_some(())
    });
    api.wait_condition("coder generation 2 Accepted", "agents", "coder", |c| {
        c["status"] == "True" && c["observedGeneration"] == 2
    });

    // MODIFIED to something invalid: Invalid with the message and position `check` prints
    // for the same manifest; the last good version stays in force.
    api.events
        .send(events[1].clone())
        .expect("send MODIFIED (invalid)");
    let invalid = api.wait_condition("coder Invalid", "agents", "coder", |c| {
        c["status"] == "False"
    });
    assert_eq!(invalid["reason"], "Invalid", "{invalid}");
    assert_eq!(invalid["observedGeneration"], 3, "{invalid}");
    let dir = tempfile::tempdir().expect("tempdir");
    // The object as `kubectl get -o json` prints it, rendered as the daemon reads it.
    let object = dir.path().join("coder.json");
    let event: Value = serde_json::from_str(&events[1]).expect("event");
    fs::write(&object, event["object"].to_string()).expect("write");
    let render = std::process::Command::new(binary())
        .args(["crd", "--render"])
        .arg(&object)
        .output()
        .expect("crd --render");
    assert_exit(&render, 0);
    assert_eq!(String::from_utf8_lossy(&render.stdout), CODER_3);
    let rendered = dir.path().join("coder.yaml");
    fs::write(&rendered, CODER_3).expect("write");
    let check = std::process::Command::new(binary())
        .arg("check")
        .arg(&rendered)
        .output()
        .expect("check");
    assert_exit(&check, 1);
    let checked = String::from_utf8_lossy(&check.stderr);
    let checked = checked
        .lines()
        .find(|l| l.contains("spec.ttl"))
        .unwrap_or_else(|| panic!("check found no ttl error: {checked}"));
    let expected = checked.replacen(
        rendered.to_str().unwrap_or_default(),
        "AgentScope agents/coder",
        1,
    );
    assert!(
        expected.starts_with("AgentScope agents/coder:21:"),
        "{expected}"
    );
    assert_eq!(invalid["message"], expected.as_str(), "{invalid}");
    assert!(scopes(&d).contains(&"coder".to_owned()));
    assert_eq!(
        owner(&d),
        "bob@example.org",
        "the last good version stays in force"
    );
    let problems = d.get_json("/v1/status")["scope_errors"].to_string();
    assert!(problems.contains("AgentScope agents/coder"), "{problems}");

    // DELETED: the scope is gone.
    api.events.send(events[2].clone()).expect("send DELETED");
    wait_for("scope coder to go", || {
        (!scopes(&d).contains(&"coder".to_owned())).then_some(())
    });
    assert!(scopes(&d).contains(&"filed".to_owned()));

    // A reload the watch did not cause: the file gone (POST /v1/reload), the object takes
    // its name, and its status says so at the next comparison.
    fs::remove_file(d.scopes.join("filed.yaml")).expect("remove the file");
    let (code, body) = d.request("POST", "/v1/reload", Some("{}"));
    assert_eq!(code, 200, "{body}");
    let freed = api.wait_condition("filed Accepted", "agents", "filed", |c| {
        c["status"] == "True"
    });
    assert_eq!(freed["reason"], "Valid", "{freed}");

    // The daemon only read objects and patched their status.
    for r in api.requests() {
        assert!(
            r.method == "GET" || (r.method == "PATCH" && r.target.contains("/status")),
            "{r:?}"
        );
    }
    drop(d);
}
