//! `PUT`/`DELETE /v1/tasks/{id}/call` and `POST /v1/tasks/{id}/call-errors`: the tool calls
//! `agent-monitor mcp` passes to a server; `POST /v1/tasks/{id}/calls`: a call that is a
//! process of its own (`exec --call`). See docs/API.md.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path as UrlPath, State, rejection::JsonRejection, rejection::PathRejection},
    http::StatusCode,
};

use super::{Api, error::ApiError};
use crate::{
    control::state::{
        TaskCreated,
        call_tasks::CallRequest,
        calls::{CallFinish, CallStart, ProtocolError},
    },
    observe::record::CallRef,
};

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::bad_request("bad_json", e.body_text()))
}

/// A call starts: answered once the server is bound by the tool's scope.
pub(super) async fn begin(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<String>, PathRejection>,
    start: Result<Json<CallStart>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let UrlPath(id) = id?;
    let start = body(start)?;
    let shared = Arc::clone(&api.shared);
    tokio::task::spawn_blocking(move || shared.begin_call(&id, start))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(StatusCode::NO_CONTENT)
}

/// The call in flight ended: the server is bound by its own scope again.
pub(super) async fn end(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<String>, PathRejection>,
    finish: Result<Json<CallFinish>, JsonRejection>,
) -> Result<Json<CallRef>, ApiError> {
    let UrlPath(id) = id?;
    let finish = body(finish)?;
    let shared = Arc::clone(&api.shared);
    let call = tokio::task::spawn_blocking(move || shared.end_call(&id, finish))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(Json(call))
}

/// A message the proxy refused, recorded.
pub(super) async fn protocol_error(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<String>, PathRejection>,
    error: Result<Json<ProtocolError>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let UrlPath(id) = id?;
    let error = body(error)?;
    api.shared.protocol_error(&id, &error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tasks/{id}/calls`: a call that is a process of its own (`exec --call`).
pub(super) async fn create(
    State(api): State<Arc<Api>>,
    id: Result<UrlPath<String>, PathRejection>,
    req: Result<Json<CallRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TaskCreated>), ApiError> {
    let UrlPath(id) = id?;
    let req = body(req)?;
    let deadline = tokio::time::Instant::now() + super::REQUEST_TIMEOUT;
    let inline = match (&req.scope, &req.scope_yaml) {
        (None, Some(yaml)) => Some(api.shared.parse_inline(yaml.clone(), deadline).await?),
        _ => None,
    };
    let shared = Arc::clone(&api.shared);
    let created = tokio::task::spawn_blocking(move || shared.create_call(&id, req, inline))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok((StatusCode::CREATED, Json(created)))
}
