//! JSON errors with a stable code: `{"error": "<code>", "message": "..."}`.

use axum::{
    Json,
    extract::rejection::{BytesRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::control::state::TaskError;

#[derive(Debug, Serialize)]
pub(crate) struct ApiError {
    #[serde(skip)]
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(error: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<crate::control::state::calls::CallError> for ApiError {
    fn from(e: crate::control::state::calls::CallError) -> Self {
        use crate::control::state::calls::CallError;
        let (status, code) = match &e {
            CallError::NotFound(_) => (StatusCode::NOT_FOUND, "unknown_task"),
            CallError::Busy { .. } => (StatusCode::CONFLICT, "call_in_flight"),
            CallError::NoCall { .. } => (StatusCode::CONFLICT, "no_call"),
            CallError::NotListed { .. } => (StatusCode::FORBIDDEN, "tool_not_listed"),
            CallError::Switch { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, crate::kernel::loader::error_chain(&e))
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        let (status, code) = match &e {
            TaskError::UnknownScope(_) => (StatusCode::NOT_FOUND, "unknown_scope"),
            TaskError::NotFound(_) => (StatusCode::NOT_FOUND, "unknown_task"),
            TaskError::Widens(_) => (StatusCode::FORBIDDEN, "scope_widens"),
            TaskError::NotCallable(_) => (StatusCode::CONFLICT, "not_callable"),
            TaskError::Exists(_) => (StatusCode::CONFLICT, "task_exists"),
            TaskError::ScopeChoice
            | TaskError::BadScope(_)
            | TaskError::ScopeCount(_)
            | TaskError::BadTaskId(_)
            | TaskError::BadCallName(_)
            | TaskError::BadTtl(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            TaskError::Enforce(_) => (StatusCode::UNPROCESSABLE_ENTITY, "scope_not_enforceable"),
            TaskError::ParseBusy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            TaskError::Cgroup(_)
            | TaskError::Tag { .. }
            | TaskError::Dns(_)
            | TaskError::ParseFailed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, crate::kernel::loader::error_chain(&e))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        Self::new(status, code, e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request("bad_query", e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request("bad_path", e.body_text())
    }
}
