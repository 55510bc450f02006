//! HTTP/1.1 to the daemon's status socket: hyper's client over a `tokio::net::UnixStream`,
//! driven by a current-thread runtime inside each call so that tests stay synchronous.

use std::{path::Path, time::Duration};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request,
    body::{Bytes, Incoming},
    client::conn::http1,
    header,
};
use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, runtime::Runtime};

/// A current-thread runtime with the I/O and time drivers, for one call or one stream.
fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// Connects to `socket` and sends one request; returns the response with its body unread.
/// The connection is driven by a task on the current runtime.
async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<hyper::Response<Incoming>, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    drop(tokio::spawn(conn));
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "am");
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .map_err(|e| format!("request {method} {path}: {e}"))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("{method} {path}: {e}"))
}

/// One request; the status code and the whole body (hyper undoes the chunked encoding).
/// Fails when the socket does not answer within `limit`.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    limit: Duration,
) -> Result<(u16, String), String> {
    let rt = runtime().map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let answer = async {
            let response = send(socket, method, path, body).await?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{method} {path}: body: {e}"))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(limit, answer)
            .await
            .map_err(|_| format!("{method} {path}: no answer within {limit:?}"))?
    })
}

/// A streaming answer (`GET /v1/events?follow=1`), read frame by frame. Dropping it closes
/// the connection.
pub struct Stream {
    rt: Runtime,
    status: u16,
    body: Incoming,
    /// Bytes received but not yet returned as a line.
    pending: Vec<u8>,
}

impl Stream {
    /// Sends `GET path` and waits (at most `limit`) for the response head.
    pub fn get(socket: &Path, path: &str, limit: Duration) -> Result<Self, String> {
        let rt = runtime().map_err(|e| format!("tokio runtime: {e}"))?;
        let response = rt.block_on(async {
            tokio::time::timeout(limit, send(socket, "GET", path, None))
                .await
                .map_err(|_| format!("GET {path}: no answer within {limit:?}"))?
        })?;
        Ok(Self {
            status: response.status().as_u16(),
            body: response.into_body(),
            pending: Vec::new(),
            rt,
        })
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The next complete line of the body (without its newline), reading data frames as
    /// they come; None when the body ended or nothing completed a line within `limit`.
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            // The timer is made inside the runtime (it needs its time driver).
            let body = &mut self.body;
            let frame = self
                .rt
                .block_on(async { tokio::time::timeout_at(deadline, body.frame()).await })
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.pending.extend_from_slice(&data);
            }
        }
    }
}
