//! The agent object of the pipeline's records: one shared allocation per task and scope
//! version, so a record takes one reference count for its agent.

use std::{collections::HashMap, sync::Arc};

use crate::{
    observe::record::{AgentNames, AgentRef},
    scope::Scope,
};

/// The agents of recent records, each made once per task and scope version (a reload or a
/// tool call's scope is another `Arc`): a record then holds one reference count.
#[derive(Default)]
pub(super) struct Agents {
    /// By the address of the task id, with the scope version its events were last judged
    /// by (one per task: a new version replaces the old, which is not kept alive here). The
    /// entry holds the task's `Arc`, so its address is not reused by another while it is
    /// here.
    entries: HashMap<usize, Entry>,
    /// The entry found last (events come in runs of one task): no hashing for those.
    last: Option<Entry>,
}

#[derive(Clone)]
struct Entry {
    scope: Arc<Scope>,
    task: Arc<str>,
    agent: AgentRef,
}

impl Entry {
    fn is(&self, scope: &Arc<Scope>, task: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.scope, scope) && Arc::ptr_eq(&self.task, task)
    }
}

/// Tasks remembered at most; past it they are all made again when next needed (far above
/// the tasks a daemon runs at once; ended tasks are dropped then).
const AGENTS: usize = 4096;

impl Agents {
    pub(super) fn of(&mut self, scope: &Arc<Scope>, task: &Arc<str>) -> AgentRef {
        if let Some(e) = self.last.as_ref().filter(|e| e.is(scope, task)) {
            return e.agent.clone();
        }
        let key = Arc::as_ptr(task).cast::<u8>().addr();
        let entry = if let Some(e) = self.entries.get(&key).filter(|e| e.is(scope, task)) {
            e.clone()
        } else {
            if self.entries.len() >= AGENTS {
                self.entries.clear();
            }
            let e = Entry {
                scope: Arc::clone(scope),
                task: Arc::clone(task),
                agent: AgentRef::new(AgentNames::of(scope, Arc::clone(task))),
            };
            self.entries.insert(key, e.clone());
            e
        };
        let agent = entry.agent.clone();
        self.last = Some(entry);
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
        // A reloaded scope (another version) is another agent, even with the same text,
        // and replaces the task's old one.
        let reloaded = agents.of(&s2, &t1);
        assert!(!a.same(&reloaded));
        assert!(reloaded.same(&agents.of(&s2, &t1)));
        let a = agents.of(&s1, &t1);
        // Many tasks interleaved: each keeps its own.
        let tasks: Vec<Arc<str>> = (0..AGENTS - 2).map(|i| format!("x{i}").into()).collect();
        let made: Vec<AgentRef> = tasks.iter().map(|t| agents.of(&s1, t)).collect();
        for (t, m) in tasks.iter().zip(&made).step_by(97) {
            assert!(m.same(&agents.of(&s1, t)));
            assert_eq!(&*m.task, &**t);
        }
        assert!(a.same(&agents.of(&s1, &t1)), "still kept at the cap");
        // Past the cap, all are made again when next needed.
        let more: Arc<str> = "one more".into();
        assert_eq!(&*agents.of(&s1, &more).task, "one more");
        let again = agents.of(&s1, &t1);
        assert!(!a.same(&again));
        assert_eq!(&*again.task, "t1");
    }
}
