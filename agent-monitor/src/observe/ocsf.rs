//! Records as OCSF events (`run --audit-format ocsf`, `events --format ocsf`): one pure
//! mapping from a record's native JSON (`record::Record` or `record::Gap`, as written by
//! `--audit-format json`) to an OCSF event of [`OCSF_VERSION`]. docs/API.md ("OCSF") has the
//! class table and where every agent-monitor field goes.
//!
//! It maps the JSON form rather than `Record` so that the daemon's sink and the `events`
//! client (which only has the API's JSON lines) share it.

use serde_json::{Map, Value, json};

/// The OCSF version the events follow (`metadata.version`); the e2e test validates them
/// against this version's schema.
pub(crate) const OCSF_VERSION: &str = "1.5.0";

/// The profiles every event declares (`metadata.profiles`): `host` (device, actor),
/// `security_control` (action, disposition), `container` (`process.container` of
/// Kubernetes agents), `datetime`
/// (`time_dt`, which keeps the record's nanoseconds; `time` has milliseconds).
pub(crate) const PROFILES: [&str; 4] = ["host", "security_control", "container", "datetime"];

/// What the audit log, stdout's `json` and `events` write: native records or OCSF events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuditFormat {
    /// agent-monitor's own records (docs/API.md "Records").
    #[default]
    Json,
    /// OCSF events (docs/API.md "OCSF").
    Ocsf,
}

/// What the mapping takes from outside the record: the host it was recorded on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Context {
    pub(crate) hostname: String,
}

impl Context {
    /// This host's name (`device.hostname`), from the kernel; `localhost` when unreadable.
    pub(crate) fn local() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        Self { hostname }
    }
}

/// Whether a JSON line is an OCSF event rather than a native record.
pub(crate) fn is_ocsf(v: &Value) -> bool {
    v.get("kind").is_none() && v.get("class_uid").is_some() && v.get("metadata").is_some()
}

/// One OCSF class: uid, name, category uid and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    pub(crate) uid: u32,
    pub(crate) name: &'static str,
    category: (u32, &'static str),
}

pub(crate) const FILE_ACTIVITY: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category: (1, "System Activity"),
};
pub(crate) const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category: (1, "System Activity"),
};
pub(crate) const EVENT_LOG_ACTIVITY: Class = Class {
    uid: 1008,
    name: "Event Log Activity",
    category: (1, "System Activity"),
};
pub(crate) const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category: (2, "Findings"),
};
pub(crate) const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category: (4, "Network Activity"),
};
pub(crate) const APPLICATION_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category: (6, "Application Activity"),
};
pub(crate) const BASE_EVENT: Class = Class {
    uid: 0,
    name: "Base Event",
    category: (0, "Uncategorized"),
};

/// The class a native record maps to: a violation or an escape attempt is a finding, the
/// rest by kind.
pub(crate) fn class_of(native: &Value) -> Class {
    let kind = text(native, "/kind");
    if kind == "gap" {
        return EVENT_LOG_ACTIVITY;
    }
    if native.get("violation").is_some() || kind == "escape" {
        return DETECTION_FINDING;
    }
    match kind {
        "exec" => PROCESS_ACTIVITY,
        // A refused exec is a file record naming the image.
        "file" if native.get("exec").is_some() => PROCESS_ACTIVITY,
        "file" if native.get("file").is_some() => FILE_ACTIVITY,
        "connect" | "send" | "bind" => NETWORK_ACTIVITY,
        "task" => APPLICATION_LIFECYCLE,
        _ => BASE_EVENT,
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The activity (id, name) of an activity class's record.
fn activity(class: Class, native: &Value) -> (u32, String) {
    let other = |name: &str| (99, name.to_owned());
    match class.uid {
        1001 => match text(native, "/file/access") {
            "create" => (1, "Create".into()),
            "read" => (2, "Read".into()),
            "write" | "truncate" => (3, "Update".into()),
            "unlink" => (4, "Delete".into()),
            "rename" => (5, "Rename".into()),
            "link" => other("Link"),
            "list" => other("List"),
            a => other(a),
        },
        1007 => (1, "Launch".into()),
        4001 => match text(native, "/kind") {
            "connect" => (1, "Open".into()),
            "send" => (6, "Traffic".into()),
            "bind" => (7, "Listen".into()),
            k => other(k),
        },
        6002 => match text(native, "/task/event") {
            "ended" | "revoked" => (4, "Stop".into()),
            "started" => (3, "Start".into()),
            e => other(&capitalised(e)),
        },
        2004 => (1, "Create".into()),
        1008 => other("Records Dropped"),
        _ => other(&capitalised(text(native, "/kind"))),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| {
        f.to_uppercase().chain(c).collect::<String>()
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the records' `time`) as milliseconds since the epoch.
pub(crate) fn epoch_ms(t: &str) -> Option<i64> {
    i64::try_from(crate::observe::record::parse_rfc3339_nanos(t)? / 1_000_000).ok()
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn basename(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// Inserts `value` under `key` unless it is null.
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    if !value.is_null() {
        map.insert(key.to_owned(), value);
    }
}

fn field(native: &Value, pointer: &str) -> Value {
    native.pointer(pointer).cloned().unwrap_or(Value::Null)
}

/// `actor.process.container` (the `container` profile; a finding's evidence has it too) of
/// a record of a Kubernetes agent.
fn container(native: &Value) -> Value {
    let Some(k) = native.get("kubernetes") else {
        return Value::Null;
    };
    let mut c = Map::new();
    c.insert("name".into(), field(k, "/container"));
    c.insert("uid".into(), field(k, "/container_id"));
    c.insert("orchestrator".into(), json!("kubernetes"));
    let pod_uid = text(k, "/pod_uid");
    if is_uuid(pod_uid) {
        c.insert("pod_uuid".into(), json!(pod_uid));
    }
    Value::Object(c)
}

/// The record's process: the one that acted (`actor.process`).
fn process(native: &Value) -> Value {
    let Some(p) = native.get("process") else {
        return Value::Null;
    };
    let mut out = Map::new();
    put(&mut out, "pid", field(p, "/pid"));
    put(&mut out, "tid", field(p, "/tid"));
    put(&mut out, "name", field(p, "/comm"));
    if let Some(exe) = p.get("exe").and_then(Value::as_str) {
        out.insert("file".into(), file_object(exe, 1));
    }
    // 0: the parent was not known (outside the agent's pid namespace, or gone).
    if let Some(ppid) = p.get("ppid").filter(|v| v.as_u64().is_some_and(|n| n > 0)) {
        out.insert("parent_process".into(), json!({ "pid": ppid }));
    }
    put(&mut out, "container", container(native));
    Value::Object(out)
}

fn file_object(path: &str, type_id: u32) -> Value {
    json!({ "name": basename(path), "path": path, "type_id": type_id })
}

/// `actor`: the agent (scope, task, owner, identity) and the process that acted.
fn actor(native: &Value) -> Value {
    let mut a = Map::new();
    if let Some(agent) = native.get("agent") {
        put(&mut a, "app_name", field(agent, "/scope"));
        put(&mut a, "app_uid", field(agent, "/identity"));
        a.insert("session".into(), json!({ "uid": field(agent, "/task") }));
        a.insert("user".into(), json!({ "name": field(agent, "/owner") }));
    }
    put(&mut a, "process", process(native));
    if a.is_empty() {
        Value::Null
    } else {
        Value::Object(a)
    }
}

/// The launched process of an exec: the new image, its command line, its parent.
fn launched(native: &Value) -> Value {
    let mut p = process(native).as_object().cloned().unwrap_or_default();
    let path = text(native, "/exec/path");
    p.insert("name".into(), json!(basename(path)));
    p.insert("file".into(), file_object(path, 1));
    if let Some(argv) = native.pointer("/exec/argv").and_then(Value::as_array) {
        let words: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
        p.insert("cmd_line".into(), json!(words.join(" ")));
    }
    if !p.contains_key("pid") {
        p.insert("pid".into(), json!(0));
    }
    Value::Object(p)
}

/// `dst_endpoint` (or `src_endpoint` for a bind) of a network record: an IP address, or
/// the Unix socket's name.
fn endpoint(native: &Value) -> Value {
    let address = text(native, "/net/address");
    let mut e = Map::new();
    if address.parse::<std::net::IpAddr>().is_ok() {
        e.insert("ip".into(), json!(address));
    } else {
        e.insert("name".into(), json!(address));
    }
    put(&mut e, "port", field(native, "/net/port"));
    Value::Object(e)
}

fn connection_info(native: &Value) -> Value {
    let protocol = text(native, "/net/protocol");
    let mut c = Map::new();
    c.insert("protocol_name".into(), json!(protocol));
    match protocol {
        "tcp" => c.insert("protocol_num".into(), json!(6)),
        "udp" => c.insert("protocol_num".into(), json!(17)),
        _ => None,
    };
    let (direction_id, direction) = match text(native, "/kind") {
        "bind" => (1, "Inbound"),
        _ => (2, "Outbound"),
    };
    c.insert("direction_id".into(), json!(direction_id));
    c.insert("direction".into(), json!(direction));
    Value::Object(c)
}

/// The activity's own objects (file, process, endpoints): top-level in an activity class,
/// the evidence of a finding.
fn objects(native: &Value) -> Map<String, Value> {
    let mut o = Map::new();
    if native.get("exec").is_some() {
        o.insert("process".into(), launched(native));
    }
    if let Some(f) = native.get("file") {
        let path = text(f, "/path");
        let type_id = if text(f, "/access") == "list" { 2 } else { 0 };
        o.insert("file".into(), file_object(path, type_id));
        if let Some(to) = f.get("new_path").and_then(Value::as_str) {
            o.insert("file_result".into(), file_object(to, type_id));
        }
    }
    if native.get("net").is_some() {
        let side = if text(native, "/kind") == "bind" {
            "src_endpoint"
        } else {
            "dst_endpoint"
        };
        o.insert(side.into(), endpoint(native));
        o.insert("connection_info".into(), connection_info(native));
    }
    o
}

/// `action_id`/`disposition_id` (`security_control`) from the verdict and the action.
fn control(native: &Value) -> [(&'static str, Value); 4] {
    let violation = text(native, "/verdict") == "violation";
    let (action_id, action, disposition_id, disposition) = match text(native, "/action") {
        "blocked" | "refused" => (2, "Denied", 2, "Blocked"),
        "killed-process" => (2, "Denied", 99, "Killed Process"),
        "killed-agent" => (2, "Denied", 99, "Killed Agent"),
        _ if violation => (3, "Observed", 15, "Detected"),
        _ => (1, "Allowed", 1, "Allowed"),
    };
    [
        ("action_id", json!(action_id)),
        ("action", json!(action)),
        ("disposition_id", json!(disposition_id)),
        ("disposition", json!(disposition)),
    ]
}

/// agent-monitor's fields that have no OCSF attribute, under their native names.
fn unmapped(native: &Value) -> Value {
    let mut u = Map::new();
    for key in [
        "kind",
        "verdict",
        "action",
        "layer",
        "after",
        "count",
        "truncated",
        "kubernetes",
        "task",
        "escape",
        "violation",
        "lost",
        "since",
    ] {
        put(&mut u, key, field(native, &format!("/{key}")));
    }
    if let Some(f) = native.get("file") {
        let mut file = Map::new();
        put(&mut file, "access", field(f, "/access"));
        put(&mut file, "unresolved", field(f, "/unresolved"));
        u.insert("file".into(), Value::Object(file));
    }
    if let Some(n) = native.get("net") {
        let mut net = Map::new();
        put(&mut net, "family", field(n, "/family"));
        put(&mut net, "protocol", field(n, "/protocol"));
        put(&mut net, "host", field(n, "/host"));
        u.insert("net".into(), Value::Object(net));
    }
    if let Some(e) = native.get("exec") {
        let mut exec = Map::new();
        put(&mut exec, "argv", field(e, "/argv"));
        put(&mut exec, "script", field(e, "/script"));
        u.insert("exec".into(), Value::Object(exec));
    }
    put(&mut u, "cgroup", field(native, "/process/cgroup"));
    if native.get("class_uid").is_some() || class_of(native) == BASE_EVENT {
        // Unknown to this build: kept whole.
        u.insert("record".into(), native.clone());
    }
    Value::Object(u)
}

/// The finding of a violation or an escape: what was broken and the evidence.
fn finding(native: &Value, time_ms: i64) -> Map<String, Value> {
    let mut f = Map::new();
    let task = text(native, "/agent/task");
    let pid = native
        .pointer("/process/pid")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let tid = native
        .pointer("/process/tid")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut info = Map::new();
    info.insert(
        "uid".into(),
        json!(format!("{task}/{}/{pid}/{tid}", text(native, "/time"))),
    );
    let escape = native.get("escape");
    let title = match (native.get("violation"), escape) {
        (Some(v), _) => text(v, "/reason").to_owned(),
        (None, Some(e)) => format!("escape attempt: {}", text(e, "/technique")),
        (None, None) => text(native, "/kind").to_owned(),
    };
    info.insert("title".into(), json!(title));
    let mut types = Vec::new();
    if let Some(v) = native.get("violation") {
        types.push(field(v, "/dimension"));
        info.insert(
            "analytic".into(),
            json!({ "type_id": 1, "type": "Rule", "name": field(v, "/rule") }),
        );
    }
    if let Some(e) = escape {
        types.push(json!("escape"));
        types.push(field(e, "/technique"));
    }
    types.retain(|t| !t.is_null());
    // An escape's violation has the dimension `escape` already.
    types.dedup();
    info.insert("types".into(), Value::Array(types));
    info.insert("created_time".into(), json!(time_ms));
    f.insert("finding_info".into(), Value::Object(info));
    let mut evidence = objects(native);
    if !evidence.contains_key("process") {
        put(&mut evidence, "process", process(native));
    }
    put(&mut evidence, "container", container(native));
    if evidence.is_empty() {
        put(&mut evidence, "actor", actor(native));
    }
    f.insert("evidences".into(), json!([evidence]));
    f.insert("is_alert".into(), json!(true));
    f.insert("status_id".into(), json!(1));
    f.insert("status".into(), json!("New"));
    f
}

/// Severity (id, name) of a record of `class`.
fn severity(class: Class, native: &Value) -> (u32, &'static str) {
    let violation = text(native, "/verdict") == "violation";
    match class.uid {
        2004 if text(native, "/kind") == "escape" => (4, "High"),
        2004 => (3, "Medium"),
        1008 => (4, "High"),
        6002 if violation || text(native, "/task/event") == "revoked" => (3, "Medium"),
        _ if violation => (3, "Medium"),
        _ => (1, "Informational"),
    }
}

/// A native record (or gap line) as an OCSF event.
pub(crate) fn event(native: &Value, ctx: &Context) -> Value {
    let class = class_of(native);
    let time_text = text(native, "/time");
    let time_ms = epoch_ms(time_text).unwrap_or(0);
    let (activity_id, activity_name) = activity(class, native);
    let (severity_id, severity_name) = severity(class, native);
    let mut e = Map::new();
    e.insert("class_uid".into(), json!(class.uid));
    e.insert("class_name".into(), json!(class.name));
    e.insert("category_uid".into(), json!(class.category.0));
    e.insert("category_name".into(), json!(class.category.1));
    e.insert("activity_id".into(), json!(activity_id));
    e.insert(
        "type_uid".into(),
        json!(u64::from(class.uid) * 100 + u64::from(activity_id)),
    );
    e.insert(
        "type_name".into(),
        json!(format!("{}: {activity_name}", class.name)),
    );
    e.insert("activity_name".into(), json!(activity_name));
    e.insert("severity_id".into(), json!(severity_id));
    e.insert("severity".into(), json!(severity_name));
    e.insert("time".into(), json!(time_ms));
    if epoch_ms(time_text).is_some() {
        e.insert("time_dt".into(), json!(time_text));
    }
    e.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "agent-monitor",
                "vendor_name": "agent-monitor",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "profiles": PROFILES,
            "log_name": "audit",
        }),
    );
    e.insert(
        "device".into(),
        json!({ "type_id": 0, "type": "Unknown", "hostname": ctx.hostname }),
    );
    put(&mut e, "actor", actor(native));
    match class.uid {
        2004 => e.extend(finding(native, time_ms)),
        6002 => {
            e.insert(
                "app".into(),
                json!({
                    "name": field(native, "/agent/scope"),
                    "uid": field(native, "/agent/task"),
                }),
            );
        }
        1008 => {
            e.insert("log_name".into(), json!("audit"));
            e.insert("log_provider".into(), json!("agent-monitor"));
        }
        0 => {}
        _ => e.extend(objects(native)),
    }
    if class != DETECTION_FINDING && class != BASE_EVENT {
        let failed = matches!(text(native, "/action"), "blocked" | "refused")
            || (class == APPLICATION_LIFECYCLE && text(native, "/verdict") == "violation");
        let (id, name) = if failed {
            (2, "Failure")
        } else {
            (1, "Success")
        };
        e.insert("status_id".into(), json!(id));
        e.insert("status".into(), json!(name));
    }
    let message = [
        "/violation/reason",
        "/task/reason",
        "/reason",
        "/escape/technique",
    ]
    .iter()
    .map(|p| text(native, p))
    .find(|m| !m.is_empty());
    if let Some(m) = message {
        e.insert("message".into(), json!(m));
    }
    if class != EVENT_LOG_ACTIVITY && native.get("agent").is_some() {
        e.extend(control(native).map(|(k, v)| (k.to_owned(), v)));
    }
    e.insert("unmapped".into(), unmapped(native));
    Value::Object(e)
}

#[cfg(test)]
mod tests;
