//! The pod watcher of a build without the `kubernetes` feature: pod awareness off unless a
//! node is configured, which is then an error that names the feature.

use std::sync::Arc;

use tokio::sync::watch as signal;

use super::{KubeError, KubernetesConfig};
use crate::control::state::Shared;

/// Never made: there is no API client in this build.
pub(crate) enum Settings {}

/// Never made.
pub(crate) enum Client {}

impl Settings {
    /// Off (None) when no node is configured; an error when one is.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the signature of the API watcher's resolve"
    )]
    pub(crate) fn resolve(
        file: Option<&KubernetesConfig>,
        env_node: Option<String>,
    ) -> Result<Option<Self>, KubeError> {
        if file.is_none() && env_node.is_none() {
            Ok(None)
        } else {
            Err(KubeError::NotBuilt)
        }
    }

    /// Never called: no value exists.
    pub(crate) fn node(&self) -> &str {
        match *self {}
    }

    #[expect(
        clippy::unused_async,
        reason = "the signature of the API watcher's client"
    )]
    pub(crate) async fn client(&self) -> Result<Client, KubeError> {
        match *self {}
    }
}

#[expect(
    clippy::unused_async,
    reason = "the signature of the API watcher's run"
)]
pub(crate) async fn run(
    _shared: Arc<Shared>,
    _client: Client,
    settings: Settings,
    _stop: signal::Receiver<bool>,
) {
    match settings {}
}
