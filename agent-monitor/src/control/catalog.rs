//! The loaded scopes. A reload replaces what parsed and keeps the last good version of a
//! scope whose file no longer does. The directory is read, parsed and compiled without the
//! catalog locked; only the swap is done under its lock. Scopes of Kubernetes objects
//! (`AgentScope`, `ClusterAgentScope`) are texts kept here and loaded by the same reload,
//! after the files (`scope::load_all`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

use crate::scope::{self, LoadReport, ResourceRef, Scope, ScopeSource};

/// What [`Catalog::apply`] did.
pub(crate) struct Applied {
    /// The scopes whose definition changed or appeared.
    pub(crate) changed: Vec<String>,
    /// The previous scopes: dropped by the caller after the catalog's lock is released
    /// (freeing a large compiled scope takes a while).
    pub(crate) retired: BTreeMap<String, Arc<Scope>>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct ScopeProblem {
    /// The file, or the object (`AgentScope NAMESPACE/NAME`, `ClusterAgentScope NAME`).
    pub(crate) file: PathBuf,
    pub(crate) error: String,
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    scopes: BTreeMap<String, Arc<Scope>>,
    problems: Vec<ScopeProblem>,
    /// The manifest texts of the Kubernetes objects (`scope::crd::render`), in the order
    /// they load: cluster objects first, then namespaced ones by namespace and name.
    resources: BTreeMap<ResourceRef, String>,
    /// Why each object that did not load was refused: `Conflict` (its name is taken) or
    /// `Invalid`, and the error as reported.
    resource_problems: BTreeMap<ResourceRef, (&'static str, String)>,
}

impl Catalog {
    pub(crate) fn load(dir: &Path) -> Self {
        let mut c = Self::default();
        drop(c.apply(scope::load_dir(dir), dir));
        c
    }

    /// Takes in what a fresh read of the directory found (`scope::load_dir`, done without
    /// the catalog locked: it parses and compiles). Returns the names whose definition
    /// changed or appeared, and the scopes it replaced, for the caller to drop once the
    /// catalog is unlocked.
    pub(crate) fn apply(&mut self, report: LoadReport, dir: &Path) -> Applied {
        let failed: Vec<ScopeSource> = report
            .errors
            .iter()
            .filter_map(scope::ScopeError::origin)
            .collect();
        self.problems = report
            .errors
            .iter()
            .map(|e| ScopeProblem {
                file: match e.origin() {
                    Some(source @ ScopeSource::Resource(_)) => PathBuf::from(source.to_string()),
                    _ => e.file().unwrap_or(dir).to_path_buf(),
                },
                error: e.to_string(),
            })
            .collect();
        self.resource_problems = report
            .errors
            .iter()
            .filter_map(|e| match e.origin() {
                Some(ScopeSource::Resource(r)) => {
                    let reason = if matches!(e, scope::ScopeError::DuplicateName { .. }) {
                        "Conflict"
                    } else {
                        "Invalid"
                    };
                    Some((*r, (reason, e.to_string())))
                }
                _ => None,
            })
            .collect();
        for p in &self.problems {
            tracing::error!(file = %p.file.display(), error = %p.error, "scope file rejected");
        }
        let mut next: BTreeMap<String, Arc<Scope>> = BTreeMap::new();
        let mut changed = Vec::new();
        for s in report.scopes {
            changed.push(s.name.clone());
            next.insert(s.name.clone(), Arc::new(s));
        }
        // Keep scopes whose file or object failed this time: the last good version stays
        // in force, unless what loaded has the name now (a file that took an object's).
        for (name, s) in &self.scopes {
            if failed.contains(&s.source) && !next.contains_key(name) {
                tracing::warn!(scope = %name, "keeping the last good version of this scope");
                next.insert(name.clone(), Arc::clone(s));
            }
        }
        Applied {
            changed,
            retired: std::mem::replace(&mut self.scopes, next),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Scope>> {
        self.scopes.get(name).cloned()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Scope>> {
        self.scopes.values()
    }

    pub(crate) fn problems(&self) -> &[ScopeProblem] {
        &self.problems
    }

    /// Sets (`Some`) or forgets (`None`) an object's manifest text; true when that changed
    /// what the next reload reads.
    pub(crate) fn set_resource(&mut self, resource: ResourceRef, text: Option<String>) -> bool {
        match text {
            Some(text) => self.resources.insert(resource, text.clone()) != Some(text),
            None => self.resources.remove(&resource).is_some(),
        }
    }

    /// The objects' texts, for a reload to load (without the catalog locked).
    pub(crate) fn resources(&self) -> Vec<(ResourceRef, String)> {
        self.resources
            .iter()
            .map(|(r, t)| (r.clone(), t.clone()))
            .collect()
    }

    /// Why an object was refused by the last reload; None when it loaded.
    #[cfg_attr(
        not(any(test, feature = "kubernetes")),
        expect(
            dead_code,
            reason = "objects come only from the API watcher, absent from this build"
        )
    )]
    pub(crate) fn resource_problem(&self, resource: &ResourceRef) -> Option<(&'static str, &str)> {
        self.resource_problems
            .get(resource)
            .map(|(reason, message)| (*reason, message.as_str()))
    }
}

/// How many scope texts are parsed and compiled at once, for reloads and the inline scopes
/// of `POST /v1/tasks` together: the daemon's runtime has two workers, and a burst of
/// hostile requests must leave the machine's CPUs to the agents and the pipeline.
pub(crate) const PARSES_AT_ONCE: usize = 2;

/// Why parsing work did not give a result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GateError {
    /// The deadline passed before the work could start or finish; if it had started, it
    /// finishes on its own thread and its result is dropped.
    #[error("the deadline passed while the scope waited to be parsed or was parsed")]
    Deadline,
    #[error("the parsing thread failed: {0}")]
    Failed(String),
}

/// Runs parsing off the async runtime, at most [`PARSES_AT_ONCE`] at a time.
#[derive(Debug)]
pub(crate) struct ParseGate(Arc<tokio::sync::Semaphore>);

impl Default for ParseGate {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(PARSES_AT_ONCE)))
    }
}

impl ParseGate {
    /// Runs `work` on a blocking thread once a slot is free. With a `deadline`, work that
    /// could not start before it does not start, and a result that comes after it is
    /// dropped.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        deadline: Option<tokio::time::Instant>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GateError> {
        let acquire = Arc::clone(&self.0).acquire_owned();
        let permit = match deadline {
            Some(at) => tokio::time::timeout_at(at, acquire)
                .await
                .map_err(|_| GateError::Deadline)?,
            None => acquire.await,
        }
        .map_err(|e| GateError::Failed(e.to_string()))?;
        if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
            return Err(GateError::Deadline);
        }
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        });
        let joined = match deadline {
            Some(at) => tokio::time::timeout_at(at, handle)
                .await
                .map_err(|_| GateError::Deadline)?,
            None => handle.await,
        };
        joined.map_err(|e| GateError::Failed(e.to_string()))
    }
}

/// Gives the heap's free memory back to the system (glibc keeps what a large scope used
/// after it is freed, in the daemon's RSS, otherwise).
pub(crate) fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test]
    async fn work_past_its_deadline_never_starts() {
        let gate = ParseGate::default();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let result = gate
            .run(Some(Instant::now()), move || {
                flag.store(true, Ordering::SeqCst);
            })
            .await;
        assert!(matches!(result, Err(GateError::Deadline)));
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn at_most_two_parses_run_and_a_waiting_one_gives_up_at_its_deadline() {
        let gate = Arc::new(ParseGate::default());
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let mut busy = Vec::new();
        for _ in 0..PARSES_AT_ONCE {
            let gate = Arc::clone(&gate);
            let wait = Arc::clone(&wait);
            busy.push(tokio::spawn(async move {
                gate.run(None, move || {
                    let _ = wait.lock().map(|w| w.recv());
                })
                .await
            }));
        }
        // Both slots taken: a third parse waits, and gives up at its deadline unstarted.
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.0.available_permits() > 0 {
            assert!(Instant::now() < deadline, "the parses did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let started = Instant::now();
        let result = gate
            .run(Some(started + Duration::from_millis(200)), move || {
                flag.store(true, Ordering::SeqCst);
            })
            .await;
        assert!(matches!(result, Err(GateError::Deadline)));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(!ran.load(Ordering::SeqCst));
        for _ in 0..PARSES_AT_ONCE {
            release.send(()).expect("release");
        }
        for b in busy {
            assert!(b.await.expect("join").is_ok());
        }
        // The slots are free again.
        let result = gate
            .run(Some(Instant::now() + Duration::from_secs(5)), || 7)
            .await;
        assert_eq!(result.ok(), Some(7));
    }

    fn coder(owner: &str, ttl: &str) -> String {
        format!(
            "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {{name: coder, owner: {owner}}}\nspec:\n  ttl: {ttl}\n  select: {{kubernetes: {{namespace: agents}}}}\n"
        )
    }

    fn reload(catalog: &mut Catalog, dir: &Path) {
        let report = scope::load_all(dir, &catalog.resources());
        drop(catalog.apply(report, dir));
    }

    #[test]
    fn objects_keep_their_last_good_version_and_yield_a_name_to_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let object = ResourceRef {
            namespace: Some("agents".into()),
            name: "coder".into(),
        };
        let mut catalog = Catalog::default();
        assert!(catalog.set_resource(object.clone(), Some(coder("a@example.org", "1h"))));
        assert!(!catalog.set_resource(object.clone(), Some(coder("a@example.org", "1h"))));
        reload(&mut catalog, dir.path());
        assert_eq!(
            catalog.get("coder").map(|s| s.owner.clone()).as_deref(),
            Some("a@example.org")
        );
        assert_eq!(catalog.resource_problem(&object), None);

        // Invalid now: refused with its position, the last good version kept.
        catalog.set_resource(object.clone(), Some(coder("b@example.org", "5x")));
        reload(&mut catalog, dir.path());
        assert_eq!(
            catalog.get("coder").map(|s| s.owner.clone()).as_deref(),
            Some("a@example.org")
        );
        let (reason, message) = catalog.resource_problem(&object).expect("refused");
        assert_eq!(reason, "Invalid");
        assert!(
            message.starts_with("AgentScope agents/coder:5:8: spec.ttl:"),
            "{message}"
        );

        // A file of the same name wins over the kept version.
        std::fs::write(
            dir.path().join("coder.yaml"),
            coder("file@example.org", "1h"),
        )
        .expect("write");
        catalog.set_resource(object.clone(), Some(coder("c@example.org", "1h")));
        reload(&mut catalog, dir.path());
        assert_eq!(
            catalog.get("coder").map(|s| s.owner.clone()).as_deref(),
            Some("file@example.org")
        );
        assert_eq!(
            catalog.resource_problem(&object).map(|p| p.0),
            Some("Conflict")
        );

        // Forgotten: no problem left to report.
        assert!(catalog.set_resource(object.clone(), None));
        reload(&mut catalog, dir.path());
        assert_eq!(catalog.resource_problem(&object), None);
        assert!(catalog.problems().is_empty());
    }

    #[test]
    fn a_cluster_object_holds_its_name_against_namespaced_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let namespaced = ResourceRef {
            namespace: Some("agents".into()),
            name: "coder".into(),
        };
        let cluster = ResourceRef {
            namespace: None,
            name: "coder".into(),
        };
        let mut catalog = Catalog::default();
        // Set first, the namespaced object still loads after the cluster one.
        catalog.set_resource(namespaced.clone(), Some(coder("tenant@example.org", "1h")));
        catalog.set_resource(cluster.clone(), Some(coder("admin@example.org", "1h")));
        reload(&mut catalog, dir.path());
        assert_eq!(
            catalog.get("coder").map(|s| s.owner.clone()).as_deref(),
            Some("admin@example.org")
        );
        assert_eq!(catalog.resource_problem(&cluster), None);
        assert_eq!(
            catalog.resource_problem(&namespaced).map(|p| p.0),
            Some("Conflict")
        );
    }
}
