//! The syscall tracepoints, attached only while an agent runs.
//!
//! Registering a program on any `syscalls:` tracepoint marks every thread of the machine
//! for syscall tracing (`syscall_regfunc` in kernel/tracepoint.c sets
//! `SYSCALL_WORK_SYSCALL_TRACEPOINT` on all of them), which moves each syscall of each
//! process off the fast path, agent or not: the floor every workload pays while the daemon
//! runs. The sched and cgroup tracepoints and the cgroup socket hooks cost nothing like it
//! and stay attached; these come and go with the agents.
//!
//! No agent runs before its hooks: a cgroup is tagged only while an [`Attached`] guard is
//! held, and the hooks are detached only when nothing is tagged and no guard is held. The
//! programs are pinned (`programs/`), so that a restarted daemon can attach them again; the
//! live links are pinned too (`demand/`), so that they outlive a crashed daemon while its
//! agents run.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::programs::{
    TracePoint,
    links::{FdLink, PinnedLink},
};
use serde::Serialize;

use super::{loader::HookStatus, tracefs};

/// A program's or a link's pin could not be made or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemandError {
    #[error("pinning program {program} at {path}: {source}")]
    PinProgram {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("program {0} is missing from the eBPF object")]
    NoProgram(&'static str),
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("preparing {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the status shows of the on-demand hooks.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub(crate) struct DemandStatus {
    /// Whether the syscall hooks come and go with the agents (false: the programs of a
    /// previous build were adopted, and its hooks stay attached).
    pub(crate) on_demand: bool,
    /// Whether they are attached now.
    pub(crate) live: bool,
    /// How many syscall tracepoints there are, and how many are attached now.
    pub(crate) hooks: usize,
    pub(crate) attached: usize,
    pub(crate) attaches: u64,
    pub(crate) detaches: u64,
    /// How long the last attach and detach of all of them took.
    pub(crate) last_attach_ms: f64,
    pub(crate) last_detach_ms: f64,
}

/// The syscall programs and, while agents run, their links.
pub(crate) struct OnDemand {
    inner: Mutex<Inner>,
    /// A detach is running (on the sweep's behalf, off its thread).
    detaching: AtomicBool,
}

struct Inner {
    /// Program name -> the program (loaded, from its pin).
    programs: BTreeMap<&'static str, TracePoint>,
    /// The tracepoints to attach: those whose record layout fits.
    hooks: Vec<tracefs::Hook>,
    /// Pin file name -> the live link.
    links: BTreeMap<String, (PathBuf, FdLink)>,
    /// Where the live links are pinned.
    dir: PathBuf,
    /// Callers between [`OnDemand::attach`] and the end of their tagging.
    pending: usize,
    /// Since when nothing was tagged (the detach waits for a linger).
    idle_since: Option<Instant>,
    status: DemandStatus,
}

/// Held while a cgroup is being tagged: the hooks are attached and stay so.
pub(crate) struct Attached<'a> {
    demand: &'a OnDemand,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        let mut inner = self.demand.lock();
        inner.pending = inner.pending.saturating_sub(1);
    }
}

/// The pin file name of a hook's link: `sys_exit_refused` shares some tracepoints with
/// `sys_exit_file` (mknod), so the program is part of it.
fn link_name(hook: &tracefs::Hook) -> String {
    format!("{}#{}", hook.tracepoint(), hook.program).replace([':', '/'], "=")
}

/// Pins each program of `hooks` under `dir` (a fresh load), so that [`OnDemand::open`]
/// and a later daemon can attach it.
pub(crate) fn pin_programs(
    ebpf: &mut aya::Ebpf,
    hooks: &[tracefs::Hook],
    dir: &Path,
) -> Result<(), DemandError> {
    make_dir(dir)?;
    let mut names: Vec<&'static str> = hooks.iter().map(|h| h.program).collect();
    names.sort_unstable();
    names.dedup();
    for program in names {
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(DemandError::NoProgram(program))?
            .try_into()
            .map_err(|source| DemandError::Program { program, source })?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| DemandError::Program { program, source })?;
        }
        let path = dir.join(program);
        // A pin left by an earlier load of the same name would make the new one fail.
        let _ = fs::remove_file(&path);
        prog.pin(&path).map_err(|source| DemandError::PinProgram {
            program,
            path,
            source,
        })?;
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<(), DemandError> {
    fs::create_dir_all(dir).map_err(|source| DemandError::Dir {
        path: dir.to_path_buf(),
        source,
    })
}

impl OnDemand {
    /// The programs pinned under `programs`, the links a previous daemon left live under
    /// `links` (adopted as they are), and the `hooks` to attach. Without the programs (a
    /// previous build's pins), `on_demand` is false and nothing is attached or detached.
    pub(crate) fn open(programs: &Path, links: &Path, hooks: Vec<tracefs::Hook>) -> Self {
        let mut loaded = BTreeMap::new();
        for hook in &hooks {
            if loaded.contains_key(hook.program) {
                continue;
            }
            match TracePoint::from_pin(programs.join(hook.program)) {
                Ok(p) => {
                    loaded.insert(hook.program, p);
                }
                Err(e) => {
                    tracing::debug!(program = hook.program, error = %e, "no pinned program");
                }
            }
        }
        let on_demand = !hooks.is_empty() && hooks.iter().all(|h| loaded.contains_key(h.program));
        let mut held = BTreeMap::new();
        for entry in fs::read_dir(links).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match PinnedLink::from_pin(entry.path()) {
                Ok(link) => {
                    held.insert(name, (entry.path(), FdLink::from(link)));
                }
                Err(e) => {
                    tracing::warn!(pin = %entry.path().display(), error = %e, "cannot adopt a pinned link");
                }
            }
        }
        let status = DemandStatus {
            on_demand,
            live: !held.is_empty(),
            hooks: hooks.len(),
            attached: held.len(),
            ..DemandStatus::default()
        };
        Self {
            detaching: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                programs: loaded,
                hooks,
                links: held,
                dir: links.to_path_buf(),
                pending: 0,
                idle_since: None,
                status,
            }),
        }
    }

    /// No syscall hooks to manage (a process that loads the maps only, never a hook).
    pub(crate) fn disabled() -> Self {
        Self {
            detaching: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                programs: BTreeMap::new(),
                hooks: Vec::new(),
                links: BTreeMap::new(),
                dir: PathBuf::new(),
                pending: 0,
                idle_since: None,
                status: DemandStatus::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches every hook not attached yet and returns each one's status (the first
    /// attach, at load, is the daemon's coverage report). The guard keeps them attached
    /// until the caller has tagged its cgroup.
    pub(crate) fn attach(&self) -> (Attached<'_>, Vec<HookStatus>) {
        let mut inner = self.lock();
        inner.pending += 1;
        inner.idle_since = None;
        let statuses = if inner.status.on_demand {
            inner.attach_missing()
        } else {
            Vec::new()
        };
        (Attached { demand: self }, statuses)
    }

    /// Detaches every hook once `idle()` has held for `linger`, one link at a time: each
    /// close waits for RCU grace periods in the kernel (`tracepoint_synchronize_unregister`,
    /// ~35-70 ms a link here, seconds for all), and an agent starting meanwhile waits for one
    /// of them only, then gets back what was detached. Returns whether it detached all.
    pub(crate) fn detach_when_idle(&self, idle: impl Fn() -> bool, linger: Duration) -> bool {
        if self.detaching.swap(true, Ordering::AcqRel) {
            return false;
        }
        let started = Instant::now();
        let mut detached = 0;
        let done = loop {
            let mut inner = self.lock();
            if !inner.status.on_demand || inner.links.is_empty() {
                break detached > 0;
            }
            // Checked again before each link: a tagging in progress or a tagged cgroup stops
            // the detach (the attach puts back what is gone).
            if inner.pending > 0 || !idle() {
                inner.idle_since = None;
                break false;
            }
            let since = *inner.idle_since.get_or_insert_with(Instant::now);
            if detached == 0 && since.elapsed() < linger {
                break false;
            }
            inner.detach_one();
            detached += 1;
            if inner.links.is_empty() {
                inner.status.detaches += 1;
                inner.status.last_detach_ms = millis(started.elapsed());
            }
        };
        if detached > 0 {
            let ms = millis(started.elapsed());
            tracing::info!(
                hooks = detached,
                ms,
                complete = done,
                "syscall hooks detached: no agent runs"
            );
        }
        self.detaching.store(false, Ordering::Release);
        done
    }

    /// At exit with no agent running: removes the pins of the live links, so that they
    /// detach when this process's descriptors close.
    pub(crate) fn unpin_when_idle(&self, idle: impl Fn() -> bool) {
        let inner = self.lock();
        if inner.status.on_demand && inner.pending == 0 && idle() {
            for (path, _) in inner.links.values() {
                let _ = fs::remove_file(path);
            }
        }
    }

    /// (program, target) of each syscall hook whose program is loaded.
    pub(crate) fn hooks(&self) -> Vec<(&'static str, String)> {
        let inner = self.lock();
        inner
            .hooks
            .iter()
            .filter(|h| inner.programs.contains_key(h.program))
            .map(|h| (h.program, format!("tracepoint:{}", h.tracepoint())))
            .collect()
    }

    pub(crate) fn status(&self) -> DemandStatus {
        self.lock().status.clone()
    }

    /// Puts back the pins of live links that another process removed (a restarted
    /// daemon would otherwise not find them); returns how many.
    pub(crate) fn restore(&self) -> usize {
        let mut inner = self.lock();
        let mut restored = 0;
        let names: Vec<String> = inner.links.keys().cloned().collect();
        for name in names {
            let Some((path, link)) = inner.links.remove(&name) else {
                continue;
            };
            if path.exists() {
                inner.links.insert(name, (path, link));
                continue;
            }
            let _ = fs::create_dir_all(&inner.dir);
            match link.pin(&path) {
                Ok(pinned) => {
                    restored += 1;
                    inner.links.insert(name, (path, pinned.into()));
                }
                // The link went with the failed pin (aya's pin consumes it): attached
                // again below, at once.
                Err(e) => {
                    tracing::error!(pin = %path.display(), error = %e, "cannot restore a removed pin");
                }
            }
        }
        if inner.links.len() < inner.status.attached {
            inner.attach_missing();
        }
        inner.status.attached = inner.links.len();
        restored
    }
}

impl Inner {
    fn attach_missing(&mut self) -> Vec<HookStatus> {
        let started = Instant::now();
        if let Err(e) = make_dir(&self.dir) {
            tracing::error!(error = %e, "links of the syscall hooks will not outlive the daemon");
        }
        let mut statuses = Vec::with_capacity(self.hooks.len());
        let mut newly = 0;
        for hook in &self.hooks {
            let name = link_name(hook);
            let target = format!("tracepoint:{}", hook.tracepoint());
            if self.links.contains_key(&name) {
                statuses.push(HookStatus::ok(hook.program, target));
                continue;
            }
            let path = self.dir.join(&name);
            let result = attach_one(&mut self.programs, hook, &path);
            statuses.push(match result {
                Ok(link) => {
                    newly += 1;
                    self.links.insert(name, (path, link));
                    HookStatus::ok(hook.program, target)
                }
                Err(error) => HookStatus::failed(hook.program, target, error),
            });
        }
        if newly > 0 {
            self.status.attaches += 1;
            self.status.last_attach_ms = millis(started.elapsed());
            tracing::info!(
                hooks = newly,
                ms = self.status.last_attach_ms,
                "syscall hooks attached"
            );
        }
        self.status.live = !self.links.is_empty();
        self.status.attached = self.links.len();
        statuses
    }

    fn detach_one(&mut self) {
        if let Some((_, (path, link))) = self.links.pop_first() {
            // The pin first: the link detaches when its last reference (ours) goes.
            let _ = fs::remove_file(&path);
            drop(link);
        }
        self.status.live = !self.links.is_empty();
        self.status.attached = self.links.len();
    }
}

/// Attaches one hook and pins its link at `path`.
fn attach_one(
    programs: &mut BTreeMap<&'static str, TracePoint>,
    hook: &tracefs::Hook,
    path: &Path,
) -> Result<FdLink, String> {
    let prog = programs
        .get_mut(hook.program)
        .ok_or_else(|| "program not loaded".to_owned())?;
    let id = prog
        .attach(hook.category, &hook.name)
        .map_err(|e| format!("attach: {}", super::loader::error_chain(&e)))?;
    let link = FdLink::try_from(prog.take_link(id).map_err(|e| e.to_string())?)
        .map_err(|e| format!("not a bpf_link: {e}"))?;
    // A pin left by a link that was detached meanwhile would refuse the new one.
    let _ = fs::remove_file(path);
    let pinned = link.pin(path).map_err(|e| format!("pin: {e}"))?;
    Ok(pinned.into())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
