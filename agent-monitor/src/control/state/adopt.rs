//! Adopted agents: cgroups a scope's `select` matches (found at start, or made later) and
//! the containers of this node's pods; and what happens when such a cgroup goes.

use std::sync::Arc;

use super::Shared;
use crate::{
    control::{
        kubernetes::{self, Candidate},
        tasks::{Origin, Task},
    },
    scope::Scope,
};

impl Shared {
    /// Adopts an existing cgroup matching a scope's `select.cgroup` (unless an ancestor is
    /// already an agent, or it is one of our own task cgroups).
    pub(crate) fn adopt(&self, path: &str, cgroup_id: u64) {
        let own_parent = format!("/{}", self.config.cgroup_parent.trim_matches('/'));
        if path == own_parent || path.starts_with(&format!("{own_parent}/")) {
            return;
        }
        if let Some(container) = self.kubernetes.cgroup_seen(path, cgroup_id)
            && self.adopt_container(&container)
        {
            return;
        }
        let scope = {
            let catalog = self.catalog();
            let found = catalog
                .all()
                .find(|s| s.select_cgroup.as_ref().is_some_and(|g| g.is_match(path)))
                .cloned();
            match found {
                Some(s) => s,
                None => return,
            }
        };
        self.insert_selected(path, cgroup_id, &scope);
    }

    /// Adopts a container of this node's pods when a scope's `select.kubernetes` matches it;
    /// its records carry namespace, pod and container. Returns whether it is an agent now.
    pub(crate) fn adopt_container(&self, container: &kubernetes::Container) -> bool {
        let candidate = Candidate {
            namespace: &container.reference.namespace,
            labels: &container.labels,
            container: &container.reference.container,
        };
        let scope = self
            .catalog()
            .all()
            .find(|s| s.kubernetes().is_some_and(|k| k.matches(candidate)))
            .cloned();
        let Some(scope) = scope else {
            return false;
        };
        let Some(slot) = self.insert_selected(&container.cgroup, container.cgroup_id, &scope)
        else {
            // Already an agent (e.g. a task restored from the previous run): its records
            // still name the container.
            let owner = self
                .registry()
                .owning_cgroup(&container.cgroup)
                .map(|t| (t.slot, t.cgroup == container.cgroup));
            if let Some((slot, true)) = owner {
                self.kubernetes.adopted(slot, container.reference.clone());
            }
            return owner.is_some();
        };
        self.kubernetes.adopted(slot, container.reference.clone());
        tracing::info!(
            namespace = %container.reference.namespace,
            pod = %container.reference.pod,
            container = %container.reference.container,
            "the container is an agent"
        );
        true
    }

    /// Tags a selected cgroup and registers its task; None when it (or an ancestor) already
    /// is an agent or tagging failed. Returns the task's slot.
    fn insert_selected(&self, path: &str, cgroup_id: u64, scope: &Arc<Scope>) -> Option<u32> {
        let id = format!("{}-cg{cgroup_id}", scope.name);
        // Registered before it is tagged (without the lock): the processes already in the
        // cgroup have a task from their first event on.
        let slot = {
            let mut registry = self.registry();
            if registry.owning_cgroup(path).is_some() {
                return None;
            }
            let slot = registry.allocate_slot();
            registry.insert(Task::new(
                id.clone(),
                slot,
                Arc::clone(scope),
                path.to_string(),
                cgroup_id,
                Origin::Select,
                scope.ttl,
            ));
            slot
        };
        if let Err(e) = self.tag(cgroup_id, slot, scope, path) {
            tracing::error!(cgroup = %path, error = %e, "cannot tag discovered cgroup");
            self.registry().remove(&id);
            return None;
        }
        // Not waited for: this runs in the pipeline (a new cgroup), which never waits for
        // the disk.
        self.save(&self.registry());
        tracing::info!(task = %id, scope = %scope.name, cgroup = %path, "agent cgroup adopted");
        Some(slot)
    }

    /// Walks the cgroup tree once at start for cgroups selected by scopes.
    pub(crate) fn discover_existing(&self) {
        if !self.catalog().all().any(|s| s.select_cgroup.is_some()) && !self.kubernetes.enabled() {
            return;
        }
        let Ok(dirs) = self.cgroup2.walk("/") else {
            return;
        };
        for dir in dirs {
            let Some(rel) = self.cgroup2.relative(&dir) else {
                continue;
            };
            let Ok(id) = self.cgroup2.id(&rel) else {
                continue;
            };
            self.adopt(&rel, id);
        }
    }

    /// A selected cgroup went away.
    pub(crate) fn cgroup_removed(&self, cgroup_id: u64) {
        self.kubernetes.cgroup_removed(cgroup_id);
        let task = {
            let mut registry = self.registry();
            let id = registry
                .iter()
                .find(|t| t.cgroup_id == cgroup_id && t.origin == Origin::Select)
                .map(|t| t.id.clone());
            let task = id.and_then(|id| registry.remove(&id));
            if task.is_some() {
                // Not waited for (the pipeline's path).
                self.save(&registry);
            }
            task
        };
        if let Some(task) = task {
            self.untag(cgroup_id, task.slot);
            self.cgroup2.forget_kill_handle(&task.cgroup);
            self.kubernetes.forget_agent(task.slot);
            tracing::info!(task = %task.id, "agent cgroup removed; task ended");
        }
    }
}
