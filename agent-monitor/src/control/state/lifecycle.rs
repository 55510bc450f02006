//! How tasks end: housekeeping (finished, expired, degraded), lifecycle records, and the
//! daemon's own shutdown.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Shared, TaskError, lock};
use crate::{control::tasks::Origin, host::cgroupfs::Cgroup2};

impl Shared {
    /// Ends a task: kills what is left of it when `kill`, untags and removes its cgroup.
    /// `reason` is kept for `GET /v1/tasks/{id}`.
    pub(crate) fn end_task(&self, id: &str, kill: bool, reason: &str) -> Result<(), TaskError> {
        let task = self
            .registry()
            .finish(id, reason)
            .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
        self.untag(task.cgroup_id, task.slot);
        let generation = self.save(&self.registry());
        self.saved(generation);
        if task.origin == Origin::Exec {
            if kill {
                self.cgroup2.kill(&task.cgroup)?;
                wait_empty(&self.cgroup2, &task.cgroup, Duration::from_secs(5));
            }
            self.cgroup2.remove(&task.cgroup)?;
        }
        self.cgroup2.forget_kill_handle(&task.cgroup);
        tracing::info!(task = %id, killed = kill, %reason, "task ended");
        Ok(())
    }

    /// Housekeeping: ends finished tasks, revokes expired ones, marks agents whose events
    /// were lost as degraded (and kills them with `--fail-closed`).
    pub(crate) fn sweep(&self) {
        self.tick_epoch();
        let now = Instant::now();
        let mut finished = Vec::new();
        let mut revoke: Vec<(String, &'static str)> = Vec::new();
        let mut degraded = Vec::new();
        // Exec tasks whose cgroup is to be looked at (without the registry locked).
        let mut watched = Vec::new();
        {
            // Lock order everywhere: registry, then enforcer.
            let mut registry = self.registry();
            let enforcer = lock(&self.enforcer);
            for task in registry.iter_mut() {
                let drops = enforcer.drops(task.slot);
                if drops > task.drops_seen {
                    task.drops_seen = drops;
                    if !task.degraded {
                        task.degraded = true;
                        degraded.push(task.id.clone());
                    }
                }
                if task.expired(now) {
                    revoke.push((task.id.clone(), "revoked: ttl passed"));
                } else if task.degraded
                    && self.config.fail_closed
                    && task.scope.mode == crate::scope::Mode::Enforce
                {
                    revoke.push((task.id.clone(), "killed: events lost (fail-closed)"));
                } else if task.origin == Origin::Exec {
                    watched.push((task.slot, task.cgroup.clone()));
                }
            }
        }
        let populated: Vec<(u32, Option<bool>)> = watched
            .into_iter()
            .map(|(slot, cgroup)| (slot, self.cgroup2.populated(&cgroup).ok()))
            .collect();
        {
            let mut registry = self.registry();
            for (slot, populated) in populated {
                let Some(task) = registry.by_slot_mut(slot) else {
                    continue;
                };
                let id = task.id.clone();
                match populated {
                    Some(true) => task.seen = true,
                    Some(false) if task.seen || task.abandoned(now) => finished.push(id),
                    Some(false) => {}
                    // The cgroup is gone: nothing is left to watch.
                    None => finished.push(id),
                }
            }
        }
        for id in degraded {
            tracing::warn!(task = %id, "events lost for this agent: degraded");
            self.notify(
                &id,
                "degraded",
                "events for this agent were lost (ring buffer full)",
                crate::observe::record::Action::None,
            );
        }
        for id in &finished {
            if let Err(e) = self.end_task(id, false, "finished") {
                tracing::warn!(task = %id, error = %e, "ending finished task");
            }
        }
        for (id, reason) in revoke {
            tracing::warn!(task = %id, %reason, "task revoked");
            self.notify(
                &id,
                "revoked",
                reason,
                crate::observe::record::Action::KilledAgent,
            );
            if let Err(e) = self.end_task(&id, true, reason) {
                tracing::warn!(task = %id, error = %e, "revoking task");
            }
        }
    }

    /// Queues a task lifecycle record; the pipeline writes it with the activity records.
    pub(crate) fn notify(
        &self,
        task: &str,
        event: &'static str,
        reason: &str,
        action: crate::observe::record::Action,
    ) {
        let Some(t) = self.registry().lookup(task) else {
            return;
        };
        let scope = self.registry().get(task).map(|t| Arc::clone(&t.scope));
        let agent = crate::observe::record::AgentRef {
            scope: t.scope,
            task: t.id,
            owner: t.owner,
            identity: scope.and_then(|s| s.identity.clone()),
        };
        let record = crate::observe::record::Record::lifecycle(agent, event, reason, action);
        lock(&self.notices).push(record);
    }

    /// Queues a record made outside the pipeline (the DNS resolver's); written with the
    /// next batch. At most `NOTICES` wait (the pipeline takes them every 100 ms); more are
    /// dropped and counted.
    pub(crate) fn push_record(&self, record: crate::observe::record::Record) {
        let mut notices = lock(&self.notices);
        if notices.len() >= NOTICES {
            drop(notices);
            super::Stats::add(&self.stats.audit_records_dropped, 1);
            return;
        }
        notices.push(record);
    }

    /// Lifecycle records waiting to be written.
    pub(crate) fn take_notices(&self) -> Vec<crate::observe::record::Record> {
        std::mem::take(&mut *lock(&self.notices))
    }

    /// On daemon exit: no agent runs unwatched. Tasks we created are killed and removed;
    /// adopted cgroups are untagged.
    pub(crate) fn shutdown(&self) {
        let ids: Vec<String> = self.registry().iter().map(|t| t.id.clone()).collect();
        for id in ids {
            if let Err(e) = self.end_task(&id, true, "revoked: daemon stopped") {
                tracing::warn!(task = %id, error = %e, "ending task at shutdown");
            }
        }
        let parent = format!("/{}", self.config.cgroup_parent.trim_matches('/'));
        if let Err(e) = self.cgroup2.remove(&parent) {
            tracing::warn!(cgroup = %parent, error = %e, "removing the task cgroup parent");
        }
    }
}

/// Records made outside the pipeline that may wait for it at most.
const NOTICES: usize = 4096;

/// Waits (bounded) for a killed cgroup to empty so that it can be removed.
fn wait_empty(cg: &Cgroup2, rel: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !cg.populated(rel).unwrap_or(false) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
