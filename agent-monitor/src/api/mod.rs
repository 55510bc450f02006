//! The status socket: HTTP/1.1 + JSON on a Unix socket.
//!
//! `server` binds the socket and serves connections with limits, `auth` checks every
//! request's peer, `routes` and `events` are the endpoints, `client` is the CLI's side.

mod auth;
pub mod client;
mod error;
mod events;
mod routes;
mod server;
mod status;

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::state::Shared;

pub use auth::resolve_group;
pub use error::ApiError;
pub use server::{ServeError, ServeOptions, serve};
pub use status::StatusView;

/// Largest request body (a `scope_yaml` fits many times).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// A request (body included) is answered within this, or gets `408 timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
pub struct Api {
    pub shared: Arc<Shared>,
    /// The socket group's gid (`run --socket-group`).
    pub group: Option<u32>,
    /// Fires when the daemon stops (ends followers).
    pub stop: watch::Receiver<bool>,
}
