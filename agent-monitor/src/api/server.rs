//! The socket and its connections: bound with mode 0660, owner root and the socket group;
//! each accepted connection gets the peer's credentials and is served by hyper with limits,
//! so that malformed, oversized or slow clients are answered with an error or dropped while
//! the daemon keeps serving everyone else:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once (more are closed at accept);
//! - request head at most [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] headers (else 431 and close);
//! - the head must arrive within [`HEAD_TIMEOUT`], also on an idle keep-alive connection;
//! - bodies at most [`super::MAX_BODY_BYTES`] (413), a request is answered within
//!   [`super::REQUEST_TIMEOUT`] (408), and at most `feed::MAX_FOLLOWERS` event followers.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::UnixListener,
    sync::{Semaphore, watch},
};
use tower::ServiceExt as _;

use super::{Api, auth::Peer, routes};
use crate::control::state::Shared;

pub(crate) const MAX_CONNECTIONS: usize = 64;
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
pub(crate) const MAX_HEADERS: usize = 32;
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
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
    #[error("setting owner and mode of {path}: {source}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `run` options for the socket.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServeOptions {
    /// `--socket-group` (resolved with [`super::resolve_group`]): its members may use the
    /// socket.
    pub(crate) group: Option<u32>,
}

/// Binds the socket (mode 0660, owner root, the socket group) and serves until `stop` fires.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    path: &Path,
    options: ServeOptions,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let group = options.group;
    let listener = bind(path, group)?;
    let api = Arc::new(Api {
        shared,
        group,
        stop: stop.clone(),
    });
    accept_loop(&listener, &api, stop).await;
    let _ = fs::remove_file(path);
    Ok(())
}

fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent() {
        let existed = dir.is_dir();
        fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        // A directory we create ourselves: root's, reachable by the socket group only.
        if !existed {
            let perm = |source| ServeError::Dir {
                path: dir.to_path_buf(),
                source,
            };
            std::os::unix::fs::chown(dir, Some(0), group).map_err(perm)?;
            let mode = if group.is_some() { 0o750 } else { 0o700 };
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(perm)?;
        }
    }
    // A stale socket from a previous run would make bind fail.
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let perm = |source| ServeError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    std::os::unix::fs::chown(path, Some(0), Some(group.unwrap_or(0))).map_err(perm)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(perm)?;
    Ok(listener)
}

async fn accept_loop(listener: &UnixListener, api: &Arc<Api>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let app = routes::router(Arc::clone(api));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(64 * 1024)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let http = Arc::new(http);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "status socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "status socket connection refused: too many connections"
            );
            continue;
        };
        let peer = Peer::of(&stream);
        let app = app.clone();
        let http = Arc::clone(&http);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                app.clone().oneshot(req)
            });
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "status socket connection ended with an error");
            }
        });
    }
}
