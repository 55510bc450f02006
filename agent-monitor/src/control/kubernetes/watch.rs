//! The pod watcher: lists and watches the pods of this node only (field selector
//! `spec.nodeName=<node>`; the `ServiceAccount` may get, list and watch pods, nothing else),
//! and hands pods to the daemon as they appear and change.

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    config::{Config, KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::watch as signal;

use super::{KubeError, KubernetesConfig, PodMeta};
use crate::control::state::Shared;

/// How the daemon reaches the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Url(http::Uri),
    Kubeconfig(PathBuf),
    /// In-cluster first (the `DaemonSet`), then `$KUBECONFIG` / `~/.kube/config`.
    Infer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) node_name: String,
    source: Source,
    /// Whether `AgentScope` objects are scopes too.
    pub(crate) agent_scopes: bool,
}

impl Settings {
    /// The node whose pods are watched.
    pub(crate) fn node(&self) -> &str {
        &self.node_name
    }

    /// Pod awareness is on when the config file has a `kubernetes:` section or `$NODE_NAME`
    /// is set (as the `DaemonSet` does); None when it is off.
    pub(crate) fn resolve(
        file: Option<&KubernetesConfig>,
        env_node: Option<String>,
    ) -> Result<Option<Self>, KubeError> {
        if file.is_none() && env_node.is_none() {
            return Ok(None);
        }
        let file = file.cloned().unwrap_or_default();
        let node_name = file
            .node_name
            .or(env_node)
            .filter(|n| !n.is_empty())
            .ok_or(KubeError::NoNodeName)?;
        let source = match (file.api_server, file.kubeconfig) {
            (Some(url), _) => Source::Url(
                url.parse()
                    .map_err(|source| KubeError::BadUrl { url, source })?,
            ),
            (None, Some(path)) => Source::Kubeconfig(path),
            (None, None) => Source::Infer,
        };
        Ok(Some(Self {
            node_name,
            source,
            agent_scopes: file.agent_scopes.unwrap_or(true),
        }))
    }

    pub(crate) async fn client(&self) -> Result<Client, KubeError> {
        let config = match &self.source {
            Source::Url(url) => Config::new(url.clone()),
            Source::Kubeconfig(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                        path: path.clone(),
                        source,
                    })?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|source| KubeError::Kubeconfig {
                        path: path.clone(),
                        source,
                    })?
            }
            Source::Infer => {
                // In a pod the service account is the answer; elsewhere a kubeconfig.
                match Config::incluster() {
                    Ok(c) => c,
                    Err(_) => Config::infer().await.map_err(KubeError::Infer)?,
                }
            }
        };
        Client::try_from(config).map_err(KubeError::Client)
    }

    pub(crate) fn field_selector(&self) -> String {
        format!("spec.nodeName={}", self.node_name)
    }
}

/// Runs until `stop`: the pod watch, and the `AgentScope` watch when it is on.
pub(crate) async fn run(
    shared: Arc<Shared>,
    client: Client,
    settings: Settings,
    stop: signal::Receiver<bool>,
) {
    let scopes = settings.agent_scopes.then(|| {
        tokio::spawn(super::scopes::run(
            Arc::clone(&shared),
            client.clone(),
            stop.clone(),
        ))
    });
    pods(shared, client, settings, stop).await;
    if let Some(scopes) = scopes {
        let _ = scopes.await;
    }
}

/// Every pod listed, added or changed is matched against the scopes (with the container
/// cgroups already seen); deleted pods are forgotten. Errors (API server away, watch
/// expired) are logged and retried with backoff.
async fn pods(
    shared: Arc<Shared>,
    client: Client,
    settings: Settings,
    mut stop: signal::Receiver<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&settings.field_selector());
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed: HashSet<String> = HashSet::new();
    tracing::info!(node = %settings.node_name, "watching this node's pods");
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = stop.changed() => return,
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch (retrying)"),
            Some(Ok(watcher::Event::Init)) => listed.clear(),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                if let Some(uid) = apply(&shared, &pod) {
                    listed.insert(uid);
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                shared.kubernetes.retain_pods(&listed);
                tracing::info!(pods = listed.len(), "pods of this node listed");
            }
            Some(Ok(watcher::Event::Apply(pod))) => {
                apply(&shared, &pod);
            }
            Some(Ok(watcher::Event::Delete(pod))) => {
                if let Some(uid) = &pod.metadata.uid {
                    shared.kubernetes.pod_deleted(uid);
                }
            }
        }
    }
}

fn apply(shared: &Shared, pod: &Pod) -> Option<String> {
    let meta = PodMeta::from_pod(pod)?;
    let uid = meta.uid.clone();
    for container in shared.kubernetes.pod_applied(meta) {
        shared.adopt_container(&container);
    }
    Some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_a_section_or_node_name() {
        assert_eq!(Settings::resolve(None, None).expect("ok"), None);
    }

    #[test]
    fn node_name_from_the_file_or_the_environment() {
        let s = Settings::resolve(None, Some("n1".into()))
            .expect("ok")
            .expect("on");
        assert_eq!(s.node_name, "n1");
        assert_eq!(s.source, Source::Infer);
        assert_eq!(s.field_selector(), "spec.nodeName=n1");
        let file = KubernetesConfig {
            node_name: Some("n2".into()),
            kubeconfig: Some("/k".into()),
            api_server: None,
            agent_scopes: None,
        };
        let s = Settings::resolve(Some(&file), Some("n1".into()))
            .expect("ok")
            .expect("on");
        assert_eq!(s.node_name, "n2");
        assert!(s.agent_scopes, "on unless turned off");
        assert_eq!(s.source, Source::Kubeconfig("/k".into()));
        let empty = KubernetesConfig::default();
        assert!(matches!(
            Settings::resolve(Some(&empty), None),
            Err(KubeError::NoNodeName)
        ));
    }

    /// rustls with the ring provider is the only TLS stack compiled in: building an HTTPS
    /// client must find it (a second provider would make rustls refuse to pick one).
    #[tokio::test]
    async fn an_https_client_builds() {
        let s = Settings {
            node_name: "n".into(),
            source: Source::Url("https://127.0.0.1:6443".parse().expect("uri")),
            agent_scopes: true,
        };
        assert!(s.client().await.is_ok());
    }

    #[test]
    fn api_server_must_be_a_url() {
        let file = KubernetesConfig {
            node_name: Some("n".into()),
            kubeconfig: None,
            api_server: Some("http://127.0.0.1:8001".into()),
            agent_scopes: Some(false),
        };
        let s = Settings::resolve(Some(&file), None)
            .expect("ok")
            .expect("on");
        assert!(matches!(s.source, Source::Url(_)));
        assert!(!s.agent_scopes);
        let bad = KubernetesConfig {
            api_server: Some("http://bad host".into()),
            ..file
        };
        assert!(matches!(
            Settings::resolve(Some(&bad), None),
            Err(KubeError::BadUrl { .. })
        ));
    }
}
