use super::*;
use crate::scope::{ScopeSource, parse_str};

fn scope(spec: &str) -> Scope {
    scope_named("s", spec)
}

fn scope_named(name: &str, spec: &str) -> Scope {
    let text = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: {name}, owner: o}}\nspec:\n{spec}"
    );
    match parse_str(&text, ScopeSource::Inline) {
        Ok(mut scopes) => scopes.remove(0),
        Err(e) => panic!("{e}\n{text}"),
    }
}

fn texts(list: &[Change]) -> Vec<String> {
    list.iter()
        .map(|c| format!("{}: {}", c.dimension, c.what))
        .collect()
}

fn between(old: &str, new: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let d = diff(&scope(old), &scope(new));
    (texts(&d.widens), texts(&d.narrows), texts(&d.changes))
}

#[test]
fn identical_scopes_change_nothing() {
    let spec = "  exec: {allow: [/usr/bin/git]}\n  files: {read: [/a/**]}\n";
    let d = diff(&scope(spec), &scope(spec));
    assert!(!d.widens_any());
    assert!(d.narrows.is_empty() && d.changes.is_empty());
    assert_eq!(d.unchanged, DIMENSIONS.to_vec());
}

#[test]
fn file_entries_added_and_removed() {
    let (w, n, _) = between(
        "  files: {read: [/etc/hostname], write: [/workspace/**]}\n",
        "  files: {write: [/workspace/**, /tmp/out/**]}\n",
    );
    assert_eq!(w, ["files.write: adds write to /tmp/out/**"]);
    assert_eq!(n, ["files.read: removes read of /etc/hostname"]);
}

#[test]
fn a_glob_covering_an_exact_exec_entry_widens_it() {
    let (w, n, _) = between(
        "  exec: {allow: [/usr/bin/git, /usr/bin/ls, /bin/sh]}\n",
        "  exec: {allow: ['/usr/bin/*', /bin/sh]}\n",
    );
    assert_eq!(
        w,
        [
            "exec.allow: widens exec /usr/bin/git to /usr/bin/*",
            "exec.allow: widens exec /usr/bin/ls to /usr/bin/*"
        ]
    );
    assert!(n.is_empty(), "{n:?}");
    // The other way round narrows.
    let (w, n, _) = between(
        "  exec: {allow: ['/usr/bin/*']}\n",
        "  exec: {allow: [/usr/bin/git]}\n",
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(n, ["exec.allow: narrows exec /usr/bin/* to /usr/bin/git"]);
}

#[test]
fn glob_versus_glob_is_a_widening_only_for_a_prefix_double_star() {
    let (w, n, _) = between(
        "  files: {read: ['/srv/a/*.txt']}\n",
        "  files: {read: ['/srv/**']}\n",
    );
    assert_eq!(w, ["files.read: widens read of /srv/a/*.txt to /srv/**"]);
    assert!(n.is_empty());
    let (w, n, _) = between(
        "  files: {read: ['/srv/*.txt']}\n",
        "  files: {read: ['/srv/*.md']}\n",
    );
    assert_eq!(w, ["files.read: adds read of /srv/*.md"]);
    assert_eq!(n, ["files.read: removes read of /srv/*.txt"]);
}

#[test]
fn an_entry_still_covered_is_only_stated() {
    let (w, n, c) = between(
        "  files: {write: ['/w/**', /w/a]}\n",
        "  files: {write: ['/w/**', /w/b]}\n",
    );
    assert!(w.is_empty() && n.is_empty(), "{w:?} {n:?}");
    assert_eq!(
        c,
        [
            "files.write: removes write to /w/a, still covered by /w/**",
            "files.write: adds write to /w/b, already covered by /w/**"
        ]
    );
}

#[test]
fn deny_removed_widens_and_added_narrows() {
    let (w, n, _) = between(
        "  files: {deny: ['**/.env']}\n",
        "  files: {deny: [/root/**]}\n",
    );
    assert_eq!(w, ["files.deny: no longer denies **/.env"]);
    assert_eq!(n, ["files.deny: denies /root/**"]);
    // A deny replaced by a wider one narrows.
    let (w, n, _) = between(
        "  files: {deny: [/root/.ssh/id_rsa]}\n",
        "  files: {deny: ['/root/.ssh/**']}\n",
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        n,
        ["files.deny: widens deny of /root/.ssh/id_rsa to /root/.ssh/**"]
    );
}

#[test]
fn a_supernet_with_the_same_ports_widens_the_rule() {
    let (w, n, _) = between(
        "  network: {connect: [{cidr: 10.0.0.0/24, ports: [443]}]}\n",
        "  network: {connect: [{cidr: 10.0.0.0/8, ports: [443]}]}\n",
    );
    assert_eq!(
        w,
        ["network.connect: widens connect 10.0.0.0/24:443 to 10.0.0.0/8:443"]
    );
    assert!(n.is_empty(), "{n:?}");
    let (w, n, _) = between(
        "  network: {connect: [{cidr: 10.0.0.0/8, ports: [443]}]}\n",
        "  network: {connect: [{cidr: 10.1.0.0/16, ports: [443]}]}\n",
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        n,
        ["network.connect: narrows connect 10.0.0.0/8:443 to 10.1.0.0/16:443"]
    );
}

#[test]
fn ports_and_protocol_on_the_same_target() {
    let (w, n, _) = between(
        "  network: {connect: [{cidr: 10.0.0.0/8, ports: [80, 443]}]}\n",
        "  network: {connect: [{cidr: 10.0.0.0/8, ports: [443, 8443]}]}\n",
    );
    assert_eq!(w, ["network.connect: adds port 8443 to connect 10.0.0.0/8"]);
    assert_eq!(
        n,
        ["network.connect: removes port 80 from connect 10.0.0.0/8"]
    );
    let (w, n, _) = between(
        "  network: {connect: [{cidr: 10.0.0.0/8, ports: [443]}]}\n",
        "  network: {connect: [{cidr: 10.0.0.0/8, ports: [443], protocol: any}]}\n",
    );
    assert_eq!(
        w,
        ["network.connect: widens connect 10.0.0.0/8:443 to 10.0.0.0/8:443/any"]
    );
    assert!(n.is_empty(), "{n:?}");
    let (w, _, _) = between(
        "  network: {connect: [{host: api.example.com, ports: [443]}]}\n",
        "  network: {connect: [{host: api.example.com}]}\n",
    );
    assert_eq!(
        w,
        ["network.connect: widens connect api.example.com from ports 443 to any port"]
    );
}

#[test]
fn a_wildcard_host_covering_a_name_widens_it() {
    let (w, n, _) = between(
        "  network: {connect: [{host: api.example.com, ports: [443]}]}\n",
        "  network: {connect: [{host: '*.example.com', ports: [443]}]}\n",
    );
    assert_eq!(
        w,
        ["network.connect: widens connect api.example.com:443 to *.example.com:443"]
    );
    assert!(n.is_empty(), "{n:?}");
    // Unrelated names are an addition and a removal.
    let (w, n, _) = between(
        "  network: {connect: [{host: a.example.com}]}\n",
        "  network: {connect: [{host: b.example.org}]}\n",
    );
    assert_eq!(w, ["network.connect: adds connect b.example.org"]);
    assert_eq!(n, ["network.connect: removes connect a.example.com"]);
}

#[test]
fn mode_on_violation_ttl_baseline_and_bind() {
    let (w, n, _) = between(
        "  mode: enforce\n  onViolation: kill-agent\n  ttl: 30m\n  files: {baseline: false}\n  network: {bind: [8080]}\n",
        "  mode: audit\n  onViolation: alert\n  network: {bind: [9090]}\n",
    );
    assert_eq!(
        w,
        [
            "mode: mode enforce -> audit: nothing is stopped",
            "onViolation: onViolation kill-agent -> alert",
            "ttl: removes ttl 30m: tasks are never revoked",
            "files.baseline: turns the file baseline on (runtime reads: libraries, locale, certificates)",
            "network.bind: adds bind port 9090",
        ]
    );
    assert_eq!(n, ["network.bind: removes bind port 8080"]);
    let (w, n, _) = between("  ttl: 30m\n", "  ttl: 10m\n  mode: enforce\n");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        n,
        [
            "mode: mode audit -> enforce: violations are stopped",
            "ttl: ttl 30m -> 10m"
        ]
    );
}

#[test]
fn select_changes_are_stated() {
    let (w, n, c) = between(
        "  select: {cgroup: '/agents/a*'}\n",
        "  select: {cgroup: '/agents/b*'}\n",
    );
    assert!(w.is_empty() && n.is_empty());
    assert_eq!(c, ["select: select cgroup /agents/a* -> cgroup /agents/b*"]);
}

#[test]
fn scopes_pair_by_name_and_additions_widen() {
    let old = [
        scope_named("a", "  mode: audit\n"),
        scope_named("b", "  mode: audit\n"),
    ];
    let new = [
        scope_named("a", "  mode: enforce\n"),
        scope_named("c", "  mode: audit\n"),
    ];
    let diffs = diff_files(&old, &new);
    let names: Vec<&str> = diffs.iter().map(|d| d.scope.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(!diffs[0].widens_any());
    assert_eq!(texts(&diffs[1].narrows), ["scope: removes scope b"]);
    assert!(diffs[2].widens_any());
    // One scope on each side is compared whatever its name.
    let renamed = diff_files(
        &[scope_named("a", "  mode: audit\n")],
        &[scope_named("z", "  mode: audit\n")],
    );
    assert_eq!(
        texts(&renamed[0].changes),
        ["metadata.name: renames a to z"]
    );
}

#[test]
fn json_has_old_and_new_values() {
    let d = diff(
        &scope("  exec: {allow: [/usr/bin/git]}\n"),
        &scope("  exec: {allow: ['/usr/bin/*']}\n"),
    );
    let json = serde_json::to_value(&d).expect("json");
    assert_eq!(json["scope"], "s");
    assert_eq!(json["widens"][0]["dimension"], "exec.allow");
    assert_eq!(json["widens"][0]["old"], "/usr/bin/git");
    assert_eq!(json["widens"][0]["new"], "/usr/bin/*");
    assert!(json["narrows"].as_array().is_some_and(Vec::is_empty));
}
