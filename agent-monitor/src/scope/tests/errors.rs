//! Every rejection names file, line and column.

use super::*;

/// The error for `text`, which must fail.
pub(super) fn error(text: &str) -> ScopeError {
    match parse_str(text, Path::new("dir/bad.yaml")) {
        Ok(scopes) => panic!("accepted: {scopes:?}"),
        Err(err) => err,
    }
}

/// 1-based (line, column) of the `nth` (1-based) occurrence of `needle` in `text`; a
/// `|` in `needle` marks the position within it (default: its start).
fn position(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let (head, tail) = needle.split_once('|').unwrap_or(("", needle));
    let whole = format!("{head}{tail}");
    let (at, _) = text.match_indices(&whole).nth(nth - 1).unwrap();
    let before = &text[..at + head.len()];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, column)
}

/// Asserts the error is at the `nth` occurrence of `needle` and its reason contains `reason`.
#[track_caller]
pub(super) fn assert_at(err: &ScopeError, text: &str, needle: &str, nth: usize, reason: &str) {
    let (line, column) = position(text, needle, nth);
    assert_eq!(
        (err.line(), err.column()),
        (Some(line), Some(column)),
        "{err}"
    );
    assert_eq!(err.file(), Some(Path::new("dir/bad.yaml")));
    let shown = err.to_string();
    let prefix = format!("dir/bad.yaml:{line}:{column}: ");
    assert!(shown.starts_with(&prefix), "{shown}");
    assert!(shown.contains(reason), "{shown}");
    assert!(
        !shown.contains(" at line "),
        "position shown twice: {shown}"
    );
}

#[test]
fn yaml_syntax() {
    let text = FULL.replace("  mode: enforce", "\tmode: enforce");
    let err = error(&text);
    // Reported at what the tab indents.
    assert_at(
        &err,
        &text,
        "\t|mode",
        1,
        "tabs disallowed within this context (block indentation)",
    );
    // Bad indentation: reported as such, not as the "missing field" of a cut document.
    let text = FULL.replace("  owner: platform", " owner: platform");
    let err = error(&text);
    assert_at(&err, &text, "owner", 1, "did not find expected key");
}

#[test]
fn unknown_fields_everywhere() {
    for (from, to, needle) in [
        (
            "kind: AgentScope\n",
            "kind: AgentScope\nstatus: {}\n",
            "status",
        ),
        ("  identity:", "  labels: {}\n  identity:", "labels"),
        (
            "  mode: enforce\n",
            "  mode: enforce\n  color: red\n",
            "color",
        ),
        (
            "    baseline: true\n",
            "    baseline: true\n    exec: []\n",
            "exec: []",
        ),
        (
            "{cidr: 10.0.0.0/8, ports: [443]}",
            "{cidr: 10.0.0.0/8, port: 443}",
            "port:",
        ),
        (
            "    bind: [8080]\n",
            "    bind: [8080]\n    listen: [1]\n",
            "listen",
        ),
    ] {
        let text = FULL.replace(from, to);
        assert_ne!(text, FULL);
        let err = error(&text);
        assert_at(&err, &text, needle, 1, "unknown field");
    }
}

#[test]
fn bad_globs() {
    for (glob, reason) in [
        ("\"/tmp/[x\"", "unclosed character class"),
        ("tmp/**", "must be absolute"),
        ("\"\"", "empty path glob"),
        ("/tmp/../etc/**", "never match"),
    ] {
        let text = FULL.replace("/tmp/**]", &format!("{glob}]"));
        let err = error(&text);
        assert_at(&err, &text, glob, 1, reason);
        assert!(err.to_string().contains("spec.files.write[1]"), "{err}");
    }
    let text = FULL.replace("cgroup: /agents/", "cgroup: agents/");
    assert_at(&error(&text), &text, "agents/", 1, "must start with `/`");
}

#[test]
fn bad_cidr() {
    for (cidr, reason) in [
        ("10.0.0.0/33", "invalid CIDR \"10.0.0.0/33\""),
        ("net-ten", "invalid CIDR"),
        ("10.1.2.3/8", "host bits set: write 10.0.0.0/8"),
    ] {
        let text = FULL.replace("10.0.0.0/8", cidr);
        assert_at(&error(&text), &text, cidr, 1, reason);
    }
}

#[test]
fn bad_host() {
    for (host, reason) in [
        ("api_x.github.com", "labels may only contain"),
        ("api..github.com", "1 to 63 characters"),
        ("-api.github.com", "start or end with '-'"),
        ("api.*.com", "whole first label"),
        ("10.0.0.1", "use `cidr:`"),
    ] {
        let text = FULL.replace("api.github.com", host);
        assert_at(&error(&text), &text, host, 1, reason);
    }
}

#[test]
fn missing_owner() {
    let text = FULL.replace("  owner: platform-team@example.org\n", "");
    // A missing field is reported in its mapping, at the last key read (here `identity`);
    // the path names the mapping.
    assert_at(
        &error(&text),
        &text,
        "identity:",
        1,
        "metadata: missing field `owner`",
    );
    let text = FULL.replace("owner: platform-team@example.org", "owner: ' '");
    assert_at(
        &error(&text),
        &text,
        "' '",
        1,
        "metadata.owner: must not be empty",
    );
}

#[test]
fn bad_name() {
    for name in ["Code_Reviewer", "\"\"", &"a".repeat(64), "x.y"] {
        let text = FULL.replace("name: code-reviewer", &format!("name: {name}"));
        assert_at(
            &error(&text),
            &text,
            name,
            1,
            "metadata.name: invalid scope name",
        );
    }
    // 63 characters is the limit, not beyond it.
    let name = "a".repeat(63);
    assert_eq!(
        one(&FULL.replace("name: code-reviewer", &format!("name: {name}"))).name,
        name
    );
}

#[test]
fn bad_ttl() {
    for (ttl, reason) in [
        ("30", "missing unit"),
        ("30x", "unknown unit"),
        ("h", "expected a number"),
        ("1m1h", "largest to smallest"),
        ("1h1h", "largest to smallest"),
        ("0s", "longer than zero"),
        ("99999999999999999999d", "too large"),
        ("\"\"", "empty"),
        ("1h 30m", "expected a number"),
    ] {
        let text = FULL.replace("ttl: 30m", &format!("ttl: {ttl}"));
        assert_at(&error(&text), &text, ttl, 1, reason);
    }
}

#[test]
fn bad_ports() {
    for (port, reason) in [
        ("70000", "invalid port 70000"),
        ("0", "invalid port 0"),
        ("-1", "invalid port -1"),
        ("http", "expected a port number"),
    ] {
        let text = FULL.replace("ports: [53]", &format!("ports: [{port}]"));
        assert_at(
            &error(&text),
            &text,
            &format!("ports: [|{port}]"),
            1,
            reason,
        );
        let text = FULL.replace("bind: [8080]", &format!("bind: [8080, {port}]"));
        assert_at(&error(&text), &text, &format!("8080, |{port}]"), 1, reason);
    }
    let text = FULL.replace("ports: [53]", "ports: []");
    assert_at(
        &error(&text),
        &text,
        "{cidr: 127",
        1,
        "omit `ports` to allow any port",
    );
}

#[test]
fn connect_needs_exactly_one_target() {
    let text = FULL.replace(
        "{host: api.github.com",
        "{cidr: 1.2.3.4/32, host: api.github.com",
    );
    assert_at(
        &error(&text),
        &text,
        "{cidr: 1.2",
        1,
        "either `cidr` or `host`, not both",
    );
    // Block style: the position of the mapping is its first key.
    let text = FULL.replace(
        "      - {host: api.github.com, ports: [443]}\n",
        "      - ports: [443]\n        protocol: any\n",
    );
    assert_at(
        &error(&text),
        &text,
        "- |ports: [443]\n",
        1,
        "set `cidr` or `host`",
    );
    let text = FULL.replace("protocol: udp", "protocol: sctp");
    assert_at(&error(&text), &text, "sctp", 1, "unknown variant `sctp`");
}

#[test]
fn header_and_enums() {
    let text = FULL.replace("dev/v1", "dev/v2");
    assert_at(
        &error(&text),
        &text,
        "agent-monitor.dev/v2",
        1,
        "unknown variant `agent-monitor.dev/v2`",
    );
    let text = FULL.replace("kind: AgentScope", "kind: Pod");
    assert_at(
        &error(&text),
        &text,
        "Pod",
        1,
        "unknown variant `Pod`, expected one of AgentScope",
    );
    let text = FULL.replace("mode: enforce", "mode: block");
    assert_at(&error(&text), &text, "block", 1, "unknown variant `block`");
    let text = FULL.replace("onViolation: kill-agent", "onViolation: kill_agent");
    assert_at(
        &error(&text),
        &text,
        "kill_agent",
        1,
        "unknown variant `kill_agent`",
    );
    // At the document's last key, `spec`.
    let text = FULL.replace("apiVersion: agent-monitor.dev/v1\n", "");
    assert_at(
        &error(&text),
        &text,
        "\n|spec:",
        1,
        "missing field `apiVersion`",
    );
}

#[test]
fn later_documents_have_file_positions() {
    let second = FULL.replace("code-reviewer", "second");
    let third = FULL
        .replace("code-reviewer", "third")
        .replace("ttl: 30m", "ttl: 30");
    let text = format!("{FULL}---\n# a comment\n{second}---\n{third}");
    assert_at(&error(&text), &text, "ttl: |30\n", 1, "missing unit");
    let (line, _) = position(&text, "ttl: |30\n", 1);
    assert!(
        line > 2 * FULL.lines().count(),
        "line {line} is relative to the document"
    );
    // A syntax error in a later document, too.
    let text = format!(
        "{FULL}---\n{}",
        second.replace("  mode: enforce", "\tmode: enforce")
    );
    assert_at(&error(&text), &text, "\t|mode", 1, "tabs disallowed");
}

#[test]
fn duplicate_name_in_one_file() {
    let text = format!("{FULL}---\n{FULL}");
    let err = error(&text);
    assert!(matches!(&err, ScopeError::DuplicateName { name, .. } if name == "code-reviewer"));
    assert_eq!(err.line(), None);
    assert_eq!(
        err.to_string(),
        "dir/bad.yaml: duplicate scope name \"code-reviewer\", already defined in dir/bad.yaml"
    );
}

#[test]
fn no_document() {
    for text in ["", "# nothing here\n", "---\n---\n"] {
        let err = error(text);
        assert!(matches!(err, ScopeError::NoScope { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "dir/bad.yaml: no AgentScope document in the file"
        );
    }
    let err = error("just a string\n");
    assert_eq!((err.line(), err.column()), (Some(1), Some(1)));
}

#[test]
fn yaml_from_the_api_is_named_inline() {
    let text = FULL.replace("ttl: 30m", "ttl: 30");
    let err = parse_str(&text, ScopeSource::Inline).expect_err("bad ttl");
    assert_eq!(err.file(), None);
    let (line, column) = position(&text, "ttl: |30\n", 1);
    assert_eq!(
        err.to_string(),
        format!(
            "<inline>:{line}:{column}: spec.ttl: invalid duration \"30\": missing unit (write e.g. 90s, 30m or 1h30m; units d, h, m, s)"
        )
    );
    let scopes = parse_str(FULL, ScopeSource::Inline).expect("parses");
    assert_eq!(scopes[0].source, ScopeSource::Inline);
    assert_eq!(scopes[0].source.to_string(), "<inline>");
}

#[test]
fn booleans_are_yaml_1_2() {
    let text = FULL.replace("baseline: true", "baseline: no");
    assert_at(
        &error(&text),
        &text,
        "baseline: |no",
        1,
        "spec.files.baseline: ",
    );
}
