//! The proposal as `AgentScope` YAML, each entry with the records that justify it.

use std::{collections::BTreeSet, fmt::Write as _};

use super::{
    ProposeError, READ_UNITS, RuleProto, Seen, Target, WRITE_UNITS,
    generalize::{Item, Pattern, collapse, created_dirs},
};
use crate::scope::limits::MAX_LIST_ENTRIES;

/// A YAML scalar: plain when it is an absolute path of safe characters, else double-quoted
/// (JSON's escapes are YAML's).
fn scalar(text: &str) -> String {
    let plain = text.starts_with('/')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@*,=%~".contains(&b))
        || (!text.is_empty()
            && text
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b)));
    if plain {
        text.to_owned()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
    }
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn justification(item: &Item) -> String {
    match &item.pattern {
        Pattern::Exact(_) => plural(item.records, "record"),
        Pattern::Tree(_) => format!(
            "{}, {} below",
            plural(item.records, "record"),
            plural(u64::try_from(item.paths).unwrap_or(u64::MAX), "path")
        ),
    }
}

fn list(
    out: &mut String,
    indent: &str,
    key: &str,
    name: &'static str,
    items: &[(String, String)],
) -> Result<(), ProposeError> {
    if items.len() > MAX_LIST_ENTRIES {
        return Err(ProposeError::TooMany {
            list: name,
            n: items.len(),
        });
    }
    if items.is_empty() {
        let _ = writeln!(out, "{indent}{key}: []");
        return Ok(());
    }
    let _ = writeln!(out, "{indent}{key}:");
    for (value, comment) in items {
        if comment.is_empty() {
            let _ = writeln!(out, "{indent}  - {value}");
        } else {
            let _ = writeln!(out, "{indent}  - {value}  # {comment}");
        }
    }
    Ok(())
}

fn items_of(items: &[Item]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|i| (scalar(&i.pattern.glob()), justification(i)))
        .collect()
}

pub(super) fn render(
    seen: &Seen,
    options: &super::Options,
    (records, tasks): (u64, &BTreeSet<String>),
    partial: bool,
) -> Result<String, ProposeError> {
    // Directories the task made: created or written paths that hold other used paths (a
    // mkdir is not recorded when it is allowed, but what is then made below it is).
    let made: BTreeSet<String> = seen
        .created
        .iter()
        .chain(seen.write.keys())
        .cloned()
        .collect();
    let used: Vec<&String> = seen.write.keys().chain(seen.read.keys()).collect();
    let trees = created_dirs(&made, &used);
    let write = collapse(&seen.write, WRITE_UNITS, &trees);
    let covered_by_write = |p: &Pattern| write.iter().any(|w| w.pattern.covers_pattern(p));
    let read: Vec<Item> = collapse(&seen.read, READ_UNITS, &BTreeSet::new())
        .into_iter()
        .filter(|i| !covered_by_write(&i.pattern))
        .collect();
    let list_items: Vec<Item> = seen
        .list
        .iter()
        .filter(|(dir, _)| !write.iter().chain(&read).any(|i| i.pattern.covers(dir)))
        .map(|(dir, n)| Item {
            pattern: Pattern::Exact(dir.clone()),
            records: *n,
            paths: 1,
        })
        .collect();

    let mut out = String::new();
    let tasks: Vec<&str> = tasks.iter().map(String::as_str).collect();
    let _ = writeln!(
        out,
        "# Proposed by agent-monitor from {} of {} {}.",
        plural(records, "record"),
        if tasks.len() == 1 { "task" } else { "tasks" },
        tasks.join(", ")
    );
    let _ = writeln!(
        out,
        "# Each entry says how many records justify it: delete what looks wrong, replay the\n\
         # file against recorded runs (agent-monitor scope replay), then enforce it."
    );
    if partial {
        let _ = writeln!(
            out,
            "# PARTIAL: records are missing from the logs this was built from (see the\n\
             # warnings): the work they recorded is not covered."
        );
    }
    for ((path, access), n) in &seen.withheld {
        let _ = writeln!(
            out,
            "# Withheld (matches files.deny, never proposed): {access} of {path} ({})",
            plural(*n, "record")
        );
    }
    let _ = writeln!(
        out,
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: {}\n  owner: {}\nspec:\n  mode: enforce\n  onViolation: kill-process",
        scalar(&options.name),
        scalar(&options.owner)
    );
    out.push_str("  exec:\n");
    let exec: Vec<(String, String)> = seen
        .exec
        .iter()
        .map(|(p, n)| {
            (
                scalar(&Pattern::Exact(p.clone()).glob()),
                plural(*n, "record"),
            )
        })
        .collect();
    list(&mut out, "    ", "allow", "exec.allow", &exec)?;
    out.push_str("  files:\n    baseline: true\n");
    list(&mut out, "    ", "read", "files.read", &items_of(&read))?;
    list(&mut out, "    ", "write", "files.write", &items_of(&write))?;
    list(
        &mut out,
        "    ",
        "list",
        "files.list",
        &items_of(&list_items),
    )?;
    let deny: Vec<(String, String)> = options
        .deny
        .iter()
        .map(|d| (scalar(d), String::new()))
        .collect();
    list(&mut out, "    ", "deny", "files.deny", &deny)?;
    network(&mut out, seen)?;
    Ok(out)
}

/// `spec.network`.
fn network(out: &mut String, seen: &Seen) -> Result<(), ProposeError> {
    out.push_str("  network:\n");
    let connect: Vec<(String, String)> = seen
        .connect
        .iter()
        .map(|((target, proto), ports)| {
            let target = match target {
                Target::Host(h) => format!("host: {}", scalar(h)),
                Target::Addr(a) if a.is_ipv4() => format!("cidr: {a}/32"),
                Target::Addr(a) => format!("cidr: \"{a}/128\""),
            };
            let proto = match proto {
                RuleProto::Tcp => "tcp",
                RuleProto::Udp => "udp",
                RuleProto::Any => "any",
            };
            let list: Vec<String> = ports.keys().map(u16::to_string).collect();
            let n: u64 = ports.values().sum();
            (
                format!(
                    "{{{target}, ports: [{}], protocol: {proto}}}",
                    list.join(", ")
                ),
                plural(n, "record"),
            )
        })
        .collect();
    list(out, "    ", "connect", "network.connect", &connect)?;
    let bind: Vec<(String, String)> = seen
        .bind
        .iter()
        .map(|(p, n)| (p.to_string(), plural(*n, "record")))
        .collect();
    list(out, "    ", "bind", "network.bind", &bind)?;
    Ok(())
}
