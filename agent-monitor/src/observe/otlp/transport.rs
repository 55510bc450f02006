//! Sending OTLP requests: gRPC (tonic) or HTTP/protobuf (`POST <endpoint>/v1/logs` and
//! `/v1/metrics`, one hyper connection per request). Plaintext only: the collector is on
//! loopback or in the cluster network.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Uri, body::Bytes, header};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse, logs_service_client::LogsServiceClient,
    },
    metrics::v1::{ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient},
};
use prost::Message as _;
use tonic::transport::Channel;

use super::{OtlpError, Protocol};

/// Connecting and one request's answer, each.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(crate) enum Client {
    Grpc {
        endpoint: String,
        // Boxed: the gRPC clients are large, the HTTP variant small.
        logs: Box<LogsServiceClient<Channel>>,
        metrics: Box<MetricsServiceClient<Channel>>,
    },
    Http {
        endpoint: String,
        authority: String,
        /// The endpoint's path without its trailing `/`.
        base: String,
    },
}

impl Client {
    /// A client of `endpoint` (`http://HOST:PORT[/path]`); nothing is connected yet.
    pub(crate) fn new(endpoint: &str, protocol: Protocol) -> Result<Self, OtlpError> {
        let bad = |reason: &str| OtlpError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
        };
        let uri = parse(endpoint)?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.to_string();
        Ok(match protocol {
            Protocol::Grpc => {
                let channel = Channel::from_shared(endpoint.to_owned())
                    .map_err(|e| bad(&e.to_string()))?
                    .connect_timeout(TIMEOUT)
                    .timeout(TIMEOUT)
                    .connect_lazy();
                Self::Grpc {
                    endpoint: endpoint.to_owned(),
                    logs: Box::new(LogsServiceClient::new(channel.clone())),
                    metrics: Box::new(MetricsServiceClient::new(channel)),
                }
            }
            Protocol::Http => Self::Http {
                endpoint: endpoint.to_owned(),
                authority,
                base: uri.path().trim_end_matches('/').to_owned(),
            },
        })
    }

    fn failed(&self, reason: impl std::fmt::Display) -> OtlpError {
        let endpoint = match self {
            Self::Grpc { endpoint, .. } | Self::Http { endpoint, .. } => endpoint.clone(),
        };
        OtlpError::Export {
            endpoint,
            reason: reason.to_string(),
        }
    }

    /// Sends one batch of log records; Ok once the collector answered it, with the
    /// records it said it rejected (a partial success: not sent again) and why.
    pub(crate) async fn logs(
        &mut self,
        req: ExportLogsServiceRequest,
    ) -> Result<Option<(u64, String)>, OtlpError> {
        let answer = match self {
            Self::Grpc { logs, .. } => {
                let answer = logs.export(req).await;
                answer
                    .map(tonic::Response::into_inner)
                    .map_err(|s| self.failed(grpc_reason(&s)))?
            }
            Self::Http {
                authority, base, ..
            } => {
                let path = format!("{base}/v1/logs");
                let body = post(authority, &path, req.encode_to_vec())
                    .await
                    .map_err(|e| self.failed(e))?;
                // An answer that does not decode still acknowledged the batch (2xx).
                ExportLogsServiceResponse::decode(body).unwrap_or_default()
            }
        };
        Ok(answer
            .partial_success
            .filter(|p| p.rejected_log_records > 0)
            .map(|p| {
                (
                    u64::try_from(p.rejected_log_records).unwrap_or(0),
                    p.error_message,
                )
            }))
    }

    pub(crate) async fn metrics(
        &mut self,
        req: ExportMetricsServiceRequest,
    ) -> Result<(), OtlpError> {
        match self {
            Self::Grpc { metrics, .. } => {
                let answer = metrics.export(req).await;
                answer.map(|_| ()).map_err(|s| self.failed(grpc_reason(&s)))
            }
            Self::Http {
                authority, base, ..
            } => {
                let path = format!("{base}/v1/metrics");
                post(authority, &path, req.encode_to_vec())
                    .await
                    .map(|_| ())
                    .map_err(|e| self.failed(e))
            }
        }
    }
}

/// `endpoint` as a plaintext `http://HOST:PORT[/path]` URI.
pub(crate) fn parse(endpoint: &str) -> Result<Uri, OtlpError> {
    let bad = |reason: &str| OtlpError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "TLS is not supported: use http:// to a collector on loopback or in the cluster network",
            ));
        }
        _ => return Err(bad("expected http://HOST:PORT")),
    }
    if uri.authority().is_none() {
        return Err(bad("no host"));
    }
    Ok(uri)
}

fn grpc_reason(s: &tonic::Status) -> String {
    format!("gRPC {:?}: {}", s.code(), s.message())
}

/// `POST path` with a protobuf body; the answer's body on a 2xx answer.
async fn post(authority: &str, path: &str, body: Vec<u8>) -> Result<Bytes, String> {
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // Ends with the connection (dropped with `sender`).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(TIMEOUT, async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // The answer (an ExportLogsServiceResponse, or an error) is small: a collector
        // sending more is cut off.
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        }
    })
    .await;
    answer.map_err(|_| "no answer in time".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plaintext_http_endpoints_are_taken() {
        for bad in [
            "https://collector:4317",
            "collector:4317",
            "http://",
            "not a url",
        ] {
            for protocol in [Protocol::Grpc, Protocol::Http] {
                assert!(
                    matches!(Client::new(bad, protocol), Err(OtlpError::Endpoint { .. })),
                    "{bad} {protocol:?}"
                );
            }
        }
        let Ok(Client::Http {
            authority, base, ..
        }) = Client::new("http://127.0.0.1:4318/otlp/", Protocol::Http)
        else {
            panic!("http endpoint");
        };
        assert_eq!(
            (authority.as_str(), base.as_str()),
            ("127.0.0.1:4318", "/otlp")
        );
    }
}
