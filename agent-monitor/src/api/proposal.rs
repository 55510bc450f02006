//! `GET|POST /v1/tasks/{id}/proposal`: the scope proposed from what a task did, read from
//! the audit log (its rotated files too), with the same code as `scope propose --from-log`.
//!
//! For an ended task the answer waits (up to [`END_WAIT`]) for the task's last record, so
//! that it covers everything the task did; for a running task it says `running: true`
//! and covers what was written so far.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    Json,
    body::Bytes,
    extract::{Path as UrlPath, State, rejection::PathRejection},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};

use super::{Api, error::ApiError};
use crate::lifecycle::{
    log::Log,
    propose::{self, Options, Proposal, Withheld},
};

/// How long an ended task's last record is waited for.
const END_WAIT: Duration = Duration::from_secs(5);
/// Rotated audit logs looked for (`audit.jsonl.1` ..).
const MAX_ROTATED: u32 = 1000;

/// What may be asked (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposalRequest {
    /// The proposed scope's name (default: the task's scope's).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Its owner (default: the task's).
    #[serde(default)]
    pub(crate) owner: Option<String>,
    /// Globs never proposed, besides the task's own `files.deny`.
    #[serde(default)]
    pub(crate) deny: Vec<String>,
}

/// The answer (the CLI prints `yaml` and the warnings).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProposalAnswer {
    pub(crate) yaml: String,
    pub(crate) task: String,
    /// The task still runs: the proposal covers what it did so far.
    pub(crate) running: bool,
    /// Records of the task read, and those that justified an entry.
    pub(crate) records: u64,
    pub(crate) used: u64,
    /// Records are missing (gaps, cut lines): the proposal does not cover everything.
    pub(crate) partial: bool,
    pub(crate) withheld: Vec<WithheldView>,
    /// `file:line: warning: ...` about the logs read.
    pub(crate) warnings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WithheldView {
    pub(crate) path: String,
    pub(crate) access: String,
    pub(crate) records: u64,
}

impl ProposalAnswer {
    /// The answer for `proposal`, built from a log that is `partial` or not.
    pub(crate) fn new(
        proposal: Proposal,
        task: String,
        partial: bool,
        warnings: Vec<String>,
    ) -> Self {
        Self {
            yaml: proposal.yaml,
            task,
            running: false,
            records: proposal.records,
            used: proposal.used,
            partial,
            withheld: proposal.withheld.into_iter().map(Into::into).collect(),
            warnings,
        }
    }
}

impl From<Withheld> for WithheldView {
    fn from(w: Withheld) -> Self {
        Self {
            path: w.path,
            access: w.access,
            records: w.records,
        }
    }
}

/// The audit log's files, oldest first: `<log>.N` .. `<log>.1`, then `<log>`.
pub(crate) fn audit_files(log: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=MAX_ROTATED)
        .map(|n| crate::observe::sink::rotated_path(log, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if log.exists() {
        files.push(log.to_owned());
    }
    files
}

pub(super) async fn proposal(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<ProposalAnswer>, ApiError> {
    let UrlPath(id) = id?;
    let req: ProposalRequest = if body.is_empty() {
        ProposalRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("bad_json", e.to_string()))?
    };
    let shared = Arc::clone(&api.shared);
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            format!("no running or recently ended task named {id:?}"),
        )
    };
    let view = shared.registry().lookup(&id).ok_or_else(unknown)?;
    let running = view.end_reason.is_none();
    // The task's own deny list is never proposed either (its scope, while it runs or is
    // loaded; denied records say so in any case).
    let mut deny = req.deny;
    let scope = shared
        .registry()
        .get(&id)
        .map(|t| Arc::clone(&t.scope))
        .or_else(|| shared.catalog().get(&view.scope));
    if let Some(scope) = scope {
        deny.extend(scope.policy.declared().files.deny.iter().cloned());
    }
    deny.sort();
    deny.dedup();
    let options = Options {
        name: req.name.unwrap_or_else(|| view.scope.clone()),
        owner: req.owner.unwrap_or_else(|| view.owner.clone()),
        deny,
        what: format!("task {id}"),
    };
    let audit_log = shared.config.audit_log.clone();
    let deadline = tokio::time::Instant::now() + END_WAIT;
    loop {
        let (audit_log, options, id2) = (audit_log.clone(), options.clone(), id.clone());
        let read = tokio::task::spawn_blocking(move || read(&audit_log, &id2, &options))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
        let (answer, ended) = read?;
        if running || ended || tokio::time::Instant::now() >= deadline {
            let mut answer = answer;
            answer.running = running;
            if !running && !ended {
                answer.warnings.push(format!(
                    "the task's last record is not in the audit log yet after {END_WAIT:?}: \
                     what it did last may be missing"
                ));
            }
            return Ok(Json(answer));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The proposal from the log as it is now, and whether it holds the task's last record.
fn read(audit_log: &Path, id: &str, options: &Options) -> Result<(ProposalAnswer, bool), ApiError> {
    let files = audit_files(audit_log);
    let log = Log::read(&files).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_log",
            e.to_string(),
        )
    })?;
    let ended = log.select(None, Some(id)).any(|e| {
        e.record.kind == "task"
            && e.record
                .task
                .as_ref()
                .is_some_and(|t| matches!(t.event.as_str(), "ended" | "revoked"))
    });
    let partial = log.partial();
    let proposal = propose::propose(log.select(None, Some(id)), options, partial).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_proposal",
            e.to_string(),
        )
    })?;
    let warnings = log.warnings.iter().map(ToString::to_string).collect();
    Ok((
        ProposalAnswer::new(proposal, id.to_owned(), partial, warnings),
        ended,
    ))
}
