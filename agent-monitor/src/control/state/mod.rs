//! State shared by the pipeline, the API and the housekeeping task, and the operations that
//! change it: creating, adopting, ending tasks.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use aya::maps::{MapData, PerCpuArray};
use serde::{Deserialize, Serialize};

use crate::{
    control::catalog::{Catalog, ParseGate},
    control::enforce::Enforcer,
    control::kubernetes,
    control::tasks::{Registry, generate_id, valid_task_id},
    host::cgroupfs::{Cgroup2, CgroupError},
    kernel::{
        loader::{Handles, HookStatus, KernelCounters},
        maps::StateMaps,
    },
    scope::{self, Scope, ScopeError},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskError {
    #[error("no scope named {0:?} is loaded")]
    UnknownScope(String),
    #[error("give one of `scope`, `scope_yaml` or `learn`")]
    ScopeChoice,
    #[error("scope_yaml: {0}")]
    BadScope(#[source] ScopeError),
    #[error("scope_yaml must hold exactly one scope, it holds {0}")]
    ScopeCount(usize),
    #[error("task id {0:?} is invalid: use 1-63 of [a-z0-9._-]")]
    BadTaskId(String),
    #[error("a task named {0:?} already exists")]
    Exists(String),
    #[error("ttl: {0}")]
    BadTtl(String),
    #[error("no task named {0:?}")]
    NotFound(String),
    #[error("the call's scope: {0}")]
    Widens(#[source] ScopeError),
    #[error("call name {0:?} is invalid: 1-128 characters, no control characters")]
    BadCallName(String),
    #[error("task {0:?} cannot have calls: it is a call itself, or adopted (not started by exec)")]
    NotCallable(String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("enforcing the scope: {0}")]
    Enforce(#[from] crate::control::enforce::EnforceError),
    #[error("the agent's DNS resolver: {0}")]
    Dns(#[from] crate::control::dns::DnsError),
    #[error(
        "scope_yaml: the daemon could not parse it before the request's deadline (at most {} parses run at once); try again",
        crate::control::catalog::PARSES_AT_ONCE
    )]
    ParseBusy,
    #[error("scope_yaml: {0}")]
    ParseFailed(String),
    #[error("tagging cgroup {cgroup}: {source}")]
    Tag {
        cgroup: String,
        #[source]
        source: aya::maps::MapError,
    },
}

/// `POST /v1/tasks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskRequest {
    pub(crate) scope: Option<String>,
    pub(crate) scope_yaml: Option<String>,
    /// A learning task (`exec --learn NAME`): recorded, never stopped (`scope::learn`).
    #[serde(default)]
    pub(crate) learn: Option<String>,
    /// The learning scope's owner (default: the requesting user's name).
    #[serde(default)]
    pub(crate) owner: Option<String>,
    pub(crate) task: Option<String>,
    pub(crate) ttl: Option<String>,
    /// The Landlock ABI the launcher can restrict the agent with (`exec` sends it; 0 or
    /// absent: none). An enforced scope then gets a Landlock plan in the answer.
    #[serde(default)]
    pub(crate) landlock_abi: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskCreated {
    pub(crate) task: String,
    /// Relative to the cgroup2 root.
    pub(crate) cgroup: String,
    /// Absolute directory, for `cgroup.procs`.
    pub(crate) cgroup_dir: PathBuf,
    /// The daemon's pid, so that `exec` can keep the agent's signals off it.
    #[serde(default)]
    pub(crate) daemon_pid: u32,
    /// The Landlock rules the launcher restricts the agent with before it execs (enforced
    /// scopes, when the launcher said it can).
    #[serde(default)]
    pub(crate) landlock: Option<crate::control::landlock::Plan>,
    /// The scope's `spec.tools` names (`agent-monitor mcp` offers only these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tools: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct DaemonConfig {
    pub(crate) scopes_dir: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) audit_log: PathBuf,
    pub(crate) cgroup_parent: String,
    /// Kill an enforced agent whose events were lost.
    pub(crate) fail_closed: bool,
    /// Where the task registry is saved for a restarted daemon.
    pub(crate) state_file: PathBuf,
    /// bpffs directory of the pinned programs and maps.
    pub(crate) pin_path: PathBuf,
}

/// Daemon-wide counters (the kernel keeps its own, see `KernelCounters`).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) records: AtomicU64,
    pub(crate) violations: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    /// Events whose agent slot belongs to no live task (late events of an ended task).
    pub(crate) orphan_events: AtomicU64,
    pub(crate) sink_errors: AtomicU64,
    /// Operations the kernel refused for enforced agents.
    pub(crate) blocked: AtomicU64,
    /// Processes or agents killed (by the kernel or the daemon).
    pub(crate) killed: AtomicU64,
    /// Operations the kernel held for the daemon's verdict.
    pub(crate) held: AtomicU64,
    /// Requests opened for a person's decision (`onViolation: ask`).
    pub(crate) asked: AtomicU64,
    /// Calls of Landlock-restricted agents that failed with EACCES, EPERM or EXDEV on a path
    /// the scope allows (the file's own permissions, or a glob Landlock had to widen or
    /// narrow): not records.
    pub(crate) refused_in_scope: AtomicU64,
    /// Records dropped because the audit log fell too far behind (its writer's queue, or
    /// the queue of records made outside the pipeline, was full).
    pub(crate) audit_records_dropped: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

mod adopt;
pub(crate) mod call_tasks;
pub(crate) mod calls;
mod lifecycle;
mod making;
mod persisted;
mod scopes;
mod tagger;

use making::Making;
use tagger::Tagger;

pub(crate) struct Shared {
    pub(crate) config: DaemonConfig,
    pub(crate) cgroup2: Cgroup2,
    pub(crate) hooks: Vec<HookStatus>,
    pub(crate) started_at: Instant,
    pub(crate) stats: Stats,
    /// What the API and `/metrics` show of the records: recent ring, followers, usage.
    pub(crate) observed: crate::observe::feed::Observed,
    /// This node's pods and container cgroups (`select.kubernetes`).
    pub(crate) kubernetes: kubernetes::Node,
    catalog: RwLock<Catalog>,
    /// Parsing and compiling scope texts (reloads, inline scopes): off the runtime, a few at
    /// a time.
    pub(crate) parses: ParseGate,
    /// Held by the reload running now: a slower, older read of the directory never replaces
    /// a newer one.
    reloading: Mutex<()>,
    /// The tasks. Held only for memory work, never across I/O (mkdir, kernel map writes,
    /// the state file): the pipeline takes it for every event.
    registry: Mutex<Registry>,
    /// Task ids being created (their cgroup made and tagged without the registry locked).
    creating: Mutex<HashSet<String>>,
    /// Writes the state file off the callers' path.
    state_writer: Arc<persisted::StateWriter>,
    /// Why the kernel cannot identify files (no BTF offsets), if so.
    pub(crate) identity_error: Option<String>,
    /// The monitor's own filesystems (cgroupfs, bpffs, tracefs, ...): never writable.
    pub(crate) protected: crate::host::mounts::Protected,
    /// The syscall tracepoints: attached before a cgroup is tagged, detached when none is.
    pub(crate) demand: crate::kernel::demand::OnDemand,
    /// How many cgroups are tagged, as last published to the kernel.
    tagged: AtomicU64,
    /// `AGENT_CGROUPS`: cgroup id -> slot, and the ids in it.
    tagger: Mutex<Tagger>,
    tag_state: Mutex<aya::maps::Array<MapData, u64>>,
    counters: Mutex<PerCpuArray<MapData, u64>>,
    enforcer: Mutex<Enforcer>,
    /// The per-agent DNS resolvers (DNS-name egress).
    pub(crate) dns: crate::control::dns::Resolver,
    notices: Mutex<Vec<crate::observe::record::Record>>,
    /// Requests of `onViolation: ask` waiting for a person (`control::approval`).
    pub(crate) approvals: Mutex<crate::control::approval::Pending>,
    /// Which task cgroups changed since the last sweep (only the sweep takes it).
    cgroup_events: Mutex<crate::host::cgroup_events::CgroupEvents>,
}

/// A task id reserved while its task is created; freed when dropped (also on failure).
struct Reserved<'a> {
    creating: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        lock(self.creating).remove(&self.id);
    }
}

/// A poisoned lock only means another thread panicked mid-update; the data is still the
/// best we have, and a monitor must keep going.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        config: DaemonConfig,
        cgroup2: Cgroup2,
        kernel: Handles,
        dns: crate::control::dns::DnsSettings,
        out_of_scope: tokio::sync::mpsc::Sender<crate::control::dns::OutOfScope>,
    ) -> Self {
        let catalog = Catalog::load(&config.scopes_dir);
        let Handles {
            maps:
                StateMaps {
                    agent_cgroups,
                    tag_state,
                    counters,
                    dns_learned,
                },
            enforce,
            hooks,
            demand,
            identity_error,
        } = kernel;
        let shared = Self {
            dns: crate::control::dns::Resolver::new(dns, dns_learned, out_of_scope),
            state_writer: persisted::StateWriter::spawn(config.state_file.clone()),
            config,
            cgroup2,
            hooks,
            demand,
            tagged: AtomicU64::new(u64::MAX),
            identity_error,
            protected: crate::host::mounts::Protected::discover(),
            enforcer: Mutex::new(Enforcer::new(enforce)),
            notices: Mutex::new(Vec::new()),
            approvals: Mutex::default(),
            cgroup_events: Mutex::new(crate::host::cgroup_events::CgroupEvents::new()),
            started_at: Instant::now(),
            stats: Stats::default(),
            observed: crate::observe::feed::Observed::new(),
            kubernetes: kubernetes::Node::default(),
            catalog: RwLock::new(catalog),
            parses: ParseGate::default(),
            reloading: Mutex::new(()),
            registry: Mutex::new(Registry::default()),
            creating: Mutex::new(HashSet::new()),
            tagger: Mutex::new(Tagger::new(agent_cgroups)),
            tag_state: Mutex::new(tag_state),
            counters: Mutex::new(counters),
        };
        shared.tick_epoch();
        shared.publish_tags();
        shared
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub(crate) fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn kernel_counters(&self) -> KernelCounters {
        KernelCounters::read(&lock(&self.counters))
    }

    /// Creates a task: a fresh cgroup under the configured parent, tagged with a new slot.
    /// `inline` is the request's `scope_yaml`, parsed by [`Shared::parse_inline`].
    pub(crate) fn create_task(
        &self,
        req: TaskRequest,
        inline: Option<Arc<Scope>>,
        requester: Option<u32>,
    ) -> Result<TaskCreated, TaskError> {
        let scope_yaml = req.scope_yaml;
        if req.learn.is_some() && (req.scope.is_some() || scope_yaml.is_some()) {
            return Err(TaskError::ScopeChoice);
        }
        let scope = match (req.scope, &scope_yaml, inline) {
            (Some(name), None, None) => self
                .catalog()
                .get(&name)
                .ok_or(TaskError::UnknownScope(name))?,
            (None, Some(_), Some(scope)) => scope,
            (None, None, Some(scope)) if req.learn.is_some() => scope,
            _ => return Err(TaskError::ScopeChoice),
        };
        let ttl = match req.ttl {
            Some(t) => Some(scope::Ttl::parse(&t).map_err(TaskError::BadTtl)?.duration()),
            None => scope.ttl,
        };
        // The id is reserved while the cgroup is made and tagged without the registry
        // locked; the task enters the registry once it is tagged.
        let (id, slot) = {
            let mut registry = self.registry();
            let mut creating = lock(&self.creating);
            let id = match req.task {
                Some(id) if !valid_task_id(&id) => return Err(TaskError::BadTaskId(id)),
                Some(id) if registry.contains(&id) || creating.contains(&id) => {
                    return Err(TaskError::Exists(id));
                }
                Some(id) => id,
                None => loop {
                    let id = generate_id(&scope.name);
                    if !registry.contains(&id) && !creating.contains(&id) {
                        break id;
                    }
                },
            };
            creating.insert(id.clone());
            (id, registry.allocate_slot())
        };
        let _reserved = Reserved {
            creating: &self.creating,
            id: id.clone(),
        };
        let parent = format!("/{}", self.config.cgroup_parent.trim_matches('/'));
        let (mut task, landlock) = self.make_task(&Making {
            id: &id,
            slot,
            scope: &scope,
            parent: &parent,
            leaf: &id,
            ttl,
            landlock_abi: req.landlock_abi,
            requester,
        })?;
        task.scope_yaml = scope_yaml;
        task.start_cwd =
            requester.and_then(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).ok());
        let cgroup = task.cgroup.clone();
        let generation = {
            let mut registry = self.registry();
            registry.insert(task);
            self.save(&registry)
        };
        // A daemon restarted after the answer knows the task.
        self.saved(generation);
        tracing::info!(task = %id, scope = %scope.name, %cgroup, "task created");
        self.created(id, cgroup, landlock, scope.tools.keys().cloned().collect())
    }

    /// Installs the scope in the kernel, then tags the cgroup: the first process of the
    /// task is already enforced.
    fn tag(&self, cgroup_id: u64, slot: u32, scope: &Scope, cgroup: &str) -> Result<(), TaskError> {
        // The syscall hooks first, held attached until the tag is published: no process of
        // the cgroup makes a syscall the hooks miss.
        let (_attached, statuses) = self.demand.attach();
        let failed: Vec<&str> = statuses
            .iter()
            .filter(|h| !h.attached)
            .map(|h| h.target.as_str())
            .collect();
        if !failed.is_empty() {
            tracing::error!(%cgroup, ?failed, "syscall hooks did not attach: this agent is not fully watched");
        }
        self.install(&mut lock(&self.enforcer), slot, scope)?;
        if let Err(source) = lock(&self.tagger).insert(cgroup_id, slot) {
            lock(&self.enforcer).remove(slot);
            self.dns.close(slot);
            return Err(TaskError::Tag {
                cgroup: cgroup.to_string(),
                source,
            });
        }
        self.publish_tags();
        if let Err(e) = self.cgroup2.keep_kill_handle(cgroup) {
            // The kill falls back to opening the file then.
            tracing::warn!(%cgroup, error = %e, "keeping cgroup.kill open");
        }
        Ok(())
    }

    /// The agent's resolver first (when its scope has host rules), then the kernel maps
    /// with its ports.
    fn install(&self, enforcer: &mut Enforcer, slot: u32, scope: &Scope) -> Result<(), TaskError> {
        let ports = self.dns.open(slot, scope)?;
        if let Err(e) = enforcer.install(slot, scope, ports) {
            self.dns.close(slot);
            return Err(e.into());
        }
        Ok(())
    }

    /// [`Shared::install`] for a slot that runs (a tool call's switch): never unenforced
    /// meanwhile (`Enforcer::switch`).
    fn switch_scope(&self, slot: u32, scope: &Arc<Scope>) -> Result<(), TaskError> {
        let ports = self.dns.open(slot, scope)?;
        lock(&self.enforcer).switch(slot, scope, ports)?;
        Ok(())
    }

    fn untag(&self, cgroup_id: u64, slot: u32) {
        lock(&self.tagger).remove(cgroup_id);
        lock(&self.enforcer).remove(slot);
        self.dns.close(slot);
        self.publish_tags();
    }

    /// Tells the kernel side how many cgroups are tagged (0 lets every hook return at once)
    /// and starts a new tag generation, after the tag maps changed: cached cgroup verdicts
    /// of the previous generation are recomputed.
    fn publish_tags(&self) {
        use agent_monitor_common::tag_state::{GENERATION, TAGGED};
        let tagged = lock(&self.tagger).ids.len() as u64;
        self.tagged.store(tagged, Ordering::Relaxed);
        let mut state = lock(&self.tag_state);
        let generation = state.get(&GENERATION, 0).unwrap_or(0).wrapping_add(1);
        for (index, value) in [(TAGGED, tagged), (GENERATION, generation)] {
            if let Err(e) = state.set(index, value, 0) {
                tracing::error!(error = %e, "publishing the tag state; hooks may skip agents");
            }
        }
    }

    /// Detaches the syscall hooks once no cgroup has been tagged for `linger` (seconds: run
    /// it off the sweep).
    pub(crate) fn detach_syscall_hooks_when_idle(&self, linger: std::time::Duration) {
        self.demand.detach_when_idle(|| self.no_tags(), linger);
    }

    /// At exit: the syscall hooks detach with this process unless an agent still runs.
    pub(crate) fn release_idle_syscall_hooks(&self) {
        self.demand.unpin_when_idle(|| self.no_tags());
    }

    fn no_tags(&self) -> bool {
        self.tagged.load(Ordering::Relaxed) == 0
    }

    /// Advances the kernel's de-duplication clock (`tag_state::EPOCH`): an open repeated
    /// within the same second of `CLOCK_BOOTTIME` is counted, not reported again.
    pub(crate) fn tick_epoch(&self) {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a valid out pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut now) } != 0 {
            return;
        }
        let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
        let set = lock(&self.tag_state).set(agent_monitor_common::tag_state::EPOCH, seconds, 0);
        if let Err(e) = set {
            tracing::error!(error = %e, "advancing the de-duplication clock; repeats stay counted");
        }
    }

    pub(crate) fn enforcer(&self) -> MutexGuard<'_, Enforcer> {
        lock(&self.enforcer)
    }

    /// Whether a process belongs to an agent (by its cgroup), for the socket's peer check.
    /// Whether `pid` runs inside an agent's cgroup; None when its cgroup cannot be read
    /// (the process is gone).
    pub(crate) fn is_agent_process(&self, pid: u32) -> Option<bool> {
        let path = Cgroup2::of_pid(pid)?;
        Some(self.registry().owning_cgroup(&path).is_some())
    }

    pub(crate) fn scope_named(&self, name: &str) -> Option<Arc<Scope>> {
        self.catalog().get(name)
    }
}

impl crate::observe::usage::Scopes for Shared {
    fn of_task(&self, task: &str) -> Option<Arc<Scope>> {
        self.registry().get(task).map(|t| Arc::clone(&t.scope))
    }

    fn named(&self, scope: &str) -> Option<Arc<Scope>> {
        self.scope_named(scope)
    }
}
