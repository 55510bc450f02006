//! The part of creating a task that an `exec` task and a call of one share: its cgroup,
//! its Landlock plan, its tag, and the answer to the launcher.

use std::{path::PathBuf, sync::Arc};

use super::{Shared, TaskCreated, TaskError};
use crate::{
    control::{
        landlock::Plan,
        tasks::{Origin, Task},
    },
    scope::{self, Scope},
};

/// A task to make ([`Shared::make_task`]): an `exec` task or a call of one.
pub(super) struct Making<'a> {
    pub(super) id: &'a str,
    pub(super) slot: u32,
    pub(super) scope: &'a Arc<Scope>,
    /// The cgroup its own is made under.
    pub(super) parent: &'a str,
    pub(super) leaf: &'a str,
    pub(super) ttl: Option<std::time::Duration>,
    pub(super) landlock_abi: u32,
    /// The process that asked: the v1 cgroups the agent keeps from it bound it too.
    pub(super) requester: Option<u32>,
}

impl Shared {
    /// The answer to a task's creation: what the launcher needs to start the agent in it.
    pub(super) fn created(
        &self,
        task: String,
        cgroup: String,
        landlock: Option<Plan>,
        tools: Vec<String>,
    ) -> Result<TaskCreated, TaskError> {
        Ok(TaskCreated {
            task,
            cgroup_dir: self.cgroup2.dir(&cgroup)?,
            cgroup,
            daemon_pid: std::process::id(),
            landlock,
            tools,
        })
    }

    /// Makes a task's cgroup (`leaf` under `parent`: the configured parent, or the task a
    /// call is of), plans its Landlock layer and tags the cgroup with its slot: the task,
    /// not yet in the registry, and the plan for the launcher.
    pub(super) fn make_task(&self, m: &Making<'_>) -> Result<(Task, Option<Plan>), TaskError> {
        // Audit mode stops nothing, so it gets no Landlock layer; `ask` gets no file rules
        // (Landlock refuses before a person could say yes, and cannot be widened for a
        // running process: holds judge files instead), only the signal scope. Planned
        // without the registry locked: it reads directories.
        let landlock = (m.landlock_abi > 0 && m.scope.mode == scope::Mode::Enforce)
            .then(|| crate::control::landlock::plan_for(m.scope));
        let cgroup = format!("{}/{}", m.parent, m.leaf);
        let cgroup_id = self.cgroup2.create(&cgroup)?;
        // The limits that apply to the agent are part of its baseline: its new v2 cgroup
        // and the v1 ones it keeps from the requester, with their ancestors.
        let landlock = landlock.map(|mut plan| {
            if plan.scopes_only {
                return plan;
            }
            let mounts = crate::host::own_cgroup::CgroupMounts::discover();
            let mut own: Vec<PathBuf> = m
                .requester
                .map(|pid| mounts.dirs_of_pid(pid))
                .unwrap_or_default()
                .into_iter()
                .filter(|d| !d.starts_with(self.cgroup2.root()))
                .collect();
            own.push(self.cgroup2.root().join(cgroup.trim_start_matches('/')));
            plan.add_reads(mounts.limit_files(&own));
            plan
        });
        if let Err(e) = self.tag(cgroup_id, m.slot, m.scope, &cgroup) {
            let _ = self.cgroup2.remove(&cgroup);
            return Err(e);
        }
        let mut task = Task::new(
            m.id.to_owned(),
            m.slot,
            Arc::clone(m.scope),
            cgroup,
            cgroup_id,
            Origin::Exec,
            m.ttl,
        );
        // Landlock refuses this task's out-of-scope files (not with `ask`).
        if landlock.as_ref().is_some_and(|p| !p.scopes_only) {
            task.landlock_abi = m.landlock_abi;
        }
        Ok((task, landlock))
    }
}
