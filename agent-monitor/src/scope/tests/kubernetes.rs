//! `spec.select.kubernetes`.

use super::errors::{assert_at, error};
use super::*;

fn scope(select: &str) -> String {
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: pods, owner: o@example.org}}\nspec:\n  select:\n{select}  exec:\n    allow: [/bin/sh]\n"
    )
}

#[test]
fn a_kubernetes_selector_parses_and_round_trips() {
    let text = scope(
        "    kubernetes:\n      namespace: agents\n      podLabels: {app: coder, app.kubernetes.io/part-of: ai}\n      container: agent\n",
    );
    let scopes = parse_str(&text, Path::new("k.yaml")).expect("parses");
    let s = &scopes[0];
    assert!(s.select_cgroup.is_none());
    let k = s.kubernetes().expect("selector");
    assert_eq!(k.namespace.as_ref().map(|n| n.0.as_str()), Some("agents"));
    assert_eq!(k.pod_labels.len(), 2);
    let json = serde_json::to_value(&s.spec).expect("json");
    assert_eq!(json["select"]["kubernetes"]["namespace"], "agents");
    assert_eq!(json["select"]["kubernetes"]["podLabels"]["app"], "coder");
    assert_eq!(json["select"]["kubernetes"]["container"], "agent");
    assert!(json["select"].get("cgroup").is_none(), "{json}");
}

#[test]
fn select_cgroup_still_works_alone() {
    let scopes = parse_str(&scope("    cgroup: /agents/*\n"), Path::new("c.yaml")).expect("ok");
    assert!(scopes[0].select_cgroup.is_some());
    assert!(scopes[0].kubernetes().is_none());
}

#[test]
fn select_needs_exactly_one_way() {
    for select in [
        "    cgroup: /agents/*\n    kubernetes: {namespace: a}\n",
        "    {}\n",
    ] {
        let text = scope(select);
        let err = error(&text);
        assert!(
            err.to_string()
                .contains("exactly one of `cgroup` and `kubernetes`"),
            "{err}"
        );
        assert!(err.line().is_some(), "{err}");
    }
    let err = error(&scope("    kubernetes: {container: agent}\n"));
    assert!(
        err.to_string()
            .contains("must name a namespace or podLabels"),
        "{err}"
    );
}

#[test]
fn kubernetes_values_are_checked_where_they_stand() {
    let text = scope("    kubernetes:\n      namespace: Agents_1\n");
    assert_at(&error(&text), &text, "Agents_1", 1, "invalid name");
    let text = scope("    kubernetes:\n      podLabels: {app: \"no spaces\"}\n");
    assert_at(
        &error(&text),
        &text,
        "\"no spaces\"",
        1,
        "invalid label value",
    );
    let text = scope("    kubernetes:\n      namespace: a\n      labels: {app: x}\n");
    assert_at(&error(&text), &text, "labels:", 1, "unknown field `labels`");
}
