//! Pod awareness end to end: a scope with `select.kubernetes` makes the matching containers
//! of "this node" agents. The cgroup tree is laid out as kubelet lays it (systemd driver
//! with containerd and CRI-O, cgroupfs driver) under the cgroup2 root; pod metadata comes
//! from a local API server (127.0.0.1 only) that answers the pod list and watch requests
//! with the responses in tests/fixtures/kubernetes/.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread,
};

use agent_monitor_e2e::{
    CgroupTree, Daemon, assert_exit, command_in_cgroup,
    fake_api::{respond, stream_watch},
    s, wait_for, workspace, workspace_root,
};
use serde_json::Value;

const NODE: &str = "node-e2e";

fn fixture(name: &str) -> String {
    let path = workspace_root()
        .join("tests/fixtures/kubernetes")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The container ID of `namespace/pod/container` in the fixtures.
fn container_id(fixture_json: &Value, namespace: &str, pod: &str, container: &str) -> String {
    let pods: Vec<&Value> = match fixture_json["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![&fixture_json["object"]],
    };
    pods.into_iter()
        .filter(|p| p["metadata"]["namespace"] == namespace && p["metadata"]["name"] == pod)
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|c| c["name"] == container)
        .and_then(|c| c["containerID"].as_str().map(str::to_owned))
        .and_then(|id| id.split_once("://").map(|(_, id)| id.to_owned()))
        .unwrap_or_else(|| panic!("no container {namespace}/{pod}/{container} in the fixture"))
}

fn uid(fixture_json: &Value, namespace: &str, pod: &str) -> String {
    let pods: Vec<&Value> = match fixture_json["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![&fixture_json["object"]],
    };
    pods.into_iter()
        .find(|p| p["metadata"]["namespace"] == namespace && p["metadata"]["name"] == pod)
        .and_then(|p| p["metadata"]["uid"].as_str())
        .expect("uid")
        .to_owned()
}

/// A stand-in for the API server: `GET /api/v1/pods` answers the recorded list; the same
/// path with `watch=true` streams the events the test sends, one JSON object per chunk.
struct ApiServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    events: Sender<String>,
}

impl ApiServer {
    fn start(list: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (events, rx) = mpsc::channel::<String>();
        let rx = Arc::new(Mutex::new(rx));
        let log = Arc::clone(&requests);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (list, log, rx) = (list.clone(), Arc::clone(&log), Arc::clone(&rx));
                thread::spawn(move || serve(conn, &list, &log, &rx));
            }
        });
        Self {
            port,
            requests,
            events,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

/// One connection: requests until the client closes it (the client keeps connections alive).
fn serve(conn: TcpStream, list: &str, log: &Mutex<Vec<String>>, events: &Mutex<Receiver<String>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        // Headers (GET requests carry no body).
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        log.lock().expect("lock").push(target.clone());
        if !target.starts_with("/api/v1/pods") {
            respond(
                &mut out,
                "404 Not Found",
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#,
            );
            continue;
        }
        if !target.contains("watch=true") {
            if !respond(&mut out, "200 OK", list) {
                return;
            }
            continue;
        }
        // One watch at a time gets the events; it ends when the test is over.
        stream_watch(&mut out, &events.lock().expect("lock"));
        return;
    }
}

fn scope(ws: &Path) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: coder\n  owner: k8s@example.org\nspec:\n  select:\n    kubernetes:\n      namespace: agents\n      podLabels: {{app: coder}}\n      container: agent\n  exec:\n    allow: [/usr/bin/cat]\n  files:\n    read: [\"{}/**\"]\n",
        ws.display()
    )
}

/// The agents (tasks) of the daemon: cgroup -> task id.
fn agent_cgroups(d: &Daemon) -> Vec<String> {
    d.get_json("/v1/agents")
        .as_array()
        .map(|a| a.iter().map(|t| s(t, "/cgroup").to_owned()).collect())
        .unwrap_or_default()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: list, watch ADDED, watch MODIFIED"
)]
fn select_kubernetes_adopts_this_nodes_matching_containers_with_pod_metadata() {
    let list_text = fixture("pods-list.json");
    let list: Value = serde_json::from_str(&list_text).expect("list fixture");
    let events: Vec<String> = fixture("watch-events.jsonl")
        .lines()
        .map(str::to_owned)
        .collect();
    let added: Value = serde_json::from_str(&events[0]).expect("event");
    let modified: Value = serde_json::from_str(&events[1]).expect("event");

    // kubelet's layouts, below a prefix of this test's own.
    let tree = CgroupTree::new("am-e2e-k8s");
    let systemd_pod = |uid: &str| {
        format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        )
    };
    let a_uid = uid(&list, "agents", "coder-0");
    let agent = tree.mkdir(&format!(
        "{}/cri-containerd-{}.scope",
        systemd_pod(&a_uid),
        container_id(&list, "agents", "coder-0", "agent")
    ));
    let sidecar = tree.mkdir(&format!(
        "{}/cri-containerd-{}.scope",
        systemd_pod(&a_uid),
        container_id(&list, "agents", "coder-0", "sidecar")
    ));
    // The same labels and container name in another namespace (cgroupfs driver).
    let other_ns = tree.mkdir(&format!(
        "kubepods/burstable/pod{}/{}",
        uid(&list, "default", "coder-0"),
        container_id(&list, "default", "coder-0", "agent")
    ));
    // Pod coder-2 is listed Pending; its CRI-O container runs before kubelet reports it.
    let late_status = tree.mkdir(&format!(
        "{}/crio-{}.scope",
        systemd_pod(&uid(&modified, "agents", "coder-2")),
        container_id(&modified, "agents", "coder-2", "agent")
    ));

    let api = ApiServer::start(list_text);
    let (_g, ws) = workspace();
    fs::write(ws.join("secret-plan.txt"), "plan").expect("write");
    let config = format!(
        "kubernetes:\n  node-name: {NODE}\n  api-server: http://127.0.0.1:{}\n",
        api.port
    );
    let d = Daemon::start_with_config(&[("coder.yaml", &scope(&ws))], &config);
    let rel = |p: &Path| CgroupTree::relative(p);

    // Listed pod, cgroup found by the walk at start.
    let agent_rel = rel(&agent);
    wait_for("coder-0/agent to be adopted", || {
        agent_cgroups(&d).contains(&agent_rel).then_some(())
    });

    // Its processes are the agent; every record names namespace, pod and container.
    let file = ws.join("secret-plan.txt");
    let out = command_in_cgroup(&agent, "/usr/bin/cat", &[file.to_str().expect("utf-8")])
        .output()
        .expect("run in the container cgroup");
    assert_exit(&out, 0);
    let r = d.wait_record("the container's read", |r| {
        s(r, "/kind") == "file" && s(r, "/file/path") == file.to_str().unwrap_or_default()
    });
    assert_eq!(r["kubernetes"]["namespace"], "agents", "{r}");
    assert_eq!(r["kubernetes"]["pod"], "coder-0", "{r}");
    assert_eq!(r["kubernetes"]["container"], "agent", "{r}");
    assert_eq!(r["kubernetes"]["pod_uid"], a_uid.as_str(), "{r}");
    assert_eq!(s(&r, "/agent/scope"), "coder");
    assert_eq!(s(&r, "/process/cgroup"), agent_rel);
    let exec = d.wait_record("the container's exec", |r| {
        s(r, "/kind") == "exec" && s(r, "/exec/path") == "/usr/bin/cat"
    });
    assert_eq!(exec["kubernetes"]["container"], "agent", "{exec}");

    // A pod added by the watch, its container cgroup made afterwards (cgroup_mkdir).
    api.events.send(events[0].clone()).expect("send ADDED");
    let c_uid = uid(&added, "agents", "coder-1");
    let added_dir = tree.mkdir(&format!(
        "{}/cri-containerd-{}.scope",
        systemd_pod(&c_uid),
        container_id(&added, "agents", "coder-1", "agent")
    ));
    let added_rel = rel(&added_dir);
    wait_for("coder-1/agent (added by the watch) to be adopted", || {
        agent_cgroups(&d).contains(&added_rel).then_some(())
    });

    // A container that ran before kubelet reported it: adopted when the status arrives.
    let late_rel = rel(&late_status);
    assert!(!agent_cgroups(&d).contains(&late_rel));
    api.events.send(events[1].clone()).expect("send MODIFIED");
    wait_for("coder-2/agent (status by the watch) to be adopted", || {
        agent_cgroups(&d).contains(&late_rel).then_some(())
    });

    // Not agents: the sidecar, and the same pod name in another namespace.
    let agents = agent_cgroups(&d);
    assert!(!agents.contains(&rel(&sidecar)), "{agents:?}");
    assert!(!agents.contains(&rel(&other_ns)), "{agents:?}");
    assert_eq!(agents.len(), 3, "{agents:?}");

    // Only this node's pods were asked for, by list and by watch.
    let requests = api.requests();
    let selector = format!("fieldSelector=spec.nodeName%3D{NODE}");
    assert!(
        requests.iter().any(|r| !r.contains("watch=true")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("watch=true")),
        "{requests:?}"
    );
    // (The AgentScope watch asks for /apis/agent-monitor.dev/..., refused here.)
    for r in requests.iter().filter(|r| r.starts_with("/api/")) {
        assert!(r.starts_with("/api/v1/pods?"), "{r}");
        assert!(
            r.contains(&selector),
            "a request without the node's field selector: {r}"
        );
    }
    drop(d);
}

#[test]
fn without_a_node_a_kubernetes_scope_selects_nothing_and_says_so() {
    let (_g, ws) = workspace();
    let d = Daemon::start(&[("coder.yaml", &scope(&ws))]);
    assert!(agent_cgroups(&d).is_empty());
    assert!(d.log().contains("no node is configured"), "{}", d.log());
}
