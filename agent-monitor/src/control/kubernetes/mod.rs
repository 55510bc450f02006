//! Pod awareness: containers of this node's pods as agents (`spec.select.kubernetes`).
//!
//! [`cgroup`] reads pod UID and container ID from a cgroup path; [`watch`] lists and
//! watches this node's pods on the API server (field selector `spec.nodeName`, nothing
//! else); [`node`] joins the two and keeps what each agent's records carry;
//! [`select`] is the manifest's selector.

pub(crate) mod cgroup;
pub(crate) mod node;
pub(crate) mod watch;

pub(crate) use crate::scope::kubernetes::Candidate;
pub(crate) use node::{Container, Node, PodMeta};
pub(crate) use watch::{KubernetesConfig, Settings};

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    #[error(
        "kubernetes: no node name: set `kubernetes.node-name` in the config file or $NODE_NAME (the DaemonSet sets it from spec.nodeName)"
    )]
    NoNodeName,
    #[error("kubernetes: api-server {url:?} is not a URL: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("kubernetes: reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "kubernetes: no client configuration (in-cluster service account, $KUBECONFIG or ~/.kube/config): {0}"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("kubernetes: building the API client: {0}")]
    Client(#[source] kube::Error),
}
