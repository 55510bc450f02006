//! Client side of the status socket, for the CLI commands.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    io::ErrorKind,
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, StatusCode,
    body::{Bytes, Incoming},
};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error(
        "cannot reach the agent-monitor daemon at {path}: {source} (is `agent-monitor run` running? set --socket or AGENT_MONITOR_SOCKET)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the daemon answered {status}: {error}: {message}")]
    Api {
        status: StatusCode,
        error: String,
        message: String,
    },
    #[error("unexpected answer from the daemon: {0}")]
    Decode(#[from] serde_json::Error),
    #[error(
        "the agent-monitor daemon at {path} did not take the request: {attempts} attempts in {:.1} s \
         (it is overloaded, or not running or restarting); last: {last}",
        elapsed.as_secs_f64()
    )]
    GaveUp {
        path: PathBuf,
        attempts: u32,
        elapsed: Duration,
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// A refusal that may pass: nobody listens on the socket (yet), its backlog is full
    /// (`EAGAIN`), the connection was reset or closed before an answer, or `503`. Never a
    /// 4xx, nor an answer that was not understood.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Connect { source, .. } => matches!(
                source.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::NotFound
                    | ErrorKind::WouldBlock
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::Interrupted
                    | ErrorKind::TimedOut
            ),
            Self::Http(e) => {
                e.is_closed()
                    || e.is_canceled()
                    || e.is_incomplete_message()
                    || std::error::Error::source(e)
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .is_some_and(|io| {
                            matches!(
                                io.kind(),
                                ErrorKind::ConnectionReset
                                    | ErrorKind::BrokenPipe
                                    | ErrorKind::ConnectionAborted
                            )
                        })
            }
            Self::Api { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
            Self::Request(_) | Self::Decode(_) | Self::GaveUp { .. } => false,
        }
    }

    /// The daemon answered and said it is busy (`503`): it is up, only its queue is full or
    /// slow.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Self::Api { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE)
    }
}

/// Exponential backoff with jitter for transient refusals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// No new attempt starts this long after the first, when the last attempt found nobody
    /// listening or lost its connection (the daemon is down or restarting).
    pub(crate) budget: Duration,
    /// Nor this long after the first, when the daemon answered `503 busy`: it is up and
    /// working through a queue, which a burst of requests can make longer than `budget`.
    pub(crate) busy_budget: Duration,
    /// The first pause; each next one doubles, up to `max_pause`.
    pub(crate) first_pause: Duration,
    pub(crate) max_pause: Duration,
}

impl Retry {
    /// What `exec` does: pauses of 100 ms doubling up to 1 s, each between half and all of
    /// it (jitter, so that many clients refused together do not come back together), for
    /// up to 5 s while nobody answers and up to 60 s while the daemon answers busy (1,000
    /// `exec` started at once took 10 to 15 s to be served, on 2 CPUs: with 5 s, a third to
    /// a half of them gave up).
    pub(crate) const EXEC: Self = Self {
        budget: Duration::from_secs(5),
        busy_budget: Duration::from_mins(1),
        first_pause: Duration::from_millis(100),
        max_pause: Duration::from_secs(1),
    };

    /// The pause after failed attempt `n` (0-based), jittered into [half, all].
    fn pause(&self, n: u32) -> Duration {
        let full = self
            .first_pause
            .saturating_mul(1u32 << n.min(16))
            .min(self.max_pause);
        // A randomly keyed hasher: random enough for jitter, without a crate.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(n);
        let fraction =
            f64::from(u32::try_from(h.finish() >> 32).unwrap_or(u32::MAX)) / f64::from(u32::MAX);
        full.mul_f64(0.5 + fraction / 2.0)
    }
}

/// The daemon's JSON error body.
#[derive(serde::Deserialize)]
struct ErrBody {
    error: String,
    message: String,
}

pub(crate) struct Client {
    socket: PathBuf,
}

impl Client {
    pub(crate) fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request and returns the answer as it starts (the body still streaming); a
    /// non-2xx answer becomes `ClientError::Api`.
    pub(crate) async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Incoming, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "agent-monitor")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.into_body().collect().await?.to_bytes();
            let (error, message) = serde_json::from_slice::<ErrBody>(&bytes).map_or_else(
                |_| ("http".into(), String::from_utf8_lossy(&bytes).into_owned()),
                |e| (e.error, e.message),
            );
            return Err(ClientError::Api {
                status,
                error,
                message,
            });
        }
        Ok(resp.into_body())
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, ClientError> {
        let body = self.open(method, path, body).await?;
        Ok(body.collect().await?.to_bytes())
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(
            &self.send(Method::GET, path, None).await?,
        )?)
    }

    /// As [`Self::send`], trying again after a transient refusal (see
    /// [`ClientError::is_transient`]) until `retry.budget` has passed.
    pub(crate) async fn send_retrying(
        &self,
        method: &Method,
        path: &str,
        body: Option<&serde_json::Value>,
        retry: &Retry,
    ) -> Result<Bytes, ClientError> {
        let start = tokio::time::Instant::now();
        let mut attempts = 0;
        loop {
            let error = match self.send(method.clone(), path, body.cloned()).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            let pause = retry.pause(attempts);
            attempts += 1;
            let elapsed = start.elapsed();
            let budget = if error.is_busy() {
                retry.busy_budget
            } else {
                retry.budget
            };
            if elapsed + pause > budget {
                return Err(ClientError::GaveUp {
                    path: self.socket.clone(),
                    attempts,
                    elapsed,
                    last: Box::new(error),
                });
            }
            tracing::debug!(%error, ?pause, "status socket: transient refusal, trying again");
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    const QUICK: Retry = Retry {
        budget: Duration::from_millis(600),
        busy_budget: Duration::from_millis(600),
        first_pause: Duration::from_millis(20),
        max_pause: Duration::from_millis(100),
    };

    /// Serves `path`, answering request n with `statuses[n]` (the last one from then on);
    /// returns the number of requests seen.
    fn fake_daemon(listener: tokio::net::UnixListener, statuses: Vec<u16>) -> Arc<AtomicUsize> {
        let seen = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                let statuses = statuses.clone();
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let status = statuses.get(n).or(statuses.last()).copied().unwrap_or(200);
                    let body = if status < 300 {
                        r#"{"ok":true}"#
                    } else {
                        r#"{"error":"busy","message":"try later"}"#
                    };
                    let response = hyper::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(body.as_bytes())));
                    async move { response }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        seen
    }

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter() {
        for n in 0..10 {
            let full = (Duration::from_millis(100) * 2u32.pow(n)).min(Duration::from_secs(1));
            let pause = Retry::EXEC.pause(n);
            assert!(
                pause >= full / 2 && pause <= full,
                "{n}: {pause:?} of {full:?}"
            );
        }
    }

    #[tokio::test]
    async fn busy_answers_are_retried_and_a_4xx_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busy.sock");
        let seen = fake_daemon(
            tokio::net::UnixListener::bind(&path).expect("bind"),
            vec![503, 503, 201],
        );
        let client = Client::new(&path);
        let body = client
            .send_retrying(&Method::POST, "/v1/tasks", None, &QUICK)
            .await
            .expect("the third attempt succeeds");
        assert_eq!(&body[..], br#"{"ok":true}"#);
        assert_eq!(seen.load(Ordering::SeqCst), 3);

        let path = dir.path().join("not-found.sock");
        let seen = fake_daemon(
            tokio::net::UnixListener::bind(&path).expect("bind"),
            vec![404],
        );
        let err = Client::new(&path)
            .send_retrying(&Method::POST, "/v1/tasks", None, &QUICK)
            .await
            .expect_err("404");
        assert!(
            matches!(err, ClientError::Api { status, .. } if status == StatusCode::NOT_FOUND),
            "{err}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1, "a 4xx is never retried");
    }

    #[tokio::test]
    async fn busy_answers_get_the_longer_budget_and_nobody_listening_the_shorter() {
        let retry = Retry {
            budget: Duration::from_millis(300),
            busy_budget: Duration::from_millis(1500),
            ..QUICK
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busy.sock");
        // Busy for about a second (more than `budget`), then served.
        let mut statuses = vec![503; 12];
        statuses.push(201);
        let seen = fake_daemon(
            tokio::net::UnixListener::bind(&path).expect("bind"),
            statuses,
        );
        let start = std::time::Instant::now();
        Client::new(&path)
            .send_retrying(&Method::POST, "/v1/tasks", None, &retry)
            .await
            .expect("served once the daemon is less busy");
        assert!(start.elapsed() > retry.budget, "{:?}", start.elapsed());
        assert_eq!(seen.load(Ordering::SeqCst), 13);

        let start = std::time::Instant::now();
        let err = Client::new(&dir.path().join("none.sock"))
            .send_retrying(&Method::GET, "/v1/status", None, &retry)
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, ClientError::GaveUp { .. }), "{err}");
        assert!(
            start.elapsed() <= retry.budget + Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_retried_until_the_budget_then_said_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.sock");
        // Gives up (the test would hang otherwise); how long that takes is not a unit test's
        // business on a shared machine.
        let err = Client::new(&path)
            .send_retrying(&Method::GET, "/v1/status", None, &QUICK)
            .await
            .expect_err("nobody listens");
        let ClientError::GaveUp { attempts, .. } = &err else {
            panic!("not GaveUp: {err}");
        };
        assert!(*attempts > 2, "{err}");
        assert!(
            err.to_string().contains("did not take the request"),
            "{err}"
        );

        // A daemon that starts listening while the client retries is reached.
        let later = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            fake_daemon(
                tokio::net::UnixListener::bind(&later).expect("bind"),
                vec![200],
            );
        });
        Client::new(&path)
            .send_retrying(&Method::GET, "/v1/status", None, &QUICK)
            .await
            .expect("reached once it listens");
    }
}
