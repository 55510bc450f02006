//! `PUT`/`DELETE /v1/tasks/{id}/call` and `POST /v1/tasks/{id}/call-errors`: the tool calls
//! `agent-monitor mcp` passes to a server (docs/API.md).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path as UrlPath, State, rejection::JsonRejection, rejection::PathRejection},
    http::StatusCode,
};

use super::{Api, error::ApiError};
use crate::{
    control::state::calls::{CallFinish, CallStart, ProtocolError},
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
