//! `GET /v1/holds`, `POST /v1/holds/{id}/approve|deny`: requests of `onViolation: ask`.
//! Anyone allowed on the socket may list them; only root or a member of the approver group
//! (`run --approver-group`) may decide, and never a process inside an agent (refused by the
//! peer check, and recorded).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path as UrlPath, Request, State, rejection::PathRejection},
    http::StatusCode,
};
use serde::Deserialize;

use super::{Api, MAX_BODY_BYTES, auth::Peer, error::ApiError};
use crate::control::approval::{ApprovalError, Approver, Decision, RequestView};

/// Longest note kept with a decision.
const MAX_NOTE: usize = 1024;

pub(super) async fn list(State(api): State<Arc<Api>>) -> Json<Vec<RequestView>> {
    Json(api.shared.holds())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    for_task: bool,
    #[serde(default)]
    note: Option<String>,
}

/// `decide::<APPROVE>` answers `approve`, `decide::<DENY>` answers `deny`.
pub(super) const APPROVE: bool = true;
pub(super) const DENY: bool = false;

/// `POST /v1/holds/{id}/approve` and `.../deny`: the same body, checks and decision path.
pub(super) async fn decide<const APPROVES: bool>(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<u64>, PathRejection>,
    request: Request,
) -> Result<Json<RequestView>, ApiError> {
    let UrlPath(id) = id?;
    let (peer, body) = read(request).await?;
    let decision = if APPROVES {
        Decision::Approve {
            for_task: body.for_task,
        }
    } else if body.for_task {
        return Err(ApiError::bad_request(
            "bad_json",
            "for_task is for approvals only",
        ));
    } else {
        Decision::Deny
    };
    settle(&api, id, &peer, decision, body.note).await
}

async fn read(request: Request) -> Result<(Peer, DecisionBody), ApiError> {
    let peer = request
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("bad_json", e.to_string()))?
    };
    if body.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return Err(ApiError::bad_request(
            "bad_json",
            format!("note: at most {MAX_NOTE} bytes"),
        ));
    }
    Ok((peer, body))
}

async fn settle(
    api: &Arc<Api>,
    id: u64,
    peer: &Peer,
    decision: Decision,
    note: Option<String>,
) -> Result<Json<RequestView>, ApiError> {
    let approver = Approver {
        uid: peer.uid,
        name: super::routes::peer_user(Some(peer.clone())),
        note,
    };
    if !may_decide(api, peer) {
        api.shared.refused_decision(
            id,
            &approver,
            "the requester is neither root nor in the approver group",
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_approver",
            "only root or a member of the approver group (run --approver-group) may decide",
        ));
    }
    let shared = Arc::clone(&api.shared);
    tokio::task::spawn_blocking(move || shared.decide(id, decision, &approver))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map(Json)
        .map_err(|e| match e {
            ApprovalError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_hold", e.to_string())
            }
            ApprovalError::Grant { .. } => {
                ApiError::new(StatusCode::CONFLICT, "grant_failed", e.to_string())
            }
        })
}

fn may_decide(api: &Api, peer: &Peer) -> bool {
    peer.uid == Some(0) || api.approvers.is_some_and(|g| peer.in_group(g))
}
