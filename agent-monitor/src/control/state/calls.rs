//! Tool calls of a task (`agent-monitor mcp`): the scope that binds the server switches to
//! the tool's for the call and back after it, and every call leaves a record.
//!
//! The server is one long-lived process tree under one slot, so the switch re-writes the
//! slot's kernel maps (and the scope the daemon judges its held operations by); its
//! Landlock layer stays the task's, the widest, because Landlock can only narrow a running
//! process, never widen it again.

use std::{sync::Arc, time::Instant};

use serde::Deserialize;

use super::{Shared, TaskError};
use crate::{
    control::tasks::CallSpan,
    observe::record::{Action, AgentRef, CallEnd, CallRef, Layer, Record, Verdict},
    policy::{Dimension, Violation},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("no task named {0:?}")]
    NotFound(String),
    #[error("task {task:?} already has a call in flight ({call:?}); calls run one at a time")]
    Busy { task: String, call: String },
    #[error("task {task:?} has no call in flight")]
    NoCall { task: String },
    #[error("tool {tool:?} is not listed in spec.tools of scope {scope:?}")]
    NotListed { tool: String, scope: String },
    #[error("switching task {task:?} to the scope of tool {tool:?}: {source}")]
    Switch {
        task: String,
        tool: String,
        #[source]
        source: Box<TaskError>,
    },
}

/// `PUT /v1/tasks/{id}/call`: a call starts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallStart {
    /// The client's JSON-RPC request id, as text.
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) digest: Option<String>,
}

/// `DELETE /v1/tasks/{id}/call`: the call in flight ended.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallFinish {
    /// `ok`, `error` or `server-died`.
    pub(crate) outcome: String,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// `POST /v1/tasks/{id}/call-errors`: the proxy refused a message of the client or the
/// server (malformed, oversized) without it reaching the other side.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProtocolError {
    pub(crate) error: String,
}

/// `CLOCK_BOOTTIME` in nanoseconds: the clock of the kernel's event times.
fn boot_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut now) } != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}

impl Shared {
    /// Starts a call of task `id`: with `spec.tools`, the server is switched to the tool's
    /// scope before this returns (the call may then be passed to it); a tool not listed is
    /// recorded and refused.
    pub(crate) fn begin_call(&self, id: &str, start: CallStart) -> Result<(), CallError> {
        let call = CallRef {
            id: start.id,
            name: start.name,
            digest: start.digest,
            end: None,
        };
        let (slot, base, tool) = {
            let mut registry = self.registry();
            let task = registry
                .get_mut(id)
                .ok_or_else(|| CallError::NotFound(id.to_owned()))?;
            if let Some(active) = task.active_call() {
                return Err(CallError::Busy {
                    task: id.to_owned(),
                    call: active.call.name.clone(),
                });
            }
            let base = Arc::clone(&task.scope);
            let tool = if base.tools.is_empty() {
                None
            } else if let Some(tool) = base.tools.get(&call.name) {
                Some(Arc::clone(tool))
            } else {
                task.violations += 1;
                drop(registry);
                self.push_record(call_record(
                    id,
                    &base,
                    call.clone(),
                    CallEnd {
                        outcome: "refused".into(),
                        duration_ms: 0,
                        events: 0,
                        violations: 1,
                        error: Some("the tool is not listed in spec.tools".into()),
                    },
                ));
                return Err(CallError::NotListed {
                    tool: call.name,
                    scope: base.name.clone(),
                });
            };
            // Reserved while the kernel maps are switched: a second start is refused as
            // busy; no event is charged to it before the switch is complete.
            task.start_call(CallSpan {
                call: call.clone(),
                scope: tool.clone().unwrap_or_else(|| Arc::clone(&base)),
                start_ns: u64::MAX,
                end_ns: None,
                started: Instant::now(),
                events: 0,
                violations: 0,
            });
            (task.slot, base, tool)
        };
        if let Some(tool) = &tool
            && let Err(source) = self.switch_scope(slot, tool)
        {
            // Back to the task's own scope, whatever the switch left written.
            if let Err(e) = self.switch_scope(slot, &base) {
                tracing::error!(task = %id, error = %e, "switching back after a failed switch");
            }
            if let Some(task) = self.registry().get_mut(id) {
                task.calls.pop_back();
            }
            return Err(CallError::Switch {
                task: id.to_owned(),
                tool: call.name,
                source: Box::new(source),
            });
        }
        let mut registry = self.registry();
        let Some(span) = registry.get_mut(id).and_then(|t| t.active_call()) else {
            // Ended meanwhile: nothing left to switch back.
            return Err(CallError::NotFound(id.to_owned()));
        };
        span.start_ns = boot_ns();
        Ok(())
    }

    /// Ends the call in flight of task `id`: the server is bound by the task's own scope
    /// again, and the call's record is queued.
    pub(crate) fn end_call(&self, id: &str, finish: CallFinish) -> Result<CallRef, CallError> {
        let (slot, switched, base) = {
            let mut registry = self.registry();
            let task = registry
                .get_mut(id)
                .ok_or_else(|| CallError::NotFound(id.to_owned()))?;
            let base = Arc::clone(&task.scope);
            let slot = task.slot;
            let active = task.active_call().ok_or_else(|| CallError::NoCall {
                task: id.to_owned(),
            })?;
            (slot, !Arc::ptr_eq(&active.scope, &base), base)
        };
        // Switched back before the call is closed: what the server does after its answer
        // is bound by its own scope.
        if switched && let Err(e) = self.switch_scope(slot, &base) {
            tracing::error!(task = %id, error = %e, "switching back to the task's scope failed");
        }
        let span = {
            let mut registry = self.registry();
            let task = registry
                .get_mut(id)
                .ok_or_else(|| CallError::NotFound(id.to_owned()))?;
            let active = task.active_call().ok_or_else(|| CallError::NoCall {
                task: id.to_owned(),
            })?;
            active.end_ns = Some(boot_ns());
            active.clone()
        };
        let end = CallEnd {
            outcome: finish.outcome,
            duration_ms: u64::try_from(span.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            events: span.events,
            violations: span.violations,
            error: finish.error,
        };
        let mut call = span.call;
        call.end = Some(end.clone());
        self.push_record(call_record(id, &base, span_call(&call), end));
        Ok(call)
    }

    /// Records a message the proxy refused (malformed, oversized) of task `id`.
    pub(crate) fn protocol_error(&self, id: &str, error: &ProtocolError) -> Result<(), CallError> {
        let scope = self
            .registry()
            .get(id)
            .map(|t| Arc::clone(&t.scope))
            .ok_or_else(|| CallError::NotFound(id.to_owned()))?;
        let mut record = Record::lifecycle(
            agent_ref(id, &scope),
            "protocol-error",
            &error.error,
            Action::Blocked,
        );
        record.layer = Some(Layer::Daemon);
        self.push_record(record);
        Ok(())
    }
}

/// The record of a call that ended (or was refused).
pub(super) fn call_record(
    id: &str,
    scope: &crate::scope::Scope,
    mut call: CallRef,
    end: CallEnd,
) -> Record {
    let refused = end.outcome == "refused";
    let reason = match &end.error {
        Some(e) => format!("tool {} {}: {e}", call.name, end.outcome),
        None => format!("tool {} {}", call.name, end.outcome),
    };
    let mut record = Record::lifecycle(
        agent_ref(id, scope),
        if refused {
            "call-refused"
        } else {
            "call-ended"
        },
        &reason,
        if refused {
            Action::Blocked
        } else {
            Action::None
        },
    );
    call.end = Some(end);
    record.call = Some(Box::new(call));
    if refused {
        record.verdict = Verdict::Violation;
        record.layer = Some(Layer::Daemon);
        record.violation = Some(Violation {
            dimension: Dimension::Exec,
            rule: "spec.tools".into(),
            reason,
        });
    }
    record
}

fn span_call(call: &CallRef) -> CallRef {
    CallRef {
        end: None,
        ..call.clone()
    }
}

fn agent_ref(id: &str, scope: &crate::scope::Scope) -> AgentRef {
    AgentRef::of(scope, id)
}
