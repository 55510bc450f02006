//! What one record must say: a typed expectation compared field by field with the record's
//! JSON (see docs/API.md for the fields). A field is compared as a JSON value at its own
//! place in the record, never as a substring of the serialized record: "kill" does not
//! match `tgkill`, and a path does not match the same path with a suffix.

use std::fmt;

use serde_json::Value;

/// The fields a record must have. Only the fields set are checked; a field set to
/// [`Value::Null`] must be absent.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// (JSON pointer, value) pairs, in the order they were set.
    fields: Vec<(&'static str, Value)>,
}

impl Expected {
    /// A record of `kind` (`exec`, `file`, `connect`, `send`, `bind`, `escape`, `task`).
    pub fn kind(kind: &str) -> Self {
        Self::default().field("/kind", kind)
    }

    /// An allowed record of `kind`.
    pub fn allowed(kind: &str) -> Self {
        Self::kind(kind).field("/verdict", "allowed")
    }

    /// A violation record of `kind`, of the scope dimension `dimension` (`exec`, `files`,
    /// `network`, `escape`), refused by `rule` (as the record writes it, e.g.
    /// `files.deny[0]: /ws/secret.txt`, `files.read`, `escape.syscall: bpf`).
    pub fn violation(kind: &str, dimension: &str, rule: impl Into<String>) -> Self {
        Self::kind(kind)
            .field("/verdict", "violation")
            .field("/violation/dimension", dimension)
            .field("/violation/rule", rule.into())
    }

    /// An `escape` violation for the syscall `name`: rule `escape.syscall: <name>`.
    pub fn escape_syscall(name: &str) -> Self {
        Self::violation("escape", "escape", format!("escape.syscall: {name}"))
            .field("/escape/technique", "syscall")
            .field("/escape/syscall", name)
    }

    /// What was done: `none`, `blocked`, `refused`, `killed-process`, `killed-agent`.
    #[must_use]
    pub fn action(self, action: &str) -> Self {
        self.field("/action", action)
    }

    /// The mechanism that did it: `landlock`, `seccomp`, `cgroup-hook`, `ebpf`, `daemon`.
    #[must_use]
    pub fn layer(self, layer: &str) -> Self {
        self.field("/layer", layer)
    }

    /// What `onViolation` did after a refusal.
    #[must_use]
    pub fn after(self, after: &str) -> Self {
        self.field("/after", after)
    }

    /// `file.path`.
    #[must_use]
    pub fn path(self, path: &str) -> Self {
        self.field("/file/path", path)
    }

    /// `file.access` (`read`, `write`, `create`, `unlink`, `rename`, ...).
    #[must_use]
    pub fn access(self, access: &str) -> Self {
        self.field("/file/access", access)
    }

    /// `file.new_path` (of a rename or link).
    #[must_use]
    pub fn new_path(self, path: &str) -> Self {
        self.field("/file/new_path", path)
    }

    /// `exec.path`: the image that runs.
    #[must_use]
    pub fn exec_path(self, path: &str) -> Self {
        self.field("/exec/path", path)
    }

    /// `net.address`.
    #[must_use]
    pub fn address(self, address: &str) -> Self {
        self.field("/net/address", address)
    }

    /// `net.port`.
    #[must_use]
    pub fn port(self, port: u16) -> Self {
        self.field("/net/port", port)
    }

    /// `net.family` (`inet`, `inet6`, `unix`).
    #[must_use]
    pub fn family(self, family: &str) -> Self {
        self.field("/net/family", family)
    }

    /// `net.protocol` (`tcp`, `udp`, ...).
    #[must_use]
    pub fn protocol(self, protocol: &str) -> Self {
        self.field("/net/protocol", protocol)
    }

    /// `escape.result`: the syscall's return value (-1: refused with EPERM).
    #[must_use]
    pub fn result(self, result: i64) -> Self {
        self.field("/escape/result", result)
    }

    /// Any other field, by JSON pointer.
    #[must_use]
    pub fn field(mut self, pointer: &'static str, value: impl Into<Value>) -> Self {
        let value = value.into();
        match self.fields.iter_mut().find(|(p, _)| *p == pointer) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((pointer, value)),
        }
        self
    }

    /// The fields of `record` that differ from what is expected: (pointer, expected, got).
    pub fn mismatches<'a>(
        &'a self,
        record: &'a Value,
    ) -> Vec<(&'static str, &'a Value, &'a Value)> {
        self.fields
            .iter()
            .filter_map(|(pointer, want)| {
                let got = record.pointer(pointer).unwrap_or(&Value::Null);
                (got != want).then_some((*pointer, want, got))
            })
            .collect()
    }

    pub fn matches(&self, record: &Value) -> bool {
        self.mismatches(record).is_empty()
    }

    /// For failure messages: how the records closest to the expectation (fewest fields
    /// differing, at most five) differ from it.
    pub fn explain(&self, records: &[Value]) -> String {
        let mut diffs: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                self.mismatches(r)
                    .iter()
                    .map(|(p, want, got)| format!("{p}: want {want}, got {got}"))
                    .collect()
            })
            .collect();
        diffs.sort_by_key(Vec::len);
        diffs
            .iter()
            .take(5)
            .map(|d| format!("  {}", d.join("; ")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (pointer, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{pointer}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Expected;

    #[test]
    fn fields_are_compared_whole_not_as_substrings() {
        let r = json!({"kind": "escape", "verdict": "violation", "action": "blocked",
            "escape": {"technique": "syscall", "syscall": "tgkill"},
            "violation": {"dimension": "escape", "rule": "escape.syscall: tgkill"}});
        assert!(Expected::escape_syscall("tgkill").matches(&r));
        assert!(!Expected::escape_syscall("kill").matches(&r));
        assert!(
            !Expected::escape_syscall("tgkill")
                .action("killed-process")
                .matches(&r)
        );
        assert!(
            Expected::escape_syscall("tgkill")
                .field("/layer", serde_json::Value::Null)
                .matches(&r)
        );
        assert_eq!(
            Expected::escape_syscall("kill").mismatches(&r).len(),
            2,
            "rule and syscall differ"
        );
    }
}
