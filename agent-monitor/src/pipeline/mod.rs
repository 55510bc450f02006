//! Per-event work: find the task, keep the process table, resolve paths, ask the policy,
//! act on the verdict, build records and hand them in batches to the audit log's writer
//! thread (`writer.rs`): nothing here waits for the disk.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::Path, sync::Arc};

use crate::{
    control::actions::{Step, decide, layer},
    control::enforce::{kernel_dev, signal_process},
    control::state::{Shared, Stats},
    control::tasks::Attribution,
    host::cgroupfs::Cgroup2,
    host::threads::settle_for_resume,
    kernel::{
        decoder::{DecodeError, Event, FileOp, Header},
        reader::Consumer,
    },
    observe::metrics::HookCounts,
    observe::record::{Action, Clock, Record, Rfc3339Cache, Verdict},
    pipeline::proctable::ProcTable,
    policy::FileAccess,
    scope::Scope,
};

mod agents;
mod ask;
mod canon;
mod describe;
mod dirs;
pub(crate) mod proctable;
pub(crate) mod resolve;
pub(crate) mod writer;

use agents::Agents;
use describe::{Judged, describe, process_ref, verdict};

/// How long a release waits for every thread of the process to stop before it resumes it.
/// Threads stop within microseconds unless in an uninterruptible sleep; the wait bounds what
/// such a thread can cost the pipeline.
const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_millis(50);

/// Records written per batch at most.
const BATCH: usize = 1024;

pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    procs: ProcTable,
    dirs: dirs::DirIndex,
    cgroups: crate::host::own_cgroup::CgroupMounts,
    /// cgroup id -> path, for records (the process may be gone when its event is read).
    cgroup_paths: HashMap<u64, Arc<str>>,
    /// The agent of each task's records, shared by them.
    agents: Agents,
    /// Events decoded since the last flush, by hook (for the metrics).
    hook_counts: HookCounts,
    clock: Clock,
    /// Record times: consecutive events mostly share their second.
    stamps: Rfc3339Cache,
    writer: writer::Writer,
    batch: Vec<Record>,
    /// The batch holds a violation or an action's record: it goes to the writer now (the
    /// kill it records ends `exec`, whose caller reads the log next).
    urgent: bool,
    /// Evaluations judged so far: one in `TIMED_EVERY` is timed for the histogram (two
    /// clock reads were 6% of a network event's cost).
    evaluations: u32,
}

/// One policy evaluation in this many is timed.
const TIMED_EVERY: u32 = 8;

impl Pipeline {
    pub(crate) fn new(shared: Arc<Shared>, writer: writer::Writer) -> Self {
        Self {
            shared,
            procs: ProcTable::default(),
            dirs: dirs::DirIndex::default(),
            cgroups: crate::host::own_cgroup::CgroupMounts::discover(),
            cgroup_paths: HashMap::new(),
            agents: Agents::default(),
            hook_counts: HookCounts::default(),
            clock: Clock::new(),
            stamps: Rfc3339Cache::default(),
            writer,
            batch: Vec::new(),
            urgent: false,
            evaluations: 0,
        }
    }
}

impl Consumer for Pipeline {
    fn event(&mut self, event: Event) {
        self.hook_counts.add(&event);
        match event {
            Event::CgroupMkdir { id, path } => self.shared.adopt(&path, id),
            Event::CgroupRmdir { id } => self.shared.cgroup_removed(id),
            Event::Exit { header } => {
                if let Some(t) = self.shared.registry().by_slot_mut(header.agent) {
                    t.seen = true;
                }
                self.procs.remove(header.tgid);
            }
            Event::Exec { .. } | Event::File { .. } | Event::Net { .. } | Event::Escape { .. } => {
                self.judge(&event);
            }
        }
    }

    fn undecodable(&mut self, error: &DecodeError) {
        Stats::add(&self.shared.stats.decode_errors, 1);
        tracing::warn!(%error, "undecodable event skipped");
    }

    /// Hands the records gathered since the last flush, with any lifecycle notices, to
    /// the audit log's writer thread (which publishes them to the API once written).
    fn flush(&mut self) {
        self.shared
            .observed
            .metrics
            .kernel_events(&mut self.hook_counts);
        self.batch.extend(self.shared.take_notices());
        if self.batch.is_empty() {
            return;
        }
        // The next batch is likely as long as this one: reserved once, not grown (each
        // growth copied every record gathered so far), or one the writer is done with.
        let next = self.writer.empty_batch(self.batch.len());
        self.writer.submit(std::mem::replace(&mut self.batch, next));
        self.urgent = false;
    }

    /// Whether the records waiting should be written now: a full batch (a full ring buffer
    /// is drained in bounded batches, not into one huge one), or a violation's.
    fn batch_full(&self) -> bool {
        self.urgent || self.batch.len() >= BATCH
    }
}

impl Pipeline {
    #[expect(
        clippy::too_many_lines,
        reason = "one event from attribution to its record, in order; each step is a helper"
    )]
    fn judge(&mut self, event: &Event) {
        let Some(h) = event.header() else { return };
        let Some(Attribution {
            names,
            scope,
            cgroup_id: task_cgroup_id,
            landlock,
            call,
        }) = self.shared.registry().attribute_at(h.agent, h.time_ns)
        else {
            Stats::add(&self.shared.stats.orphan_events, 1);
            return;
        };
        let (task_id, task_cgroup) = (&names.id, &names.cgroup);
        let start_cwd = names.start_cwd.as_deref();
        // The task's own cgroup (most events) is borrowed, not another reference count.
        let elsewhere =
            (h.cgroup_id != task_cgroup_id).then(|| self.cgroup_path(h.cgroup_id, task_cgroup));
        let cgroup = elsewhere.as_ref().unwrap_or(task_cgroup);
        let learned = self.learned_host(event);
        let proc = self.procs.observe(h, start_cwd);
        let Some(mut judged) = describe(event, h, proc, &mut self.dirs, task_cgroup) else {
            // Nothing to judge (a listen on a Unix socket, a move inside the agent): a held
            // process goes on.
            if h.kernel.held {
                self.carry_out(Step::Release, h, task_cgroup, None);
            }
            return;
        };
        if h.kernel.killed
            && let Event::File { opened, .. } = event
        {
            describe::name_denied(&mut judged, *opened, &scope.policy.declared().files.deny);
        }
        baseline_preset(
            &self.cgroups,
            self.shared.cgroup2.root(),
            &mut judged,
            (h.tgid, proc.exe.as_deref(), start_cwd, task_cgroup),
        );
        let started = self
            .evaluations
            .is_multiple_of(TIMED_EVERY)
            .then(std::time::Instant::now);
        self.evaluations = self.evaluations.wrapping_add(1);
        let violation = verdict(
            &mut judged,
            event,
            h,
            &scope,
            &self.shared.protected,
            learned,
        );
        if let Some(started) = started {
            self.shared.observed.metrics.policy_eval(started.elapsed());
        }
        if h.kernel.refused && (violation.is_none() || !landlock) {
            // A call that failed in scope (or, without Landlock, on the file's own
            // permissions) is not an event of the scope: nothing happened.
            Stats::add(&self.shared.stats.refused_in_scope, 1);
            return;
        }
        let (mut action, mut step) = decide(
            judged.kind,
            violation.is_some(),
            judged.file.as_ref().is_none_or(|f| !f.unresolved),
            scope.mode,
            scope.on_violation,
            h.kernel,
        );
        let process = process_ref(h, proc, cgroup);
        let mut approval = None;
        if step == Some(Step::Ask)
            && let Some(violation) = violation.as_ref()
        {
            (action, step, approval) = ask::Asked {
                h,
                judged: &judged,
                violation,
                scope: &scope,
                task: task_id,
                cgroup: task_cgroup,
                process: &process,
            }
            .open(&self.shared, action);
        }
        let after = after_refusal(action, step);
        let killed =
            after.is_some() || matches!(action, Action::KilledProcess | Action::KilledAgent);
        self.before_step(step, event, h, &judged, violation.is_some(), &scope);
        if let Some(step) = step {
            let exe = judged.exec.as_ref().map(|e| e.path.as_str());
            self.carry_out(step, h, task_cgroup, exe);
        }
        self.account(h, action, killed, violation.as_ref(), &process);
        self.urgent |= violation.is_some() || action != Action::None;
        self.batch.push(Record {
            time: self.stamps.format(self.clock.wall(h.time_ns)),
            kind: judged.kind,
            verdict: verdict_of(violation.is_some()),
            action,
            layer: layer(judged.kind, h.kernel, action),
            after,
            agent: self.agents.of(&scope, task_id),
            call,
            process: Some(process),
            kubernetes: self.shared.kubernetes.agent(h.agent).map(Box::new),
            file: judged.file,
            net: judged.net,
            exec: judged.exec,
            escape: judged.escape.map(Box::new),
            violation,
            task: None,
            count: None,
            truncated: h.truncated,
            approval,
        });
    }
}

impl Pipeline {
    /// Counts what was done, and remembers the violation that killed a task (for `exec`'s
    /// message).
    fn account(
        &self,
        h: &Header,
        action: Action,
        killed: bool,
        violation: Option<&crate::policy::Violation>,
        process: &crate::observe::record::ProcessRef,
    ) {
        if h.kernel.held {
            Stats::add(&self.shared.stats.held, 1);
        }
        if matches!(action, Action::Blocked | Action::Refused) {
            Stats::add(&self.shared.stats.blocked, 1);
        }
        if killed {
            Stats::add(&self.shared.stats.killed, 1);
        }
        if let Some(v) = violation {
            Stats::add(&self.shared.stats.violations, 1);
            let mut registry = self.shared.registry();
            registry.call_violation(h.agent, h.time_ns);
            if let Some(t) = registry.by_slot_mut(h.agent) {
                t.violations += 1;
                if killed {
                    t.last_violation = Some(format!(
                        "{} by {} ({}): {}",
                        v.rule, process.comm, process.pid, v.reason
                    ));
                }
            }
        }
    }

    /// The name a connect's or send's address was learned from, when the kernel matched
    /// it to a host rule.
    fn learned_host(&self, event: &Event) -> Option<String> {
        let Event::Net {
            header,
            addr,
            host_rule,
            ..
        } = event
        else {
            return None;
        };
        let index = host_rule.checked_sub(1)?;
        Some(
            self.shared
                .dns
                .host_of(header.agent, index, *addr)
                // Learned by a previous daemon (or swept a moment ago): still a host rule.
                .unwrap_or_else(|| "<learned by an earlier resolver>".to_owned()),
        )
    }

    /// What the daemon learns from a verdict before acting on it: a file judged readable
    /// is remembered in the kernel; a thread moved out of the agent is killed there.
    fn before_step(
        &self,
        step: Option<Step>,
        event: &Event,
        h: &Header,
        judged: &Judged,
        violation: bool,
        scope: &Scope,
    ) {
        if step == Some(Step::Release)
            && let (
                Event::File {
                    op: FileOp::Open { .. },
                    ret,
                    opened,
                    ..
                },
                Some(f),
            ) = (event, &judged.file)
        {
            self.judged_open(h, f, *ret, *opened, scope);
        }
        if let (
            Event::File {
                op: FileOp::Rename, ..
            },
            Some(f),
        ) = (event, &judged.file)
            && scope.mode == crate::scope::Mode::Enforce
            && f.new_path.as_ref().is_some_and(|to| {
                std::fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_dir())
            })
        {
            // A directory moved may now be where the scope does not cover every file.
            self.shared.enforcer().forget_dirs(h.agent);
        }
        if violation
            && let Some(moved) = judged.escape.as_ref().and_then(|e| e.moved_pid)
            && scope.mode == crate::scope::Mode::Enforce
            && scope.on_violation != crate::scope::OnViolation::Alert
        {
            // The moved thread is the agent's even in its new cgroup.
            let shared = Arc::clone(&self.shared);
            signal_process(moved, libc::SIGKILL, || {
                shared.enforcer().is_tagged(moved, h.agent)
            });
        }
    }

    /// A held open judged allowed: the kernel lets the next opens of the same file through
    /// (reads, while the scope it was judged under is the slot's), and of every file in its
    /// directory when the scope lets any process read (write) them all.
    fn judged_open(
        &self,
        h: &Header,
        f: &crate::observe::record::FileObject,
        ret: i64,
        opened: Option<crate::kernel::decoder::FileId>,
        scope: &Scope,
    ) {
        let mut enforcer = self.shared.enforcer();
        if matches!(f.access, FileAccess::Read | FileAccess::List)
            // What the new descriptor referred to, as the kernel read it when it held the
            // open (the process has not run since); /proc when the kernel could not.
            && let Some((dev, ino)) = opened.or_else(|| {
                std::fs::metadata(format!("/proc/{}/fd/{ret}", h.pid))
                    .ok()
                    .map(|meta| (kernel_dev(meta.dev()), meta.ino()))
            })
        {
            enforcer.allow_read_under(h.agent, scope, dev, ino);
        }
        if !f.unresolved
            && let Some(dir) = Path::new(&f.path).parent()
        {
            let protected = self.shared.protected.mount_of(dir).is_some();
            enforcer.allow_dir_under(h.agent, scope, dir, protected);
        }
    }

    /// The path of a cgroup an event came from that is not its task's own: one below it
    /// (nested), or elsewhere (a tagged process that moved out).
    fn cgroup_path(&mut self, id: u64, task_cgroup: &Arc<str>) -> Arc<str> {
        if let Some(p) = self.cgroup_paths.get(&id) {
            return Arc::clone(p);
        }
        match self.shared.cgroup2.find_id(task_cgroup, id) {
            Some(p) => {
                if self.cgroup_paths.len() > 4096 {
                    self.cgroup_paths.clear();
                }
                let p: Arc<str> = p.into();
                self.cgroup_paths.insert(id, Arc::clone(&p));
                p
            }
            None => format!("<cgroup id {id}>").into(),
        }
    }

    /// The daemon's own enforcement. Every signal goes through a pidfd and a check that
    /// the target is still this agent's: a kill must never reach anything else.
    fn carry_out(&mut self, step: Step, h: &Header, cgroup: &str, exe: Option<&str>) {
        let (slot, tgid) = (h.agent, h.tgid);
        let shared = Arc::clone(&self.shared);
        let is_agents = |pid: u32| {
            shared.enforcer().is_tagged(pid, slot)
                || Cgroup2::of_pid(pid)
                    .is_some_and(|p| p == cgroup || p.starts_with(&format!("{cgroup}/")))
        };
        match step {
            Step::Release => {
                if let Some(meta) = exe.and_then(|p| std::fs::metadata(p).ok()) {
                    shared
                        .enforcer()
                        .allow_exec(slot, kernel_dev(meta.dev()), meta.ino());
                }
                // Another thread of the process may be held too: the last verdict resumes.
                // The check and the SIGCONT are not atomic: a hold that began between them
                // would be ended by this SIGCONT (it cancels a pending SIGSTOP), and that
                // thread would run before its verdict. Once every thread is stopped, none
                // can begin a hold, so the check holds until the resume.
                let (threads, settled) = settle_for_resume(tgid, h.pid, SETTLE_WITHIN);
                if !settled {
                    tracing::debug!(pid = tgid, "a thread did not stop in time; resuming anyway");
                }
                if shared.enforcer().judged_hold(h.pid, &threads) {
                    signal_process(tgid, libc::SIGCONT, || is_agents(tgid));
                } else {
                    tracing::debug!(
                        pid = tgid,
                        tid = h.pid,
                        "another thread is held: resumed by its verdict"
                    );
                }
            }
            Step::KillProcess => {
                let _ = shared.enforcer().judged_hold(h.pid, &[]);
                if !signal_process(tgid, libc::SIGKILL, || is_agents(tgid)) {
                    tracing::debug!(pid = tgid, "process already gone before the daemon's kill");
                }
            }
            // Opened by `ask::Asked::open`; nothing to do here.
            Step::Ask => {}
            Step::KillAgent => {
                let _ = shared.enforcer().judged_hold(h.pid, &[]);
                if let Err(e) = shared.cgroup2.kill(cgroup) {
                    tracing::error!(%cgroup, error = %e, "cgroup.kill failed");
                }
                // Tagged processes that left the cgroup are still the agent's.
                for pid in self.procs.pids_of(slot) {
                    signal_process(pid, libc::SIGKILL, || is_agents(pid));
                }
            }
        }
    }
}

/// What onViolation does after a refusal: a kill.
fn after_refusal(action: Action, step: Option<Step>) -> Option<Action> {
    match (action, step) {
        (Action::Refused, Some(Step::KillProcess)) => Some(Action::KilledProcess),
        (Action::Refused, Some(Step::KillAgent)) => Some(Action::KilledAgent),
        _ => None,
    }
}

fn verdict_of(violation: bool) -> Verdict {
    if violation {
        Verdict::Violation
    } else {
        Verdict::Allowed
    }
}

/// What the baseline allows that only the daemon can tell: a read of the process's own
/// image (Node and Python's `platform` read their executable), a listing of the directory
/// the task was started from, and a read of the process's own cgroup limits.
fn baseline_preset(
    cgroups: &crate::host::own_cgroup::CgroupMounts,
    cgroup2_root: &Path,
    judged: &mut Judged,
    (tgid, exe, start_cwd, task_cgroup): (u32, Option<&Path>, Option<&Path>, &str),
) {
    let Some(f) = judged.file.as_ref() else {
        return;
    };
    let path = Path::new(&f.path);
    let own_image = f.access == FileAccess::Read && exe == Some(path);
    // Interpreters list their working directory to import from it.
    let listed_start = f.access == FileAccess::List && start_cwd == Some(path);
    let own_limit = f.access == FileAccess::Read && cgroups.holds(path) && {
        let mut own = cgroups.dirs_of_pid(tgid);
        if own.is_empty() {
            own.push(cgroup2_root.join(task_cgroup.trim_start_matches('/')));
        }
        crate::host::own_cgroup::is_own_limit(path, &own)
    };
    if own_image || listed_start || own_limit {
        judged.preset = Some(crate::policy::Verdict::Allowed);
    }
}
