//! The scope a learning task runs under (`exec --learn NAME`): audit mode, nothing allowed
//! beyond the baseline, so that everything else the task does is recorded, and one
//! internal host rule that admits every name, so that the agent's DNS goes through its own
//! resolver in the daemon, which answers and remembers which name each address came from.
//! Its records then carry the names (`net.host`) the proposal turns into `host:` rules.
//!
//! The rule cannot be written in a manifest (`*` alone is no valid `host:`), and it
//! allows nothing by itself in audit mode: an address it admits is still recorded.

use super::{Scope, ScopeError, ScopeSource};
use crate::policy::{ANY_HOST, CompiledPolicy, ConnectRule, ConnectTarget, RuleProtocol};

/// The learning scope `name`, sponsored by `owner`.
///
/// # Errors
/// A name or owner the manifest schema refuses.
pub(crate) fn learning(name: &str, owner: &str) -> Result<Scope, ScopeError> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let yaml = format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: {}\n  owner: {}\n\
         spec:\n  mode: audit\n  files:\n    baseline: true\n",
        quote(name),
        quote(owner)
    );
    let mut scopes = super::parse_str(&yaml, ScopeSource::Inline)?;
    let mut scope = scopes.remove(0);
    let mut declared = scope.policy.declared().clone();
    declared.connect.push(ConnectRule {
        target: ConnectTarget::Host(ANY_HOST.to_owned()),
        ports: None,
        protocol: RuleProtocol::Any,
    });
    scope.policy = CompiledPolicy::compile(declared).map_err(|error| ScopeError::Policy {
        origin: ScopeSource::Inline,
        name: scope.name.clone(),
        error,
    })?;
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Activity, Context, FileAccess, Verdict, host_matches};

    #[test]
    fn a_learning_scope_records_everything_but_the_baseline_and_admits_every_name() {
        let scope = learning("learned", "dev@example.org").unwrap();
        assert_eq!(scope.mode, crate::scope::Mode::Audit);
        let ctx = Context { tgid: 1 };
        let read = |path| Activity::File {
            path,
            access: FileAccess::Read,
        };
        assert!(matches!(
            scope.policy.evaluate(&read("/etc/ld.so.cache"), ctx),
            Verdict::Allowed
        ));
        assert!(matches!(
            scope.policy.evaluate(&read("/workspace/a"), ctx),
            Verdict::Violation(_)
        ));
        let hosts: Vec<_> = scope.policy.host_rules().collect();
        assert_eq!(hosts.len(), 1);
        assert!(host_matches(ANY_HOST, "registry.npmjs.org"));
    }

    #[test]
    fn a_bad_name_is_refused_by_the_schema() {
        assert!(learning("Not A Name", "o").is_err());
        assert!(learning("ok", "").is_err());
    }
}
