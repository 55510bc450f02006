//! Scopes as Kubernetes objects: the `AgentScope` (namespaced) and `ClusterAgentScope`
//! custom resources of `agent-monitor.dev/v1`, whose CRD schema is generated here from the
//! manifest types (`agent-monitor crd`, committed as deploy/kubernetes/05-crd.yaml), and the
//! manifest text the daemon renders from one object to load it as it loads a file.
//!
//! An object is the manifest document with the manifest's `metadata.owner` and
//! `metadata.identity` moved into `spec` (Kubernetes object metadata holds neither).

mod leaves;
mod objects;
mod yaml_out;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::ResourceRef;
use super::manifest::ScopeSpec;
use super::values::NonEmpty;

pub(crate) use objects::render_file;
pub(crate) use yaml_out::to_yaml;

pub(crate) const GROUP: &str = "agent-monitor.dev";
pub(crate) const VERSION: &str = "v1";
/// The one condition type the daemon writes.
#[cfg_attr(
    not(feature = "kubernetes"),
    expect(
        dead_code,
        reason = "objects come only from the API watcher, absent from this build"
    )
)]
pub(crate) const ACCEPTED: &str = "Accepted";

/// The two resources: (kind, plural, CRD scope, short name).
pub(crate) const KINDS: [(&str, &str, &str, &str); 2] = [
    ("AgentScope", "agentscopes", "Namespaced", "ascope"),
    (
        "ClusterAgentScope",
        "clusteragentscopes",
        "Cluster",
        "cascope",
    ),
];

/// What the agents of the scope may do (docs/SCOPES.md); `owner` and `identity` are a
/// manifest's `metadata.owner` and `metadata.identity`.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[expect(dead_code, reason = "only its schema is used")]
struct ResourceSpec {
    /// The accountable human sponsor (a manifest's `metadata.owner`).
    owner: NonEmpty,
    /// Workload identity such as a SPIFFE ID (a manifest's `metadata.identity`).
    identity: Option<NonEmpty>,
    #[serde(flatten)]
    scope: ScopeSpec,
}

/// Whether the daemons took the scope in, written by them with a merge patch.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceStatus {
    /// The `metadata.generation` the conditions are about.
    pub(crate) observed_generation: Option<i64>,
    pub(crate) conditions: Vec<Condition>,
}

/// One condition, as Kubernetes' own objects have them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Condition {
    /// `Accepted`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// `True` when the scope is in force as written, `False` when it is not.
    pub(crate) status: String,
    /// `Valid`, `Invalid` (the message is what `agent-monitor check` prints), or `Conflict`
    /// (a scope file or another object already has the name).
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) observed_generation: Option<i64>,
    /// RFC 3339.
    pub(crate) last_transition_time: String,
}

/// deploy/kubernetes/05-crd.yaml.
#[must_use]
pub(crate) fn crd_yaml() -> String {
    let mut out = String::from(
        "# AgentScope (namespaced) and ClusterAgentScope: scopes as Kubernetes objects\n\
         # (docs/KUBERNETES.md). Generated from the manifest types by `agent-monitor crd`:\n\
         # do not edit; a test fails when this file and the types differ.\n",
    );
    for (kind, plural, scope, short) in KINDS {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd(kind, plural, scope, short)));
    }
    out
}

fn crd(kind: &str, plural: &str, scope: &str, short: &str) -> Value {
    let column = |name: &str, path: &str| json!({"name": name, "type": "string", "jsonPath": path});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.{GROUP}"),
            "labels": {"app.kubernetes.io/name": "agent-monitor"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_ascii_lowercase(),
                "shortNames": [short],
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    column("Mode", ".spec.mode"),
                    column("Owner", ".spec.owner"),
                    column("Accepted", ".status.conditions[?(@.type==\"Accepted\")].status"),
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": object_schema()},
            }],
        },
    })
}

/// The object's schema: structural (no `$ref`, no `additionalProperties` beside
/// `properties`), every field known, so the API server prunes nothing a manifest may hold.
fn object_schema() -> Value {
    let generator = || {
        schemars::generate::SchemaSettings::openapi3()
            .with(|s| {
                s.inline_subschemas = true;
                s.meta_schema = None;
            })
            .into_generator()
    };
    let spec = generator().into_root_schema_for::<ResourceSpec>();
    let status = generator().into_root_schema_for::<ResourceStatus>();
    let mut status = structural(status.to_value());
    if let Some(conditions) = status.pointer_mut("/properties/conditions")
        && let Some(map) = conditions.as_object_mut()
    {
        map.insert("x-kubernetes-list-type".into(), json!("map"));
        map.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    }
    json!({
        "type": "object",
        "description": "An agent scope (docs/SCOPES.md): what the agents it selects may run, read, write and reach.",
        "required": ["spec"],
        "properties": {
            "spec": structural(spec.to_value()),
            "status": status,
        },
    })
}

/// Drops what a structural schema may not have or does not need: the generator's titles,
/// formats, defaults (the daemon applies its own) and `additionalProperties: false`
/// (unknown fields are pruned by the API server and refused by `kubectl apply`'s strict
/// validation); turns a `oneOf` of single values (a documented enum) into one `enum`.
fn structural(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        for key in [
            "$schema", "title", "default", "format", "nullable", "examples",
        ] {
            map.remove(key);
        }
        if map.get("additionalProperties") == Some(&Value::Bool(false)) {
            map.remove("additionalProperties");
        }
        if let Some(Value::Array(choices)) = map.get("oneOf")
            && let Some(values) = single_values(choices)
        {
            map.remove("oneOf");
            map.insert("type".into(), json!("string"));
            map.insert("enum".into(), Value::Array(values));
        }
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            if let Some(v) = map.remove(&key) {
                map.insert(key, structural(v));
            }
        }
        if let Some(Value::Object(properties)) = map.get_mut("properties") {
            let names: Vec<String> = properties.keys().cloned().collect();
            for name in names {
                if let Some(v) = properties.remove(&name) {
                    properties.insert(name, structural(v));
                }
            }
        }
    } else if let Some(items) = value.as_array_mut() {
        for item in items.iter_mut() {
            *item = structural(item.take());
        }
    }
    value
}

fn single_values(choices: &[Value]) -> Option<Vec<Value>> {
    let mut values = Vec::new();
    for choice in choices {
        match (choice.get("enum"), choice.get("const")) {
            (Some(Value::Array(some)), _) => values.extend(some.iter().cloned()),
            (None, Some(one)) => values.push(one.clone()),
            _ => return None,
        }
    }
    Some(values)
}

/// The manifest document of one object: `apiVersion`, `kind: AgentScope`, `metadata` with
/// the object's name and `spec.owner`/`spec.identity`, and the rest of `spec`; keys in
/// alphabetical order, as `kubectl get -o yaml` prints them. For a namespaced object a
/// `select.kubernetes` without a namespace gets the object's.
#[must_use]
pub(crate) fn render(resource: &ResourceRef, spec: &Value) -> String {
    let mut spec = spec.as_object().cloned().unwrap_or_default();
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(resource.name));
    for key in ["owner", "identity"] {
        if let Some(v) = spec.remove(key) {
            metadata.insert(key.into(), v);
        }
    }
    if let Some(namespace) = &resource.namespace
        && let Some(Value::Object(select)) = spec.get_mut("select")
        && let Some(Value::Object(kubernetes)) = select.get_mut("kubernetes")
    {
        kubernetes
            .entry("namespace")
            .or_insert_with(|| json!(namespace));
    }
    to_yaml(&json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "AgentScope",
        "metadata": metadata,
        "spec": spec,
    }))
}

#[cfg(test)]
mod tests;
