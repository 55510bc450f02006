//! The agent object of the pipeline's records: one shared allocation per task and scope
//! version, so a record takes one reference count for its agent.

use std::sync::Arc;

use crate::{
    observe::record::{AgentNames, AgentRef},
    scope::Scope,
};

/// The agents of recent records, each made once per task and scope version (a reload or a
/// tool call's scope is another `Arc`): a record then holds one reference count.
#[derive(Default)]
pub(super) struct Agents {
    /// Held here, a scope's or task id's `Arc` cannot be freed and its address reused by
    /// another.
    entries: Vec<(Arc<Scope>, Arc<str>, AgentRef)>,
    /// The entry found last (events come in runs of one task).
    last: usize,
    /// The entry replaced next once there are `AGENTS`.
    next: usize,
}

/// Agents (task and scope version) remembered at most; past it the oldest is made again
/// when next needed.
const AGENTS: usize = 64;

impl Agents {
    pub(super) fn of(&mut self, scope: &Arc<Scope>, task: &Arc<str>) -> AgentRef {
        let is = |(s, t, _): &(Arc<Scope>, Arc<str>, AgentRef)| {
            Arc::ptr_eq(s, scope) && Arc::ptr_eq(t, task)
        };
        if let Some(e) = self.entries.get(self.last).filter(|e| is(e)) {
            return e.2.clone();
        }
        if let Some(i) = self.entries.iter().position(is) {
            self.last = i;
            return self.entries[i].2.clone();
        }
        // Another task of the same scope version lends its scope's names.
        let names = match self.entries.iter().find(|(s, _, _)| Arc::ptr_eq(s, scope)) {
            Some((_, _, other)) => AgentNames {
                task: Arc::clone(task),
                ..(**other).clone()
            },
            None => AgentNames::of(scope, Arc::clone(task)),
        };
        let agent = AgentRef::new(names);
        let entry = (Arc::clone(scope), Arc::clone(task), agent.clone());
        if self.entries.len() < AGENTS {
            self.last = self.entries.len();
            self.entries.push(entry);
        } else {
            self.last = self.next;
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % AGENTS;
        }
        agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str) -> Arc<Scope> {
        let yaml = format!(
            "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: {name}, owner: o}}\nspec: {{}}\n"
        );
        Arc::new(
            crate::scope::parse_str(&yaml, std::path::Path::new("t.yaml"))
                .expect("scope")
                .remove(0),
        )
    }

    #[test]
    fn one_allocation_per_task_and_scope_version() {
        let mut agents = Agents::default();
        let (s1, s2) = (scope("one"), scope("one"));
        let (t1, t2): (Arc<str>, Arc<str>) = ("t1".into(), "t2".into());
        let a = agents.of(&s1, &t1);
        assert!(a.same(&agents.of(&s1, &t1)), "kept");
        let b = agents.of(&s1, &t2);
        assert!(!a.same(&b));
        assert_eq!((&*b.task, &*b.scope, &*b.owner), ("t2", "one", "o"));
        // A reloaded scope (another version) is another agent, even with the same text.
        assert!(!a.same(&agents.of(&s2, &t1)));
        // Past the cap the oldest is replaced and made again when next needed.
        let tasks: Vec<Arc<str>> = (0..AGENTS).map(|i| format!("x{i}").into()).collect();
        for t in &tasks {
            assert_eq!(&*agents.of(&s1, t).task, &**t);
        }
        let again = agents.of(&s1, &t1);
        assert!(!a.same(&again));
        assert_eq!(&*again.task, "t1");
    }
}
