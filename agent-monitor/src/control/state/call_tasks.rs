//! Calls of a task that are processes of their own (`exec --task ID --call NAME`,
//! `POST /v1/tasks/{id}/calls`): a sub-task with its own slot, a child cgroup of the task's
//! and a scope proven a subset of the task's. Its records are the task's, with `call`; it
//! ends when its processes end (or on `DELETE /v1/tasks/{call id}`), with a `call-ended`
//! record.

use std::sync::Arc;

use serde::Deserialize;

use super::{Reserved, Shared, TaskCreated, TaskError, lock, making::Making};
use crate::{
    control::tasks::{Origin, Task, valid_task_id},
    observe::record::{CallEnd, CallRef},
    scope::{self, Scope, ToolSpec},
};

/// `POST /v1/tasks/{id}/calls` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallRequest {
    /// The call's name (the tool): in every record of the call.
    pub(crate) name: String,
    /// A loaded scope, or (`scope_yaml`) a manifest, narrowing the task's; neither: the
    /// task's own scope.
    #[serde(default)]
    pub(crate) scope: Option<String>,
    #[serde(default)]
    pub(crate) scope_yaml: Option<String>,
    #[serde(default)]
    pub(crate) landlock_abi: u32,
}

impl Shared {
    /// Creates a call of task `parent_id`: its scope narrowed (refused, naming the entry,
    /// when it widens the task's), a child cgroup tagged with a slot of its own.
    pub(crate) fn create_call(
        &self,
        parent_id: &str,
        req: CallRequest,
        inline: Option<Arc<Scope>>,
    ) -> Result<TaskCreated, TaskError> {
        if req.name.is_empty() || req.name.len() > 128 || req.name.contains(char::is_control) {
            return Err(TaskError::BadCallName(req.name));
        }
        let (parent_scope, parent_cgroup, start_cwd) = {
            let registry = self.registry();
            let parent = registry
                .get(parent_id)
                .ok_or_else(|| TaskError::NotFound(parent_id.to_owned()))?;
            if parent.call_of.is_some() || parent.origin != Origin::Exec {
                return Err(TaskError::NotCallable(parent_id.to_owned()));
            }
            (
                Arc::clone(&parent.scope),
                parent.cgroup.clone(),
                parent.start_cwd.clone(),
            )
        };
        let sub = match (req.scope, inline) {
            (Some(name), None) => self
                .catalog()
                .get(&name)
                .ok_or(TaskError::UnknownScope(name))?,
            (None, Some(sub)) => sub,
            (None, None) => Arc::clone(&parent_scope),
            (Some(_), Some(_)) => return Err(TaskError::ScopeChoice),
        };
        let what = format!("call {}", req.name);
        let scope = Arc::new(
            scope::narrowed(&parent_scope, &what, &ToolSpec::of(&sub.spec))
                .map_err(TaskError::Widens)?,
        );
        let (id, slot) = {
            let mut registry = self.registry();
            let mut creating = lock(&self.creating);
            let slot = registry.allocate_slot();
            let suffix = format!(".c{slot}");
            let prefix: String = parent_id.chars().take(63 - suffix.len()).collect();
            let id = format!("{prefix}{suffix}");
            if !valid_task_id(&id) || registry.contains(&id) || creating.contains(&id) {
                return Err(TaskError::Exists(id));
            }
            creating.insert(id.clone());
            (id, slot)
        };
        let _reserved = Reserved {
            creating: &self.creating,
            id: id.clone(),
        };
        let (mut task, landlock) = self.make_task(&Making {
            id: &id,
            slot,
            scope: &scope,
            parent: &parent_cgroup,
            leaf: &format!("c{slot}"),
            ttl: None,
            landlock_abi: req.landlock_abi,
            requester: None,
        })?;
        task.start_cwd = start_cwd;
        let cgroup = task.cgroup.clone();
        task.call_of = Some((
            parent_id.to_owned(),
            CallRef {
                id: id.clone(),
                name: req.name,
                digest: None,
                end: None,
            },
        ));
        self.registry().insert(task);
        tracing::info!(task = %id, parent = %parent_id, %cgroup, "call created");
        self.created(id, cgroup, landlock, Vec::new())
    }

    /// The `call-ended` record of a call task that ended (`reason` as for any task).
    pub(super) fn call_task_ended(&self, task: &Task, reason: &str) {
        let Some((parent, call)) = &task.call_of else {
            return;
        };
        let end = CallEnd {
            outcome: if reason == "finished" {
                "ok".into()
            } else {
                reason.to_owned()
            },
            duration_ms: u64::try_from(task.created.elapsed().as_millis()).unwrap_or(u64::MAX),
            events: task.events,
            violations: task.violations,
            error: None,
        };
        self.push_record(super::calls::call_record(
            parent,
            &task.scope,
            call.clone(),
            end,
        ));
    }
}
