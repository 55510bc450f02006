//! The endpoints (docs/API.md) and the layers every request goes through: the peer
//! check, the body limit and the request timeout.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path as UrlPath, Request, State, rejection::PathRejection},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;

use super::{Api, MAX_BODY_BYTES, REQUEST_TIMEOUT, auth, error::ApiError, events, status};
use crate::{
    control::catalog::ScopeProblem,
    control::state::{TaskCreated, TaskRequest},
    control::tasks::TaskView,
    observe::usage::Report,
};

pub(crate) fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/agents", get(agents))
        .route("/v1/events", get(events::events))
        .route("/v1/tasks", post(create_task))
        .route("/v1/tasks/{id}", get(task_info).delete(delete_task))
        .route(
            "/v1/tasks/{id}/proposal",
            get(super::proposal::proposal).post(super::proposal::proposal),
        )
        .route(
            "/v1/tasks/{id}/call",
            axum::routing::put(super::calls::begin).delete(super::calls::end),
        )
        .route(
            "/v1/tasks/{id}/call-errors",
            post(super::calls::protocol_error),
        )
        .route("/v1/tasks/{id}/calls", post(super::calls::create))
        .route("/v1/holds", get(super::holds::list))
        .route(
            "/v1/holds/{id}/approve",
            post(super::holds::decide::<{ super::holds::APPROVE }>),
        )
        .route(
            "/v1/holds/{id}/deny",
            post(super::holds::decide::<{ super::holds::DENY }>),
        )
        .route("/v1/reload", post(reload))
        .route("/v1/report/{task}", get(report))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(timeout))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&api),
            auth::authorize,
        ))
        .with_state(api)
}

/// The time by which a request must be answered: work it would start later is not started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) tokio::time::Instant);

/// Bounds the time to read the body and answer (a streamed answer's body is not bounded).
async fn timeout(mut request: Request, next: Next) -> Response {
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    request.extensions_mut().insert(Deadline(deadline));
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request was not complete within {}s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

async fn status(State(api): State<Arc<Api>>) -> Json<status::StatusView> {
    Json(status::view(&api.shared))
}

async fn agents(State(api): State<Arc<Api>>) -> Json<Vec<TaskView>> {
    let shared = &api.shared;
    // The views under the registry lock, the cgroups' process lists (cgroupfs reads) after.
    let mut views: Vec<TaskView> = shared
        .registry()
        .iter()
        .map(|t| t.view(Vec::new()))
        .collect();
    for v in &mut views {
        v.pids = shared.cgroup2.pids(&v.cgroup).unwrap_or_default();
    }
    Json(views)
}

async fn create_task(
    State(api): State<Arc<Api>>,
    request: Request,
) -> Result<(StatusCode, Json<TaskCreated>), ApiError> {
    let peer = request.extensions().get::<auth::Peer>().cloned();
    let requester = peer.as_ref().and_then(|p| p.pid);
    let deadline = request
        .extensions()
        .get::<Deadline>()
        .map_or_else(|| tokio::time::Instant::now() + REQUEST_TIMEOUT, |d| d.0);
    let body = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("reading the body: {e} (at most {MAX_BODY_BYTES} bytes)"),
            )
        })?;
    let req: TaskRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_json", e.to_string()))?;
    // An inline scope is parsed off the runtime, a few at a time, and not after the deadline.
    let inline = match (&req.scope, &req.scope_yaml, &req.learn) {
        (None, Some(yaml), None) => Some(api.shared.parse_inline(yaml.clone(), deadline).await?),
        (None, None, Some(name)) => {
            let owner = req
                .owner
                .clone()
                .or_else(|| peer_user(peer))
                .unwrap_or_else(|| "unknown".to_owned());
            Some(
                crate::scope::learn::learning(name, &owner)
                    .map(Arc::new)
                    .map_err(crate::control::state::TaskError::BadScope)?,
            )
        }
        _ => None,
    };
    let shared = Arc::clone(&api.shared);
    let created = tokio::task::spawn_blocking(move || shared.create_task(req, inline, requester))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The user name of the socket's peer (a learning scope's default owner).
pub(super) fn peer_user(peer: Option<auth::Peer>) -> Option<String> {
    let uid = peer?.uid?;
    // SAFETY: getpwuid_r with buffers we own; the result points into `buf`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0_i8; 4096];
        let mut result = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &raw mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return Some(format!("uid {uid}"));
        }
        Some(
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// A running or recently ended task: how it ended and the violation that stopped it.
async fn task_info(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let UrlPath(id) = id?;
    api.shared.registry().lookup(&id).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            format!("no task named {id:?}"),
        )
    })
}

async fn delete_task(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let UrlPath(id) = id?;
    let shared = Arc::clone(&api.shared);
    tokio::task::spawn_blocking(move || {
        let reason = "revoked: DELETE /v1/tasks";
        shared.notify(
            &id,
            "revoked",
            reason,
            crate::observe::record::Action::KilledAgent,
        );
        shared.end_task(&id, true, reason)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct Reloaded {
    changed: Vec<String>,
    scope_errors: Vec<ScopeProblem>,
}

async fn reload(State(api): State<Arc<Api>>) -> Result<Json<Reloaded>, ApiError> {
    let changed =
        api.shared.reload().await.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    Ok(Json(Reloaded {
        changed,
        scope_errors: api.shared.catalog().problems().to_vec(),
    }))
}

async fn report(
    State(api): State<Arc<Api>>,
    task: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Report>, ApiError> {
    let UrlPath(task) = task?;
    api.shared
        .observed
        .usage
        .report(&*api.shared, &task)
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_task",
                format!("no running task and no kept report named {task:?}"),
            )
        })
}

async fn metrics(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let text = api
        .shared
        .observed
        .metrics
        .render(&super::scrape::snapshot(&api.shared))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
