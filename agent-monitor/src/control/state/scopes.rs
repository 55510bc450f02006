//! The scopes catalog as the tasks see it: reloading the scopes directory (running tasks
//! follow a changed scope), Kubernetes objects' scope texts, and inline scopes parsed off
//! the runtime.

use std::{sync::Arc, time::Instant};

use super::{Shared, TaskError, lock};
use crate::{
    control::catalog::{Applied, GateError},
    scope::{self, Scope},
};

impl Shared {
    /// Re-reads the scopes directory; running tasks of a changed scope follow the new version.
    /// The directory is read, parsed and compiled on a blocking thread under the parse gate,
    /// without the catalog locked: verdicts, records and the API go on meanwhile.
    pub(crate) async fn reload(self: &Arc<Self>) -> Result<Vec<String>, GateError> {
        let shared = Arc::clone(self);
        self.parses.run(None, move || shared.reload_now()).await
    }

    /// Sets or forgets a Kubernetes object's scope text for the next [`Shared::reload`];
    /// true when that changed it.
    #[cfg_attr(
        not(feature = "kubernetes"),
        expect(
            dead_code,
            reason = "objects come only from the API watcher, absent from this build"
        )
    )]
    pub(crate) fn set_scope_resource(&self, r: scope::ResourceRef, text: Option<String>) -> bool {
        self.catalog_mut().set_resource(r, text)
    }

    /// [`Shared::reload`] on the calling thread.
    fn reload_now(&self) -> Vec<String> {
        let _one = lock(&self.reloading);
        let started = Instant::now();
        let resources = self.catalog().resources();
        let report = scope::load_all(&self.config.scopes_dir, &resources);
        let parsed = started.elapsed();
        // The catalog is locked for the swap alone; what it replaced is freed after.
        let Applied { changed, retired } =
            self.catalog_mut().apply(report, &self.config.scopes_dir);
        drop(retired);
        tracing::debug!(?parsed, total = ?started.elapsed(), "scopes directory read");
        // The tasks whose scope changed, gathered under the lock; installed (kernel maps,
        // resolver sockets) without it; committed under it again.
        let updates: Vec<(String, u32, Arc<Scope>, Arc<Scope>)> = {
            let catalog = self.catalog();
            self.registry()
                .iter()
                .filter(|t| t.scope.source != scope::ScopeSource::Inline)
                .filter_map(|t| {
                    let s = catalog.get(&t.scope.name)?;
                    (!Arc::ptr_eq(&s, &t.scope))
                        .then(|| (t.id.clone(), t.slot, s, Arc::clone(&t.scope)))
                })
                .collect()
        };
        for (id, slot, new, old) in updates {
            // A task's just-in-time grants widen the new version too.
            let entries = self
                .registry()
                .by_slot_mut(slot)
                .map(|t| t.grant_entries.clone())
                .unwrap_or_default();
            let (new, kept) = if entries.is_empty() {
                (new, true)
            } else {
                match crate::control::approval::with_grants(&new, &entries) {
                    Ok(widened) => (Arc::new(widened), true),
                    Err(e) => {
                        tracing::error!(task = %id, error = %e, "grants do not fit the new scope version; they end");
                        (new, false)
                    }
                }
            };
            let mut enforcer = lock(&self.enforcer);
            match self.install(&mut enforcer, slot, &new) {
                Ok(()) => {
                    drop(enforcer);
                    if kept {
                        self.allow_identities(slot, &entries);
                    }
                    let mut revoked = None;
                    if let Some(t) = self.registry().by_slot_mut(slot)
                        && Arc::ptr_eq(&t.scope, &old)
                    {
                        if !kept && !t.grants.is_empty() {
                            t.grant_entries.clear();
                            let agent = crate::observe::record::AgentRef::of(&t.scope, &t.id);
                            revoked = Some((agent, std::mem::take(&mut t.grants)));
                        }
                        t.scope = new;
                    }
                    if let Some((agent, grants)) = revoked {
                        self.grants_revoked(agent, &grants, "with the scope's new version");
                    }
                }
                Err(e) => {
                    tracing::error!(task = %id, error = %e, "new scope version not enforceable; keeping the old one");
                    if let Err(e) = self.install(&mut enforcer, slot, &old) {
                        tracing::error!(task = %id, error = %e, "re-installing the old scope failed");
                    }
                    drop(enforcer);
                    self.allow_identities(slot, &entries);
                }
            }
        }
        // A new or changed `select.kubernetes` may match containers that already run.
        for container in self.kubernetes.containers() {
            self.adopt_container(&container);
        }
        // A large scope removed leaves its memory free in the heap: give it back.
        crate::control::catalog::release_free_heap();
        changed
    }

    /// Parses the `scope_yaml` of a task request under the parse gate, off the runtime. A
    /// request whose `deadline` passes first gets [`TaskError::ParseBusy`]: its parse does not
    /// start, or its result is dropped.
    pub(crate) async fn parse_inline(
        &self,
        yaml: String,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<Scope>, TaskError> {
        let parsed = self
            .parses
            .run(Some(deadline), move || {
                scope::parse_str(&yaml, scope::ScopeSource::Inline)
            })
            .await
            .map_err(|e| match e {
                GateError::Deadline => TaskError::ParseBusy,
                GateError::Failed(e) => TaskError::ParseFailed(e),
            })?;
        let mut scopes = parsed.map_err(TaskError::BadScope)?;
        if scopes.len() != 1 {
            return Err(TaskError::ScopeCount(scopes.len()));
        }
        Ok(Arc::new(scopes.remove(0)))
    }
}
