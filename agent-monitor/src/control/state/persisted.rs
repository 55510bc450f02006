//! The registry on disk: saved after every change, restored by a restarted daemon.

use std::{sync::Arc, time::SystemTime};

use super::Shared;
use crate::{
    control::persist,
    control::tasks::{Registry, Task},
    scope,
};

impl Shared {
    /// Saves the registry for a restarted daemon. A failure is logged: enforcement itself
    /// does not depend on it.
    pub(super) fn save(&self, registry: &Registry) {
        let saved = persist::Saved {
            next_slot: registry.last_slot(),
            tasks: registry
                .iter()
                .map(|t| persist::SavedTask {
                    id: t.id.clone(),
                    slot: t.slot,
                    scope: t.scope.name.clone(),
                    scope_yaml: t.scope_yaml.clone(),
                    cgroup: t.cgroup.clone(),
                    cgroup_id: t.cgroup_id,
                    origin: t.origin,
                    started_unix_ms: persist::unix_ms(t.started),
                    expires_unix_ms: t.expires_wall.map(persist::unix_ms),
                    start_cwd: t.start_cwd.clone(),
                    landlock_abi: t.landlock_abi,
                })
                .collect(),
        };
        if let Err(e) = persist::save(&self.config.state_file, &saved) {
            tracing::error!(error = %e, "saving task state");
        }
    }

    /// Takes over the tasks a previous daemon saved: their kernel tags and rules are
    /// re-synced; tasks whose cgroup is gone are cleaned up. Returns how many were restored.
    pub(crate) fn restore(&self) -> usize {
        let saved = match persist::load(&self.config.state_file) {
            Ok(Some(s)) => s,
            Ok(None) => return 0,
            Err(e) => {
                tracing::error!(error = %e, "previous task state unreadable; starting without it");
                return 0;
            }
        };
        let mut restored = 0;
        let mut registry = self.registry();
        registry.restore_last_slot(saved.next_slot);
        for t in saved.tasks {
            let scope = match &t.scope_yaml {
                Some(yaml) => scope::parse_str(yaml, scope::ScopeSource::Inline)
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(Arc::new),
                None => self.catalog().get(&t.scope),
            };
            let alive = self.cgroup2.id(&t.cgroup).is_ok_and(|id| id == t.cgroup_id);
            let Some(scope) = scope.filter(|_| alive) else {
                tracing::warn!(task = %t.id, "saved task's scope or cgroup is gone; cleaning up");
                self.untag(t.cgroup_id, t.slot);
                continue;
            };
            if let Err(e) = self.tag(t.cgroup_id, t.slot, &scope, &t.cgroup) {
                tracing::error!(task = %t.id, error = %e, "re-applying the saved task's scope");
            }
            let expires_wall = t.expires_unix_ms.map(persist::from_unix_ms);
            let ttl_left =
                expires_wall.map(|e| e.duration_since(SystemTime::now()).unwrap_or_default());
            let mut task = Task::new(
                t.id,
                t.slot,
                scope,
                t.cgroup,
                t.cgroup_id,
                t.origin,
                ttl_left,
            );
            task.started = persist::from_unix_ms(t.started_unix_ms);
            task.expires_wall = expires_wall;
            task.scope_yaml = t.scope_yaml;
            task.start_cwd = t.start_cwd;
            task.landlock_abi = t.landlock_abi;
            task.seen = true;
            registry.insert(task);
            restored += 1;
        }
        self.save(&registry);
        restored
    }
}
