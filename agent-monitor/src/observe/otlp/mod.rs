//! OpenTelemetry export (`run --otlp-endpoint`): every audit-log line as an OTLP log
//! record, the daemon's metrics as OTLP metrics.
//!
//! The audit log is the source of truth: the exporter tails it (`tail`) from a cursor
//! saved after the collector acknowledged each batch, so records are delivered at least
//! once: nothing is lost while the collector is down (the backlog is sent from the log when
//! it is back, retried with capped exponential backoff), and a record is sent twice only
//! when an acknowledgement is lost or the daemon stops between an acknowledgement and the
//! cursor's save. At most one batch ([`BATCH_RECORDS`] lines or [`BATCH_BYTES`]) is held in
//! memory. Metrics are sent every [`METRICS_INTERVAL`]; a failed metrics export is not
//! retried (the next one carries the cumulative values).

mod logs;
mod prom;
pub(crate) mod tail;
mod transport;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime},
};

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::InstrumentationScope,
    logs::v1::{ResourceLogs, ScopeLogs},
    metrics::v1::{ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
};
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

use crate::control::state::Shared;

use self::{
    logs::attribute,
    tail::{Batch, Cursor, Tail},
    transport::Client,
};

/// Lines per batch.
pub(crate) const BATCH_RECORDS: usize = 512;
/// Bytes of audit-log lines per batch (a single longer line is sent alone).
pub(crate) const BATCH_BYTES: usize = 1 << 20;
pub(crate) const METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// How often the log is looked at for new lines when the exporter has caught up.
const POLL: Duration = Duration::from_millis(200);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum OtlpError {
    #[error("OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("OTLP export to {endpoint}: {reason}")]
    Export { endpoint: String, reason: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    /// OTLP/gRPC (the collector's port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`<endpoint>/v1/logs`, `/v1/metrics`; port 4318).
    Http,
}

pub(crate) struct Settings {
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
    pub(crate) audit_log: PathBuf,
    /// Rotated audit-log files kept (where rotation may have moved the cursor's file).
    pub(crate) keep: u32,
    /// The Kubernetes node this daemon runs on, when it knows it.
    pub(crate) node_name: Option<String>,
}

/// The exporter's own health (status and metrics).
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Set when the export starts.
    endpoint: OnceLock<String>,
    records_sent: AtomicU64,
    records_rejected: AtomicU64,
    batches_failed: AtomicU64,
    backlog_bytes: AtomicU64,
    metrics_sent: AtomicU64,
    metrics_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HealthView {
    pub(crate) endpoint: String,
    pub(crate) records_sent: u64,
    /// Records the collector answered it rejected (a partial success; not sent again).
    #[serde(default)]
    pub(crate) records_rejected: u64,
    pub(crate) batches_failed: u64,
    /// Audit-log bytes not yet acknowledged by the collector.
    pub(crate) backlog_bytes: u64,
    pub(crate) metrics_sent: u64,
    pub(crate) metrics_failed: u64,
    pub(crate) last_error: Option<String>,
}

impl Health {
    fn error(&self, e: &OtlpError) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }

    /// None when the export is off.
    pub(crate) fn view(&self) -> Option<HealthView> {
        self.endpoint.get().map(|endpoint| HealthView {
            endpoint: endpoint.clone(),
            records_sent: self.records_sent.load(Relaxed),
            records_rejected: self.records_rejected.load(Relaxed),
            batches_failed: self.batches_failed.load(Relaxed),
            backlog_bytes: self.backlog_bytes.load(Relaxed),
            metrics_sent: self.metrics_sent.load(Relaxed),
            metrics_failed: self.metrics_failed.load(Relaxed),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
        })
    }

    /// The counters for the metrics endpoint, when the export is on: (name, help, value,
    /// is a counter).
    pub(crate) fn metrics(&self) -> Option<[(&'static str, &'static str, u64, bool); 6]> {
        self.endpoint.get().map(|_| {
            [
                (
                    "otlp_records_sent",
                    "Audit-log records the OTLP collector acknowledged",
                    self.records_sent.load(Relaxed),
                    true,
                ),
                (
                    "otlp_records_rejected",
                    "Records the OTLP collector answered it rejected (partial success)",
                    self.records_rejected.load(Relaxed),
                    true,
                ),
                (
                    "otlp_batches_failed",
                    "OTLP log batches that failed (each is retried)",
                    self.batches_failed.load(Relaxed),
                    true,
                ),
                (
                    "otlp_backlog_bytes",
                    "Audit-log bytes not yet acknowledged by the OTLP collector",
                    self.backlog_bytes.load(Relaxed),
                    false,
                ),
                (
                    "otlp_metrics_sent",
                    "Metrics exports the OTLP collector acknowledged",
                    self.metrics_sent.load(Relaxed),
                    true,
                ),
                (
                    "otlp_metrics_failed",
                    "Metrics exports that failed (not retried)",
                    self.metrics_failed.load(Relaxed),
                    true,
                ),
            ]
        })
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn resource(node_name: Option<&str>) -> Resource {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut attributes = vec![
        attribute("service.name", "agent-monitor"),
        attribute("service.version", env!("CARGO_PKG_VERSION")),
        attribute("host.name", host.trim()),
    ];
    if let Some(node) = node_name {
        attributes.push(attribute("k8s.node.name", node));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "agent-monitor".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// Checks the endpoint before anything is loaded (a bad one is a startup error).
pub(crate) fn check(endpoint: &str) -> Result<(), OtlpError> {
    transport::parse(endpoint).map(drop)
}

/// Starts the log and metrics exporters; they end when `stop` turns true. Fails on an
/// unusable endpoint.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    settings: Settings,
    stop: &watch::Receiver<bool>,
) -> Result<[JoinHandle<()>; 2], OtlpError> {
    let client = Client::new(&settings.endpoint, settings.protocol)?;
    let _ = shared
        .observed
        .export
        .endpoint
        .set(settings.endpoint.clone());
    let resource = resource(settings.node_name.as_deref());
    tracing::info!(endpoint = %settings.endpoint, protocol = ?settings.protocol, "OTLP export on");
    let logs = tokio::spawn(export_logs(
        Arc::clone(shared),
        client.clone(),
        resource.clone(),
        settings,
        stop.clone(),
    ));
    let metrics = tokio::spawn(export_metrics(
        Arc::clone(shared),
        client,
        resource,
        stop.clone(),
    ));
    Ok([logs, metrics])
}

/// Waits `d`; false when `stop` turned true first.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// The next batch from the log (blocking reads off the runtime's workers), and the bytes
/// after it. Err when the reading thread panicked (nothing of the tail survives).
async fn read_batch(
    tail: Tail,
) -> Result<(Tail, std::io::Result<Batch>, u64), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let mut tail = tail;
        let mut batch = Batch::default();
        let read = tail
            .fill(&mut batch, BATCH_RECORDS, BATCH_BYTES)
            .map(|()| batch);
        let backlog = tail.backlog();
        (tail, read, backlog)
    })
    .await
}

/// A batch converted and ready to send, with the cursor to save once it is acknowledged.
struct Pending {
    request: ExportLogsServiceRequest,
    records: u64,
    bytes: u64,
    end: Cursor,
}

fn pending(batch: &Batch, resource: &Resource) -> Option<Pending> {
    let end = batch.end?;
    let observed = now_nanos();
    let records: Vec<_> = batch
        .lines
        .iter()
        .map(|l| logs::record(l, observed))
        .collect();
    Some(Pending {
        records: records.len() as u64,
        bytes: batch.bytes as u64,
        end,
        request: ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        },
    })
}

async fn export_logs(
    shared: Arc<Shared>,
    mut client: Client,
    resource: Resource,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let health = &shared.observed.export;
    let cursor_file = tail::cursor_path(&settings.audit_log);
    let resume = || {
        Tail::new(
            &settings.audit_log,
            settings.keep,
            tail::load_cursor(&cursor_file),
        )
    };
    let mut tail = resume();
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    while !*stop.borrow() {
        let (t, read, backlog) = match read_batch(tail).await {
            Ok(done) => done,
            Err(e) => {
                // Start over from the saved cursor (at-least-once).
                tracing::error!(error = %e, "OTLP export: reading the audit log");
                (resume(), Ok(Batch::default()), 0)
            }
        };
        tail = t;
        let batch = match read {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %settings.audit_log.display(), error = %e, "OTLP export: reading the audit log");
                if !pause(&mut stop, BACKOFF_MAX).await {
                    break;
                }
                continue;
            }
        };
        let Some(p) = pending(&batch, &resource) else {
            health.backlog_bytes.store(backlog, Relaxed);
            if !pause(&mut stop, POLL).await {
                break;
            }
            continue;
        };
        health.backlog_bytes.store(backlog + p.bytes, Relaxed);
        // The same batch until the collector takes it.
        loop {
            // A stop does not wait for a slow collector: the batch is sent again by the
            // next run (its cursor was not saved).
            let sent = tokio::select! {
                sent = client.logs(p.request.clone()) => sent,
                _ = stop.wait_for(|s| *s) => return,
            };
            match sent {
                Ok(rejected) => {
                    if let Some((n, why)) = rejected {
                        health.records_rejected.fetch_add(n, Relaxed);
                        if let Ok(mut last) = health.last_error.lock() {
                            *last = Some(format!("the collector rejected {n} records: {why}"));
                        }
                        tracing::warn!(rejected = n, reason = %why, "OTLP export: the collector rejected records of a batch");
                    }
                    if let Err(e) = tail::save_cursor(&cursor_file, &p.end) {
                        tracing::warn!(path = %cursor_file.display(), error = %e, "OTLP export: saving the cursor (records may be sent again after a restart)");
                    }
                    health.records_sent.fetch_add(p.records, Relaxed);
                    health.backlog_bytes.store(backlog, Relaxed);
                    if failing {
                        tracing::info!("OTLP export: the collector takes records again");
                    }
                    failing = false;
                    backoff = BACKOFF_MIN;
                    break;
                }
                Err(e) => {
                    health.batches_failed.fetch_add(1, Relaxed);
                    health.error(&e);
                    if !failing {
                        tracing::warn!(error = %e, "OTLP export failed; retrying with backoff, records wait in the audit log");
                    }
                    failing = true;
                    if !pause(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

async fn export_metrics(
    shared: Arc<Shared>,
    mut client: Client,
    resource: Resource,
    mut stop: watch::Receiver<bool>,
) {
    let health = &shared.observed.export;
    let start = now_nanos()
        .saturating_sub(u64::try_from(shared.started_at.elapsed().as_nanos()).unwrap_or(0));
    let mut tick = tokio::time::interval(METRICS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let text = match crate::api::metrics_text(&shared) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "OTLP export: rendering the metrics");
                continue;
            }
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: prom::metrics(&text, start, now_nanos()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let sent = tokio::select! {
            sent = client.metrics(request) => sent,
            _ = stop.wait_for(|s| *s) => return,
        };
        match sent {
            Ok(()) => {
                health.metrics_sent.fetch_add(1, Relaxed);
            }
            Err(e) => {
                health.metrics_failed.fetch_add(1, Relaxed);
                health.error(&e);
                tracing::debug!(error = %e, "OTLP metrics export failed; the next interval sends them");
            }
        }
    }
}
