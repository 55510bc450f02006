//! Client side of the status socket, for the CLI commands.

use std::path::{Path, PathBuf};

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

    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(
            &self.send(Method::POST, path, Some(body)).await?,
        )?)
    }
}
