//! `onViolation: ask`: a held operation becomes a pending request (`registry`), a person
//! approves or denies it through the socket, and the daemon resumes or kills the process
//! and writes a `kind: approval` record. Unanswered requests are denied at their deadline.

use std::time::{Duration, Instant, SystemTime};

use crate::{
    control::enforce::signal_process,
    control::state::Shared,
    host::{cgroupfs::Cgroup2, threads::settle_for_resume},
    observe::record::{
        Action, AgentNames, AgentRef, ApprovalObject, Kind, Layer, Record, Verdict, rfc3339,
    },
};

mod grant;
mod registry;

pub(crate) use grant::{Entry, GrantError, with_grants};
pub(crate) use registry::{Pending, Request, RequestView, millis};

/// How long a resume waits for every thread of the process to stop (as the pipeline's
/// release does).
const SETTLE_WITHIN: Duration = Duration::from_millis(50);

/// A held process is expected stopped this long after its request was opened (the stop
/// from eBPF lands microseconds after the event, see docs/SECURITY.md).
const SETTLE_STOP: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApprovalError {
    #[error("no pending request {0} (decided, timed out, or its task ended)")]
    NotFound(u64),
    #[error("request {id}: {source} (the process was not resumed; the request is denied)")]
    Grant {
        id: u64,
        #[source]
        source: GrantError,
    },
}

/// What a person decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Approve { for_task: bool },
    Deny,
}

/// Who decided, from the socket's peer credentials.
#[derive(Debug, Clone, Default)]
pub(crate) struct Approver {
    pub(crate) uid: Option<u32>,
    pub(crate) name: Option<String>,
    pub(crate) note: Option<String>,
}

impl Shared {
    /// Opens a request for a held operation. None when its task already has `max` pending
    /// (the caller then acts as `kill-process`).
    pub(crate) fn ask(&self, request: Request, max: usize) -> Option<u64> {
        let id = crate::control::state::lock(&self.approvals).add(request, max)?;
        crate::control::state::Stats::add(&self.stats.asked, 1);
        Some(id)
    }

    pub(crate) fn holds(&self) -> Vec<RequestView> {
        crate::control::state::lock(&self.approvals).views(Instant::now())
    }

    /// Carries out a decision: resumes the process (approve) or kills it (deny), and
    /// records it.
    pub(crate) fn decide(
        &self,
        id: u64,
        decision: Decision,
        approver: &Approver,
    ) -> Result<RequestView, ApprovalError> {
        let request = crate::control::state::lock(&self.approvals)
            .take(id)
            .ok_or(ApprovalError::NotFound(id))?;
        let view = request.view(Instant::now());
        match decision {
            Decision::Approve { for_task } => {
                // A refused network call only succeeds on its retry if its rule is added:
                // approving one is always a grant for the task.
                let for_task = for_task || !request.stopped;
                let granted = if for_task {
                    self.grant(&request).map(Some)
                } else {
                    Ok(None)
                };
                let entry = match granted {
                    Ok(entry) => entry,
                    Err(source) => {
                        self.kill_held(&request);
                        let mut denied = approver.clone();
                        denied.note = Some(format!("grant failed: {source}"));
                        self.push_record(approval_record(&request, "denied", false, &denied));
                        return Err(ApprovalError::Grant { id, source });
                    }
                };
                self.release(&request);
                let mut record = approval_record(&request, "approved", for_task, approver);
                if let Some(a) = record.approval.as_mut() {
                    a.grant = entry;
                }
                self.push_record(record);
            }
            Decision::Deny => {
                self.kill_held(&request);
                self.push_record(approval_record(&request, "denied", false, approver));
            }
        }
        Ok(view)
    }

    /// Housekeeping: denies requests past their deadline, and those whose task ended.
    pub(crate) fn sweep_approvals(&self) {
        let (expired, orphans) = {
            let mut pending = crate::control::state::lock(&self.approvals);
            if pending.len() == 0 {
                return;
            }
            let expired = pending.expired(Instant::now());
            let registry = self.registry();
            let orphans = pending.orphans(|task| registry.get(task).is_some());
            (expired, orphans)
        };
        let nobody = Approver::default();
        // A held process found running was resumed by someone else than the daemon (a
        // sibling's SIGCONT in an adopted agent, which has no seccomp filter): denied. One
        // found gone was killed, or resumed and finished, before any decision.
        let settled = Instant::now()
            .checked_sub(SETTLE_STOP)
            .unwrap_or_else(Instant::now);
        let stopped = crate::control::state::lock(&self.approvals).stopped(settled);
        for (id, pid) in stopped {
            let (decision, note) = match crate::host::threads::state_of(pid) {
                Some('T' | 't') => continue,
                None | Some('Z' | 'X' | 'x') => (
                    "gone",
                    "the held process ended before a decision (killed, or resumed by another \
                     process than the daemon)",
                ),
                Some(_) => (
                    "resumed",
                    "the held process was resumed by another process than the daemon",
                ),
            };
            let Some(request) = crate::control::state::lock(&self.approvals).take(id) else {
                continue;
            };
            self.kill_held(&request);
            let why = Approver {
                note: Some(note.to_owned()),
                ..Approver::default()
            };
            self.push_record(approval_record(&request, decision, false, &why));
        }
        for request in expired {
            self.kill_held(&request);
            self.push_record(approval_record(&request, "timeout", false, &nobody));
        }
        for request in orphans {
            self.kill_held(&request);
            self.push_record(approval_record(&request, "ended", false, &nobody));
        }
    }

    /// At start: the requests of a previous daemon were in its memory only, so the
    /// processes it held for them are denied (killed, recorded). Holds of scopes that do
    /// not ask are left to the pipeline (their events are read again from the ring).
    pub(crate) fn deny_held_at_restart(&self) -> usize {
        let held = self.enforcer().held_threads();
        let mut denied = 0;
        for (tid, slot) in held {
            let Some((agent, asks)) = self
                .registry()
                .by_slot_mut(slot)
                .map(|t| (AgentRef::of(&t.scope, &t.id), t.scope.asks()))
            else {
                continue;
            };
            if !asks {
                continue;
            }
            let Some(tgid) = crate::host::threads::tgid_of(tid) else {
                let _ = self.enforcer().judged_hold(tid, &[]);
                continue;
            };
            let _ = self.enforcer().judged_hold(tid, &[]);
            signal_process(tgid, libc::SIGKILL, || {
                self.enforcer().is_tagged(tgid, slot)
            });
            let reason = "the daemon restarted: requests pending then are denied";
            let mut record = Record::lifecycle(agent, "restart", reason, Action::KilledProcess);
            record.kind = Kind::Approval;
            record.verdict = Verdict::Violation;
            record.layer = Some(Layer::Daemon);
            record.task = None;
            record.approval = Some(Box::new(ApprovalObject {
                id: 0,
                decision: "restart",
                rule: None,
                for_task: false,
                approver_uid: None,
                approver: None,
                note: Some(format!("{reason} (pid {tgid}, thread {tid})")),
                waited_ms: None,
                grant: None,
            }));
            self.push_record(record);
            denied += 1;
        }
        denied
    }

    /// Records an attempt to decide that was refused (an agent deciding, or a user who is
    /// not an approver).
    pub(crate) fn refused_decision(&self, id: u64, approver: &Approver, why: &str) {
        let request = crate::control::state::lock(&self.approvals)
            .get(id)
            .cloned();
        let agent = request.as_ref().map_or_else(
            || {
                AgentRef::new(AgentNames {
                    scope: std::sync::Arc::from(""),
                    task: std::sync::Arc::from(""),
                    owner: std::sync::Arc::from(""),
                    identity: None,
                })
            },
            agent_of,
        );
        let mut record = Record::lifecycle(agent, "approval-refused", why, Action::None);
        record.kind = Kind::Approval;
        record.verdict = Verdict::Violation;
        record.task = None;
        if let Some(r) = &request {
            record.process = Some(r.process.clone());
        }
        record.approval = Some(Box::new(ApprovalObject {
            id,
            decision: "refused",
            rule: request.map(|r| r.violation.rule),
            for_task: false,
            approver_uid: approver.uid,
            approver: approver.name.clone(),
            note: Some(why.to_owned()),
            waited_ms: None,
            grant: None,
        }));
        self.push_record(record);
    }

    /// Resumes a held process once no other thread of it is held (the last verdict
    /// resumes, as in the pipeline).
    fn release(&self, request: &Request) {
        if !request.stopped {
            return;
        }
        let (tgid, thread) = (request.process.pid, request.process.tid);
        let (threads, _) = settle_for_resume(tgid, thread, SETTLE_WITHIN);
        let last = self.enforcer().judged_hold(thread, &threads)
            && !crate::control::state::lock(&self.approvals).holds_process(tgid);
        if last {
            signal_process(tgid, libc::SIGCONT, || self.is_agents(request, tgid));
        }
    }

    fn kill_held(&self, request: &Request) {
        if !request.stopped {
            return;
        }
        let (tgid, thread) = (request.process.pid, request.process.tid);
        let _ = self.enforcer().judged_hold(thread, &[]);
        if !signal_process(tgid, libc::SIGKILL, || self.is_agents(request, tgid)) {
            tracing::debug!(pid = tgid, "held process gone before its denial");
        }
    }

    /// A signal must never reach anything but the agent's own process.
    fn is_agents(&self, request: &Request, pid: u32) -> bool {
        let cgroup = &request.cgroup;
        self.enforcer().is_tagged(pid, request.slot)
            || Cgroup2::of_pid(pid)
                .is_some_and(|p| p == *cgroup || p.starts_with(&format!("{cgroup}/")))
    }
}

fn agent_of(r: &Request) -> AgentRef {
    AgentRef::new(AgentNames {
        scope: r.scope.as_str().into(),
        task: r.task.as_str().into(),
        owner: r.owner.as_str().into(),
        identity: r.identity.as_deref().map(Into::into),
    })
}

/// The `kind: approval` record of a decision.
fn approval_record(
    r: &Request,
    decision: &'static str,
    for_task: bool,
    approver: &Approver,
) -> Record {
    let yes = decision.starts_with("approved");
    let killed = !yes && r.stopped;
    let mut record = Record::lifecycle(agent_of(r), decision, "", Action::None);
    record.time = rfc3339(SystemTime::now()).into();
    record.kind = Kind::Approval;
    record.task = None;
    record.verdict = if yes {
        Verdict::Allowed
    } else {
        Verdict::Violation
    };
    record.action = if killed {
        Action::KilledProcess
    } else {
        Action::None
    };
    record.layer = killed.then_some(Layer::Daemon);
    record.process = Some(r.process.clone());
    record.file.clone_from(&r.file);
    record.net.clone_from(&r.net);
    record.exec.clone_from(&r.exec);
    record.violation = Some(r.violation.clone());
    record.approval = Some(Box::new(ApprovalObject {
        id: r.id,
        decision,
        rule: Some(r.violation.rule.clone()),
        for_task,
        approver_uid: approver.uid,
        approver: approver.name.clone(),
        note: approver.note.clone(),
        waited_ms: Some(millis(r.since.elapsed())),
        grant: None,
    }));
    record
}

/// The `approval` object of the record that opened a request.
pub(crate) fn pending_object(id: u64, rule: &str) -> ApprovalObject {
    ApprovalObject {
        id,
        decision: "pending",
        rule: Some(rule.to_owned()),
        for_task: false,
        approver_uid: None,
        approver: None,
        note: None,
        waited_ms: None,
        grant: None,
    }
}
