//! The socket and its connections: bound with mode 0660, owner root and the socket group;
//! each accepted connection gets the peer's credentials and is served by hyper with limits,
//! so that malformed, oversized or slow clients are answered with an error or dropped while
//! the daemon keeps serving everyone else, and a burst is queued rather than reset:
//!
//! - a listen backlog of [`BACKLOG`]; the accept loop never stops accepting while the slots
//!   are taken: a connection without a slot waits for one, in order, at most [`QUEUE_WAIT`],
//!   then gets `503 busy` (see [`admission`] for how slots, places in the queue and open
//!   connections are shared out between root, each other uid and agents);
//! - at most 64 connections are served at once ([`admission::SLOTS`]);
//! - request head at most [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] headers (else 431 and close);
//! - the whole head, first byte included, must arrive within [`HEAD_TIMEOUT`] of the
//!   connection getting its slot, also on an idle keep-alive connection;
//! - bodies at most [`super::MAX_BODY_BYTES`] (413), a request is answered within
//!   [`super::REQUEST_TIMEOUT`] (408), and at most `feed::MAX_FOLLOWERS` event followers;
//! - refused and cut-off connections are counted and warned about once per
//!   [`WARN_INTERVAL`] at most.

mod admission;

use std::{
    convert::Infallible,
    fs, io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tower::ServiceExt as _;

use self::admission::{Admission, Busy, Holder, OpenGuard, Refusals, Refused, SlotGuard, Warning};
use super::{Api, auth::Peer, error::ApiError, routes};
use crate::control::state::Shared;

/// `listen(2)` backlog of the socket (the kernel caps it at `net.core.somaxconn`).
pub(crate) const BACKLOG: i32 = 1024;
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
pub(crate) const MAX_HEADERS: usize = 32;
/// From getting its slot (or the previous answer) to the end of the request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection waits for a slot before it is answered `503 busy`.
pub(crate) const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// The head of a request answered `503 busy` must arrive within this.
const BUSY_HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one warning about refused connections per this.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// The daemon's descriptor limit is raised (up to the hard limit) to at least this: the
/// open connections allowed (`admission::OPEN`, 2048), and as many again for the rest.
const FD_LIMIT: libc::rlim_t = 4096;

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
    /// `--approver-group`: its members may approve and deny holds (root always may).
    pub(crate) approvers: Option<u32>,
}

/// Binds the socket (mode 0660, owner root, the socket group) and serves until `stop` fires.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    path: &Path,
    options: ServeOptions,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let group = options.group;
    raise_fd_limit(FD_LIMIT);
    let listener = bind(path, group)?;
    let api = Arc::new(Api {
        shared,
        group,
        approvers: options.approvers,
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
    let bind_error = |source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    };
    // socket2 sets close-on-exec. Owner and mode are set before listen(2): nobody connects
    // before the socket's mode keeps strangers out.
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
        .map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket
        .bind(&socket2::SockAddr::unix(path).map_err(bind_error)?)
        .map_err(bind_error)?;
    let perm = |source| ServeError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    std::os::unix::fs::chown(path, Some(0), Some(group.unwrap_or(0))).map_err(perm)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(perm)?;
    socket.listen(BACKLOG).map_err(bind_error)?;
    UnixListener::from_std(socket.into()).map_err(bind_error)
}

/// Raises the soft limit of open descriptors to `want` (at most the hard limit): a
/// systemd service starts with 1024, fewer than the connections the socket may hold.
fn raise_fd_limit(want: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0
        || limit.rlim_cur >= want
    {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
        tracing::info!(
            from = limit.rlim_cur,
            to = raised.rlim_cur,
            "raised the open-descriptor limit for the status socket's connections"
        );
    }
}

/// What every connection's task shares.
struct Connections {
    app: Router,
    /// Served connections.
    http: http1::Builder,
    /// Connections answered `503 busy`.
    busy_http: http1::Builder,
    admission: Arc<Admission>,
    refusals: Refusals,
}

fn http_builder(head_timeout: Duration, keep_alive: bool) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(64 * 1024)
        .max_headers(MAX_HEADERS)
        .keep_alive(keep_alive);
    http
}

async fn accept_loop(listener: &UnixListener, api: &Arc<Api>, mut stop: watch::Receiver<bool>) {
    let connections = Arc::new(Connections {
        app: routes::router(Arc::clone(api)),
        http: http_builder(HEAD_TIMEOUT, true),
        busy_http: http_builder(BUSY_HEAD_TIMEOUT, false),
        admission: Arc::default(),
        refusals: Refusals::new(WARN_INTERVAL),
    });
    let mut tick = tokio::time::interval(WARN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut accept_warned: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning (the backlog holds
                    // the connections meanwhile), and say so once per interval.
                    if accept_warned.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                        tracing::warn!(error = %e, "status socket accept failed");
                        accept_warned = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tick.tick() => {
                warn(connections.refusals.flush(Instant::now()));
                continue;
            }
            _ = stop.changed() => break,
        };
        let peer = Peer::of(&stream);
        let agent = peer.pid.and_then(|pid| api.shared.is_agent_process(pid));
        let holder = Holder::of(peer.uid, agent);
        let Some(open) = connections.admission.open(holder) else {
            connections.refused(Refused::Closed, holder);
            continue;
        };
        tokio::spawn(Arc::clone(&connections).run(stream, peer, holder, open, stop.clone()));
    }
}

impl Connections {
    /// One connection: a slot (at once or after waiting in the queue), then hyper serves
    /// it; without a slot it is answered `503 busy`.
    async fn run(
        self: Arc<Self>,
        stream: UnixStream,
        peer: Peer,
        holder: Holder,
        _open: OpenGuard,
        mut stop: watch::Receiver<bool>,
    ) {
        let slot = tokio::select! {
            slot = self.admission.slot(holder, QUEUE_WAIT) => slot,
            _ = stop.changed() => return,
        };
        match slot {
            Ok(slot) => self.serve(stream, peer, holder, slot, stop).await,
            Err(busy) => {
                self.refused(Refused::Busy(busy), holder);
                self.answer_busy(stream, busy, holder).await;
            }
        }
    }

    async fn serve(
        &self,
        stream: UnixStream,
        peer: Peer,
        holder: Holder,
        slot: SlotGuard,
        mut stop: watch::Receiver<bool>,
    ) {
        let app = self.app.clone();
        // Whether a request head arrived: a connection closed at the head deadline before
        // any is a slow client; one closed after answering was an idle keep-alive.
        let requested = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&requested);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(peer.clone());
            app.clone().oneshot(req)
        });
        let conn = self.http.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        drop(slot);
        if let Err(e) = result {
            if e.is_timeout() && !requested.load(Ordering::Relaxed) {
                self.refused(Refused::Slow, holder);
            }
            tracing::debug!(error = %e, %holder, "status socket connection ended with an error");
        }
    }

    /// `503 busy` with `Retry-After: 1` to the request on the connection, then closes it.
    async fn answer_busy(&self, stream: UnixStream, busy: Busy, holder: Holder) {
        let message = match busy {
            Busy::QueueFull => format!(
                "too many connections of {holder} wait for the status socket; retry in a moment"
            ),
            Busy::Waited => format!(
                "no connection slot became free within {} s; retry in a moment",
                QUEUE_WAIT.as_secs()
            ),
        };
        let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| {
            let response = busy_response(message.clone());
            async move { Ok::<_, Infallible>(response) }
        });
        if let Err(e) = self
            .busy_http
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(error = %e, %holder, "status socket busy answer failed");
        }
    }

    fn refused(&self, refused: Refused, holder: Holder) {
        warn(self.refusals.note(refused, holder, Instant::now()));
    }
}

fn busy_response(message: String) -> Response {
    let mut response =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The rate-limited warning about refused and cut-off connections.
fn warn(warning: Option<Warning>) {
    let Some(Warning { tally, last_holder }) = warning else {
        return;
    };
    tracing::warn!(
        busy_after_waiting = tally.waited,
        busy_queue_full = tally.queue_full,
        closed_at_accept = tally.closed,
        slow_head = tally.slow,
        last = %last_holder.map(|h| h.to_string()).unwrap_or_default(),
        "status socket: refused or cut off connections (counts since the last such line; \
         one line per {} s at most)",
        WARN_INTERVAL.as_secs()
    );
}
