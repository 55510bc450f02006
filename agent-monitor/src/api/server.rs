//! Server side of the status socket. Every request is checked against the peer's
//! credentials (`SO_PEERCRED`): only root may use it, and never a process inside an agent.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path as UrlPath, Request, State, connect_info::Connected},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::IncomingStream,
};
use serde::Serialize;
use tokio::{net::UnixListener, sync::watch};

use crate::{
    catalog::ScopeProblem,
    loader::{HookStatus, KernelCounters},
    state::{Shared, TaskError, TaskRequest},
    tasks::TaskView,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("preparing socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binding {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: Option<u32>,
    pub pid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Self {
                uid: Some(c.uid()),
                pid: c.pid().and_then(|p| u32::try_from(p).ok()),
            },
            Err(_) => Self {
                uid: None,
                pid: None,
            },
        }
    }
}

/// JSON error body with a stable code.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        let (status, code) = match &e {
            TaskError::UnknownScope(_) => (StatusCode::NOT_FOUND, "unknown_scope"),
            TaskError::NotFound(_) => (StatusCode::NOT_FOUND, "unknown_task"),
            TaskError::Exists(_) => (StatusCode::CONFLICT, "task_exists"),
            TaskError::ScopeChoice
            | TaskError::BadScope(_)
            | TaskError::ScopeCount(_)
            | TaskError::BadTaskId(_)
            | TaskError::BadTtl(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            TaskError::Enforce(_) => (StatusCode::UNPROCESSABLE_ENTITY, "scope_not_enforceable"),
            TaskError::Cgroup(_) | TaskError::Tag { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Self::new(status, code, crate::loader::error_chain(&e))
    }
}

/// Binds the socket (mode 0660, owner root) and serves until `stop` fires.
pub async fn serve(
    shared: Arc<Shared>,
    path: &Path,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // A stale socket from a previous run would make bind fail.
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(|source| {
        ServeError::Bind {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let app = router(Arc::clone(&shared));
    let result = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "status socket server failed");
    }
    let _ = fs::remove_file(path);
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/agents", get(agents))
        .route("/v1/tasks", post(create_task))
        .route("/v1/tasks/{id}", get(task_info).delete(delete_task))
        .route("/v1/reload", post(reload))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authorize,
        ))
        .with_state(shared)
}

async fn authorize(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    if peer.uid != Some(0) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the status socket is for root",
        )
        .into_response();
    }
    // An agent running as root must still not steer its own monitor.
    if peer.pid.is_none_or(|pid| shared.is_agent_process(pid)) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "agent_forbidden",
            "agents may not use the status socket",
        )
        .into_response();
    }
    next.run(request).await
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub kernel: String,
    pub cgroup2_root: String,
    pub hooks: Vec<HookStatus>,
    pub coverage: Coverage,
    pub counters: Counters,
    pub scopes: Vec<String>,
    pub scope_errors: Vec<ScopeProblem>,
    pub tasks: usize,
}

#[derive(Debug, Serialize)]
pub struct Coverage {
    pub attached: usize,
    pub failed: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Counters {
    #[serde(flatten)]
    pub kernel: KernelCounters,
    pub records: u64,
    pub violations: u64,
    pub blocked: u64,
    pub killed: u64,
    pub decode_errors: u64,
    pub orphan_events: u64,
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<StatusView> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &shared.stats;
    let catalog = shared.catalog();
    Json(StatusView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: shared.started_at.elapsed().as_secs(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cgroup2_root: shared.cgroup2.root().display().to_string(),
        hooks: shared.hooks.clone(),
        coverage: Coverage {
            attached: shared.hooks.iter().filter(|h| h.attached).count(),
            failed: shared
                .hooks
                .iter()
                .filter(|h| !h.attached)
                .map(|h| h.target.clone())
                .collect(),
        },
        counters: Counters {
            kernel: shared.kernel_counters(),
            records: s.records.load(Relaxed),
            violations: s.violations.load(Relaxed),
            blocked: s.blocked.load(Relaxed),
            killed: s.killed.load(Relaxed),
            decode_errors: s.decode_errors.load(Relaxed),
            orphan_events: s.orphan_events.load(Relaxed),
        },
        scopes: catalog.all().map(|s| s.name.clone()).collect(),
        scope_errors: catalog.problems().to_vec(),
        tasks: shared.registry().len(),
    })
}

async fn agents(State(shared): State<Arc<Shared>>) -> Json<Vec<TaskView>> {
    let registry = shared.registry();
    let views = registry
        .iter()
        .map(|t| t.view(shared.cgroup2.pids(&t.cgroup).unwrap_or_default()))
        .collect();
    Json(views)
}

async fn create_task(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<crate::state::TaskCreated>), ApiError> {
    let req: TaskRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    let created = shared.create_task(req, peer.pid)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A running or recently ended task: how it ended and the violation that stopped it.
async fn task_info(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<TaskView>, ApiError> {
    shared.registry().lookup(&id).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            format!("no task named {id:?}"),
        )
    })
}

async fn delete_task(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let s = Arc::clone(&shared);
    let task = id.clone();
    tokio::task::spawn_blocking(move || {
        s.notify(
            &task,
            "revoked",
            "revoked: DELETE /v1/tasks",
            crate::record::Action::KilledAgent,
        );
        s.end_task(&task, true, "revoked: DELETE /v1/tasks")
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

async fn reload(State(shared): State<Arc<Shared>>) -> Json<Reloaded> {
    let changed = shared.reload();
    Json(Reloaded {
        changed,
        scope_errors: shared.catalog().problems().to_vec(),
    })
}
