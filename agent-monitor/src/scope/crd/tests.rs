use std::path::Path;

use serde_json::json;

use super::*;
use crate::scope::{ScopeError, load_all};

/// deploy/kubernetes/05-crd.yaml is what the types generate (`agent-monitor crd >
/// deploy/kubernetes/05-crd.yaml` after changing them).
#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/05-crd.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{} differs from the generated CRD: run `agent-monitor crd > deploy/kubernetes/05-crd.yaml`",
        path.display()
    );
}

/// Every node of a structural schema has a `type` and only the keywords Kubernetes accepts
/// there (no `$ref`, `oneOf`, `const`, `additionalProperties` beside `properties`...).
fn assert_structural(schema: &serde_json::Value, at: &str) {
    const KEYWORDS: [&str; 11] = [
        "type",
        "properties",
        "items",
        "additionalProperties",
        "description",
        "required",
        "enum",
        "minimum",
        "maximum",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    ];
    let map = schema.as_object().expect("a schema object");
    assert!(map.contains_key("type"), "no type at {at}");
    assert!(
        !(map.contains_key("properties") && map.contains_key("additionalProperties")),
        "properties and additionalProperties at {at}"
    );
    for key in map.keys() {
        assert!(KEYWORDS.contains(&key.as_str()), "{key} at {at}");
    }
    let properties = map.get("properties").and_then(|p| p.as_object());
    for (name, child) in properties.into_iter().flatten() {
        assert_structural(child, &format!("{at}.{name}"));
    }
    if let Some(items) = map.get("items") {
        assert_structural(items, &format!("{at}[]"));
    }
    if let Some(values) = map.get("additionalProperties") {
        assert_structural(values, &format!("{at}{{}}"));
    }
}

#[test]
fn the_schema_is_structural_and_knows_every_manifest_field() {
    let schema = object_schema();
    assert_structural(&schema, "");
    let spec = &schema["properties"]["spec"]["properties"];
    for field in [
        "owner",
        "identity",
        "mode",
        "ttl",
        "onViolation",
        "select",
        "exec",
        "files",
        "network",
    ] {
        assert!(spec.get(field).is_some(), "spec.{field} missing: {spec}");
    }
    assert_eq!(spec["mode"]["enum"], json!(["audit", "enforce"]));
    assert_eq!(
        spec["select"]["properties"]["kubernetes"]["properties"]["podLabels"]["additionalProperties"]
            ["type"],
        "string"
    );
    assert_eq!(
        spec["network"]["properties"]["connect"]["items"]["properties"]["ports"]["items"]["maximum"],
        65535
    );
    assert_eq!(
        schema["properties"]["status"]["properties"]["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
}

fn namespaced(name: &str) -> ResourceRef {
    ResourceRef {
        namespace: Some("agents".into()),
        name: name.into(),
    }
}

#[test]
fn an_object_renders_as_the_manifest_check_reads() {
    let spec = json!({
        "owner": "team@example.org",
        "select": {"kubernetes": {"podLabels": {"app": "coder"}}},
        "files": {"read": ["/workspace/**"]},
    });
    let text = render(&namespaced("coder"), &spec);
    assert_eq!(
        text,
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: coder\n  owner: \"team@example.org\"\n\
         spec:\n  files:\n    read:\n    - \"/workspace/**\"\n  select:\n    kubernetes:\n      namespace: agents\n      podLabels:\n        app: coder\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let report = load_all(dir.path(), &[(namespaced("coder"), text)]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.scopes[0].name, "coder");
    assert_eq!(report.scopes[0].owner, "team@example.org");
}

#[test]
fn a_namespaced_object_selects_only_its_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = json!({"owner": "o", "select": {"kubernetes": {"namespace": "default"}}});
    let cgroup = json!({"owner": "o", "select": {"cgroup": "/agents/*"}});
    let none = json!({"owner": "o"});
    let texts: Vec<(ResourceRef, String)> = [("a", &other), ("b", &cgroup), ("c", &none)]
        .into_iter()
        .map(|(name, spec)| (namespaced(name), render(&namespaced(name), spec)))
        .collect();
    let report = load_all(dir.path(), &texts);
    assert!(report.scopes.is_empty());
    assert_eq!(report.errors.len(), 3);
    for e in &report.errors {
        assert!(matches!(e, ScopeError::Namespace { .. }), "{e}");
    }
    // A cluster object may select anything.
    let cluster = ResourceRef {
        namespace: None,
        name: "b".into(),
    };
    let report = load_all(dir.path(), &[(cluster.clone(), render(&cluster, &cgroup))]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[test]
fn a_file_keeps_its_name_and_an_invalid_object_says_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("coder.yaml"),
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {name: coder, owner: o}\nspec: {}\n",
    )
    .expect("write");
    let spec = json!({"owner": "o", "select": {"kubernetes": {}}, "ttl": "5x"});
    let bad = render(&namespaced("bad"), &spec);
    let ttl_line = bad
        .lines()
        .position(|l| l.starts_with("  ttl:"))
        .map(|i| i + 1);
    let report = load_all(
        dir.path(),
        &[
            (
                namespaced("coder"),
                render(
                    &namespaced("coder"),
                    &json!({"owner": "o", "select": {"kubernetes": {}}}),
                ),
            ),
            (namespaced("bad"), bad.clone()),
        ],
    );
    assert_eq!(report.scopes.len(), 1);
    assert!(report.scopes[0].source.path().is_some());
    let duplicate = report.errors[0].to_string();
    assert!(
        duplicate.starts_with(
            "AgentScope agents/coder: duplicate scope name \"coder\", already defined in "
        ),
        "{duplicate}"
    );
    let invalid = &report.errors[1];
    assert!(
        invalid.to_string().starts_with("AgentScope agents/bad:"),
        "{invalid}"
    );
    assert!(
        invalid.to_string().contains("invalid duration \"5x\""),
        "{invalid}"
    );
    // The line of `ttl` in the rendered manifest, its value's column.
    assert!(ttl_line.is_some());
    assert_eq!(
        invalid.at(),
        ttl_line.map(|line| (line, 8)),
        "{invalid}\n{bad}"
    );
}

#[test]
fn objects_as_kubectl_prints_them_render_one_document_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("list.yaml");
    std::fs::write(
        &list,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: agent-monitor.dev/v1\n  kind: AgentScope\n  metadata: {name: a, namespace: agents, generation: 2}\n  spec: {owner: o, select: {kubernetes: {}}}\n  status: {conditions: []}\n- apiVersion: agent-monitor.dev/v1\n  kind: ClusterAgentScope\n  metadata: {name: b}\n  spec: {owner: o}\n",
    )
    .expect("write");
    let rendered = render_file(&list).expect("renders");
    let a = ResourceRef {
        namespace: Some("agents".into()),
        name: "a".into(),
    };
    let b = ResourceRef {
        namespace: None,
        name: "b".into(),
    };
    assert_eq!(
        rendered,
        format!(
            "{}---\n{}",
            render(&a, &json!({"owner": "o", "select": {"kubernetes": {}}})),
            render(&b, &json!({"owner": "o"}))
        )
    );
    let pod = dir.path().join("pod.json");
    std::fs::write(
        &pod,
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}"#,
    )
    .expect("write");
    let e = render_file(&pod).expect_err("not a scope");
    assert!(
        e.to_string()
            .ends_with("a \"Pod\" is not an AgentScope or ClusterAgentScope"),
        "{e}"
    );
}
