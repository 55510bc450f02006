//! Pod awareness: containers of this node's pods as agents (`spec.select.kubernetes`).
//!
//! [`cgroup`] reads pod UID and container ID from a cgroup path; [`watch`] lists and
//! watches this node's pods on the API server (field selector `spec.nodeName`, nothing
//! else); [`scopes`] loads the scopes of `AgentScope` objects; [`node`] joins the two and keeps what each agent's records carry;
//! the selector is the manifest's (`scope::kubernetes`).

pub(crate) mod cgroup;
#[cfg_attr(
    not(feature = "kubernetes"),
    expect(
        dead_code,
        reason = "pods come only from the API watcher, absent from this build"
    )
)]
pub(crate) mod node;
#[cfg(feature = "kubernetes")]
pub(crate) mod scopes;
#[cfg(feature = "kubernetes")]
pub(crate) mod watch;
/// A build without the `kubernetes` feature: no API client; a configured node is an error.
#[cfg(not(feature = "kubernetes"))]
#[path = "disabled.rs"]
pub(crate) mod watch;

pub(crate) use crate::scope::kubernetes::Candidate;
#[cfg(feature = "kubernetes")]
pub(crate) use node::PodMeta;
pub(crate) use node::{Container, Node};
pub(crate) use watch::Settings;

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    #[cfg(feature = "kubernetes")]
    #[error(
        "kubernetes: no node name: set `kubernetes.node-name` in the config file or $NODE_NAME (the DaemonSet sets it from spec.nodeName)"
    )]
    NoNodeName,
    #[cfg(feature = "kubernetes")]
    #[error("kubernetes: api-server {url:?} is not a URL: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[cfg(feature = "kubernetes")]
    #[error("kubernetes: reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[cfg(feature = "kubernetes")]
    #[error(
        "kubernetes: no client configuration (in-cluster service account, $KUBECONFIG or ~/.kube/config): {0}"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[cfg(feature = "kubernetes")]
    #[error("kubernetes: building the API client: {0}")]
    Client(#[source] kube::Error),
    #[cfg(not(feature = "kubernetes"))]
    #[error(
        "kubernetes: a node is configured (kubernetes: in the config file, or $NODE_NAME), but this agent-monitor was built without the `kubernetes` feature (build with --features kubernetes, as the container image is)"
    )]
    NotBuilt,
}

/// The `kubernetes:` section of the daemon's config file.
#[cfg_attr(
    not(feature = "kubernetes"),
    expect(
        dead_code,
        reason = "without the API client only the section's presence matters"
    )
)]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct KubernetesConfig {
    /// This node's name (default: `$NODE_NAME`).
    pub(crate) node_name: Option<String>,
    /// A kubeconfig file (default: the in-cluster service account, then $KUBECONFIG).
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The API server's URL, without authentication (a local proxy such as
    /// `kubectl proxy`, or a test server). Overrides `kubeconfig`.
    pub(crate) api_server: Option<String>,
    /// Load the scopes of `AgentScope` and `ClusterAgentScope` objects (default: true).
    pub(crate) agent_scopes: Option<bool>,
}
