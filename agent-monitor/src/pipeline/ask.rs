//! `onViolation: ask` in the pipeline: a held violation becomes a pending request for a
//! person (the process stays stopped); past the task's `maxPending` it is what
//! `kill-process` would do.

use std::time::Instant;

use crate::{
    control::actions::Step,
    control::approval::{Request, pending_object},
    control::state::Shared,
    kernel::decoder::Header,
    observe::record::{Action, ApprovalObject, ProcessRef, rfc3339},
    policy::Violation,
    scope::Scope,
};

use super::describe::Judged;

/// A violation `decide` said to ask about.
pub(super) struct Asked<'a> {
    pub(super) h: &'a Header,
    pub(super) judged: &'a Judged,
    pub(super) violation: &'a Violation,
    pub(super) scope: &'a Scope,
    pub(super) task: &'a str,
    pub(super) cgroup: &'a str,
    pub(super) process: &'a ProcessRef,
}

impl Asked<'_> {
    /// Opens the request. Returns the record's action, the step still to carry out and
    /// the record's `approval` object.
    pub(super) fn open(
        self,
        shared: &Shared,
        action: Action,
    ) -> (Action, Option<Step>, Option<Box<ApprovalObject>>) {
        let stopped = self.h.kernel.held;
        let approval = self.scope.approval();
        let now = Instant::now();
        let request = Request {
            id: 0,
            task: self.task.to_owned(),
            slot: self.h.agent,
            scope: self.scope.name.clone(),
            owner: self.scope.owner.clone(),
            identity: self.scope.identity.clone(),
            cgroup: self.cgroup.to_owned(),
            process: self.process.clone(),
            kind: self.judged.kind,
            file: self.judged.file.clone(),
            net: self.judged.net.clone(),
            exec: self.judged.exec.clone(),
            violation: self.violation.clone(),
            stopped,
            since: now,
            held_at: rfc3339(std::time::SystemTime::now()),
            deadline: now + approval.timeout(),
        };
        match shared.ask(request, approval.max_pending()) {
            Some(id) => (
                action,
                None,
                Some(Box::new(pending_object(id, &self.violation.rule))),
            ),
            // Too many pending: as kill-process (a refused network call stays refused).
            None if stopped => (Action::KilledProcess, Some(Step::KillProcess), None),
            None => (action, None, None),
        }
    }
}
