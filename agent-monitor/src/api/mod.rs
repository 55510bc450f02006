//! The status socket: HTTP/1.1 + JSON on a Unix socket.
//!
//! `server` binds the socket and serves connections with limits, `auth` checks every
//! request's peer, `routes` and `events` are the endpoints, `client` is the CLI's side.

mod auth;
mod calls;
pub(crate) mod client;
mod error;
mod events;
mod holds;
pub(crate) mod proposal;
mod routes;
mod scrape;
mod server;
pub(crate) mod status;

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::control::state::Shared;

pub(crate) use auth::resolve_group;
pub(crate) use server::{ServeOptions, serve};

/// The `GET /metrics` exposition (the OpenTelemetry export sends it too).
pub(crate) fn metrics_text(
    shared: &crate::control::state::Shared,
) -> Result<String, std::fmt::Error> {
    shared.observed.metrics.render(&scrape::snapshot(shared))
}

/// Largest request body (a `scope_yaml` fits many times).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;
/// A request (body included) is answered within this, or gets `408 timeout`.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
pub(crate) struct Api {
    pub(crate) shared: Arc<Shared>,
    /// The socket group's gid (`run --socket-group`).
    pub(crate) group: Option<u32>,
    /// The approver group's gid (`run --approver-group`): its members (and root) may
    /// decide on holds.
    pub(crate) approvers: Option<u32>,
    /// Fires when the daemon stops (ends followers).
    pub(crate) stop: watch::Receiver<bool>,
}
