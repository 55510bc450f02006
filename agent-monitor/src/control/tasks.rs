//! Tasks: one agent each, with its own slot (the kernel-side tag), cgroup and scope. Created
//! by `exec`/`POST /v1/tasks`, or adopted from cgroups matching a scope's `select.cgroup`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::{
    observe::record::{CallRef, rfc3339},
    scope::Scope,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Origin {
    /// Created on request; the daemon owns (and removes) its cgroup.
    Exec,
    /// A cgroup matched a scope's `select.cgroup`; the cgroup belongs to someone else.
    Select,
}

#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) id: String,
    pub(crate) slot: u32,
    pub(crate) scope: Arc<Scope>,
    /// Path relative to the cgroup2 root.
    pub(crate) cgroup: String,
    pub(crate) cgroup_id: u64,
    pub(crate) origin: Origin,
    pub(crate) started: SystemTime,
    pub(crate) created: Instant,
    pub(crate) expires: Option<Instant>,
    pub(crate) expires_wall: Option<SystemTime>,
    /// The manifest of an ad-hoc scope (kept so a restarted daemon can rebuild it).
    pub(crate) scope_yaml: Option<String>,
    /// The requester's working directory: the cwd of processes first seen in the task.
    pub(crate) start_cwd: Option<PathBuf>,
    /// Some activity of the task was observed (so an empty cgroup means it finished).
    pub(crate) seen: bool,
    pub(crate) events: u64,
    pub(crate) violations: u64,
    /// One line naming the last violation that stopped something (for `exec`'s message).
    pub(crate) last_violation: Option<String>,
    /// Events for this agent were lost (ring buffer full) while it was enforced.
    pub(crate) degraded: bool,
    /// Lost events already accounted for.
    pub(crate) drops_seen: u64,
    /// The Landlock ABI the task's processes were restricted with by `exec` (0: none).
    pub(crate) landlock_abi: u32,
    /// Its tool calls (`agent-monitor mcp`): the one in flight last, and the few before it
    /// whose late events may still be queued.
    pub(crate) calls: VecDeque<CallSpan>,
    /// A call of another task (`exec --call`): that task's id, and the call. Its records
    /// are the parent's, with `call`.
    pub(crate) call_of: Option<(String, CallRef)>,
    /// Entries approved for this task only (`approve --for-task`), revoked when it ends.
    pub(crate) grants: Vec<String>,
    /// The same grants as entries (`scope` is the catalog's scope widened with them; a
    /// reload widens the new version again).
    pub(crate) grant_entries: Vec<crate::control::approval::Entry>,
    /// The names its attributions carry, shared with every record of the task (see
    /// [`Task::attribution`]).
    names: Arc<TaskNames>,
}

/// A task's id, cgroup and starting directory as its events share them: one allocation, so
/// an event takes one reference count for the three.
#[derive(Debug)]
pub(crate) struct TaskNames {
    pub(crate) id: Arc<str>,
    pub(crate) cgroup: Arc<str>,
    pub(crate) start_cwd: Option<Arc<Path>>,
}

/// A tool call of a task, from its start to its end on `CLOCK_BOOTTIME` (the kernel's event
/// clock), so an event is charged to the call it happened in even when it is judged later.
#[derive(Debug, Clone)]
pub(crate) struct CallSpan {
    pub(crate) call: CallRef,
    /// The scope the server ran under meanwhile (the tool's, or the task's own).
    pub(crate) scope: Arc<Scope>,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: Option<u64>,
    pub(crate) started: Instant,
    pub(crate) events: u64,
    pub(crate) violations: u64,
}

/// Ended calls kept per task for their late events.
const CALLS_KEPT: usize = 8;

impl Task {
    /// The call in flight.
    pub(crate) fn active_call(&mut self) -> Option<&mut CallSpan> {
        self.calls.back_mut().filter(|c| c.end_ns.is_none())
    }

    /// Starts a call (the caller checked none is in flight).
    pub(crate) fn start_call(&mut self, span: CallSpan) {
        if self.calls.len() >= CALLS_KEPT {
            self.calls.pop_front();
        }
        self.calls.push_back(span);
    }

    /// The call an event of time `ns` happened in.
    fn call_at(&mut self, ns: u64) -> Option<&mut CallSpan> {
        self.calls
            .iter_mut()
            .rev()
            .find(|c| c.start_ns <= ns && c.end_ns.is_none_or(|end| ns < end))
    }
}

/// Whether a task is still watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TaskState {
    Running,
    Ended,
}

/// What `GET /v1/agents` shows of a task (and what the CLI reads back).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct TaskView {
    pub(crate) id: String,
    pub(crate) scope: String,
    pub(crate) owner: String,
    pub(crate) mode: crate::scope::Mode,
    pub(crate) origin: Origin,
    pub(crate) cgroup: String,
    pub(crate) pids: Vec<u32>,
    pub(crate) started: String,
    pub(crate) expires: Option<String>,
    pub(crate) events: u64,
    pub(crate) violations: u64,
    pub(crate) degraded: bool,
    /// The Landlock ABI `exec` restricted the task with (0: none, as for adopted agents).
    pub(crate) landlock_abi: u32,
    pub(crate) last_violation: Option<String>,
    /// Just-in-time grants: entries approved for this task only, until it ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) grants: Vec<String>,
    /// `running`, or `ended` with `end_reason`.
    pub(crate) state: TaskState,
    pub(crate) end_reason: Option<String>,
}

impl Task {
    /// A task with no activity yet; `ttl` counts from now.
    pub(crate) fn new(
        id: String,
        slot: u32,
        scope: Arc<Scope>,
        cgroup: String,
        cgroup_id: u64,
        origin: Origin,
        ttl: Option<Duration>,
    ) -> Self {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let names = Arc::new(TaskNames {
            id: Arc::from(id.as_str()),
            cgroup: Arc::from(cgroup.as_str()),
            start_cwd: None,
        });
        Self {
            id,
            slot,
            scope,
            cgroup,
            cgroup_id,
            origin,
            started: wall,
            created: now,
            expires: ttl.map(|d| now + d),
            expires_wall: ttl.map(|d| wall + d),
            scope_yaml: None,
            start_cwd: None,
            // An adopted cgroup is watched from the start; a new one once it is entered.
            seen: origin == Origin::Select,
            events: 0,
            violations: 0,
            last_violation: None,
            degraded: false,
            drops_seen: 0,
            landlock_abi: 0,
            calls: VecDeque::new(),
            call_of: None,
            grants: Vec::new(),
            grant_entries: Vec::new(),
            names,
        }
    }

    pub(crate) fn view(&self, pids: Vec<u32>) -> TaskView {
        TaskView {
            id: self.id.clone(),
            scope: self.scope.name.clone(),
            owner: self.scope.owner.clone(),
            mode: self.scope.mode,
            origin: self.origin,
            cgroup: self.cgroup.clone(),
            pids,
            started: rfc3339(self.started),
            expires: self.expires_wall.map(rfc3339),
            events: self.events,
            violations: self.violations,
            degraded: self.degraded,
            landlock_abi: self.landlock_abi,
            last_violation: self.last_violation.clone(),
            grants: self.grants.clone(),
            state: TaskState::Running,
            end_reason: None,
        }
    }

    /// Who its events belong to. The names are built again only when a field they come from
    /// changed (a task's fields are set after it is made): an event costs the comparisons
    /// and one reference count for the three names, not a copy.
    pub(crate) fn attribution(&mut self) -> Attribution {
        let (id, call) = match &self.call_of {
            Some((parent, call)) => (parent.as_str(), Some(Box::new(call.clone()))),
            None => (self.id.as_str(), None),
        };
        let names = &self.names;
        if *names.id != *id
            || *names.cgroup != *self.cgroup
            || names.start_cwd.as_deref() != self.start_cwd.as_deref()
        {
            let same = |old: &Arc<str>, new: &str| {
                if **old == *new {
                    Arc::clone(old)
                } else {
                    Arc::from(new)
                }
            };
            self.names = Arc::new(TaskNames {
                id: same(&names.id, id),
                cgroup: same(&names.cgroup, &self.cgroup),
                start_cwd: self.start_cwd.as_deref().map(Arc::from),
            });
        }
        Attribution {
            names: Arc::clone(&self.names),
            scope: Arc::clone(&self.scope),
            cgroup_id: self.cgroup_id,
            landlock: self.landlock_abi > 0,
            call,
        }
    }

    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// A task created on request whose process never showed up is given up after this.
    pub(crate) fn abandoned(&self, now: Instant) -> bool {
        !self.seen && now.duration_since(self.created) > Duration::from_mins(1)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    tasks: BTreeMap<String, Task>,
    by_slot: HashMap<u32, String>,
    next_slot: u32,
    /// Recently ended tasks, newest last, so `exec` and operators can ask how one ended.
    ended: VecDeque<TaskView>,
    /// What late events of recently ended tasks are recorded against: the ring buffer can
    /// still hold them when a task ends (slots are never reused, so this is unambiguous).
    ended_slots: HashMap<u32, Attribution>,
    ended_order: VecDeque<u32>,
}

/// What a record needs to know of its task.
#[derive(Debug, Clone)]
pub(crate) struct Attribution {
    /// The task's id, cgroup path and starting directory.
    pub(crate) names: Arc<TaskNames>,
    pub(crate) scope: Arc<Scope>,
    pub(crate) cgroup_id: u64,
    /// The task runs under Landlock: a refused call is the kernel refusing it.
    pub(crate) landlock: bool,
    /// The tool call the event happened in (then `scope` is the call's). Boxed: most
    /// events have none, and an attribution is moved on every event.
    pub(crate) call: Option<Box<CallRef>>,
}

const ENDED_KEPT: usize = 256;

impl Registry {
    /// A fresh slot; never reused while the daemon runs, so a late event of an ended task
    /// cannot be charged to a new one.
    pub(crate) fn allocate_slot(&mut self) -> u32 {
        self.next_slot += 1;
        self.next_slot
    }

    /// The last slot handed out (persisted so slots are never reused across restarts).
    pub(crate) fn last_slot(&self) -> u32 {
        self.next_slot
    }

    pub(crate) fn restore_last_slot(&mut self, slot: u32) {
        self.next_slot = self.next_slot.max(slot);
    }

    pub(crate) fn insert(&mut self, task: Task) {
        self.by_slot.insert(task.slot, task.id.clone());
        self.tasks.insert(task.id.clone(), task);
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Task> {
        let task = self.tasks.remove(id)?;
        self.by_slot.remove(&task.slot);
        Some(task)
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.get_mut(id)
    }

    /// Removes a task and remembers how it ended.
    pub(crate) fn finish(&mut self, id: &str, reason: &str) -> Option<Task> {
        let mut task = self.remove(id)?;
        let mut view = task.view(Vec::new());
        view.state = TaskState::Ended;
        view.end_reason = Some(reason.to_string());
        if self.ended.len() >= ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back(view);
        if self.ended_order.len() >= ENDED_KEPT
            && let Some(old) = self.ended_order.pop_front()
        {
            self.ended_slots.remove(&old);
        }
        self.ended_order.push_back(task.slot);
        self.ended_slots.insert(task.slot, task.attribution());
        Some(task)
    }

    /// Who an event with this slot belongs to: a live task (counted as seen) or one that
    /// ended while its events were still queued.
    pub(crate) fn attribute(&mut self, slot: u32) -> Option<Attribution> {
        if let Some(t) = self.by_slot_mut(slot) {
            t.seen = true;
            t.events += 1;
            return Some(t.attribution());
        }
        self.ended_slots.get(&slot).cloned()
    }

    /// [`Registry::attribute`] for an event of time `ns` (`CLOCK_BOOTTIME`): a live task's
    /// event that happened during one of its tool calls is judged by the call's scope and
    /// carries the call.
    pub(crate) fn attribute_at(&mut self, slot: u32, ns: u64) -> Option<Attribution> {
        // One lookup of the live task (the ended ones have no calls).
        let Some(t) = self.by_slot_mut(slot) else {
            return self.ended_slots.get(&slot).cloned();
        };
        t.seen = true;
        t.events += 1;
        let mut attribution = t.attribution();
        if let Some(span) = t.call_at(ns) {
            span.events += 1;
            attribution.scope = Arc::clone(&span.scope);
            attribution.call = Some(Box::new(span.call.clone()));
        }
        Some(attribution)
    }

    /// Counts a violation of an event of time `ns` against the call it happened in.
    pub(crate) fn call_violation(&mut self, slot: u32, ns: u64) {
        if let Some(span) = self.by_slot_mut(slot).and_then(|t| t.call_at(ns)) {
            span.violations += 1;
        }
    }

    /// A running or recently ended task.
    pub(crate) fn lookup(&self, id: &str) -> Option<TaskView> {
        match self.tasks.get(id) {
            Some(t) => Some(t.view(Vec::new())),
            None => self.ended.iter().rev().find(|v| v.id == id).cloned(),
        }
    }

    pub(crate) fn by_slot_mut(&mut self, slot: u32) -> Option<&mut Task> {
        let id = self.by_slot.get(&slot)?;
        self.tasks.get_mut(id)
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.tasks.contains_key(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Task> {
        self.tasks.values_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The task whose cgroup is `path` or an ancestor of it.
    pub(crate) fn owning_cgroup(&self, path: &str) -> Option<&Task> {
        self.tasks.values().find(|t| {
            path == t.cgroup
                || path
                    .strip_prefix(t.cgroup.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Task ids appear in cgroup paths and URLs.
pub(crate) fn valid_task_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && !id.starts_with('.')
}

/// `<scope>-<8 random hex digits>`.
pub(crate) fn generate_id(scope: &str) -> String {
    let mut bytes = [0u8; 4];
    // SAFETY: valid buffer of the given length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 4 {
        // getrandom cannot fail for 4 bytes after boot; fall back to the clock anyway.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = t.subsec_nanos().to_le_bytes();
    }
    let prefix: String = scope.chars().take(50).collect();
    format!("{prefix}-{:08x}", u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_events_of_an_ended_task_are_still_attributed() {
        let yaml = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {name: s, owner: o}\nspec: {}\n";
        let scope = crate::scope::parse_str(yaml, std::path::Path::new("t.yaml"))
            .expect("scope")
            .remove(0);
        let mut r = Registry::default();
        let slot = r.allocate_slot();
        r.insert(Task::new(
            "t".into(),
            slot,
            Arc::new(scope),
            "/p/t".into(),
            7,
            Origin::Exec,
            None,
        ));
        assert_eq!(
            r.attribute(slot)
                .map(|a| Arc::clone(&a.names.id))
                .as_deref(),
            Some("t")
        );
        assert!(r.get("t").is_some_and(|t| t.seen && t.events == 1));
        r.finish("t", "finished");
        assert!(r.get("t").is_none());
        assert_eq!(
            r.attribute(slot).map(|a| a.cgroup_id),
            Some(7),
            "late events still find their task"
        );
        assert!(
            r.attribute(slot + 1).is_none(),
            "an unknown slot is an orphan"
        );
    }

    #[test]
    fn task_ids_are_checked() {
        assert!(valid_task_id("review-1"));
        assert!(valid_task_id("a.b_c"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id("../x"));
        assert!(!valid_task_id("a/b"));
        assert!(!valid_task_id("Upper"));
        assert!(!valid_task_id(&"a".repeat(64)));
        let id = generate_id("scope");
        assert!(valid_task_id(&id), "{id}");
        assert_ne!(generate_id("s"), generate_id("s"));
    }
}
