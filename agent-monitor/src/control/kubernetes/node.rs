//! What the daemon knows of this node's pods and container cgroups, and which agents are
//! containers. Pod metadata (from the API server) and container cgroups (from the cgroup
//! tree) arrive in either order: a container runs before kubelet reports its ID, and a pod
//! is listed before its containers start. Each arrival returns the containers that became
//! identifiable, for the daemon to match against its scopes.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

#[cfg(feature = "kubernetes")]
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::cgroup;
#[cfg(feature = "kubernetes")]
use super::cgroup::strip_runtime_scheme;
use crate::observe::record::KubernetesRef;

/// One pod as far as agent selection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodMeta {
    pub(crate) uid: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    /// Container ID (hex, no scheme) -> container name; filled as kubelet reports them.
    pub(crate) containers: HashMap<String, String>,
}

#[cfg(feature = "kubernetes")]
impl PodMeta {
    /// None for a pod without the metadata every API object has.
    pub(crate) fn from_pod(pod: &Pod) -> Option<Self> {
        let m = &pod.metadata;
        let mut containers = HashMap::new();
        if let Some(status) = &pod.status {
            let lists: [&Option<Vec<ContainerStatus>>; 3] = [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ];
            for s in lists.into_iter().flatten().flatten() {
                if let Some(id) = &s.container_id {
                    containers.insert(
                        strip_runtime_scheme(id).to_ascii_lowercase(),
                        s.name.clone(),
                    );
                }
            }
        }
        Some(Self {
            uid: m.uid.clone()?,
            namespace: m.namespace.clone()?,
            name: m.name.clone()?,
            labels: m.labels.clone().unwrap_or_default(),
            containers,
        })
    }
}

/// A container cgroup that can be matched against scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    /// Relative to the cgroup2 root.
    pub(crate) cgroup: String,
    pub(crate) cgroup_id: u64,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) reference: KubernetesRef,
}

#[derive(Debug)]
struct Seen {
    path: String,
    pod_uid: String,
    container_id: String,
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, PodMeta>,
    /// Container cgroups on this node by cgroup id.
    cgroups: HashMap<u64, Seen>,
    /// Agent slot -> what its records carry.
    agents: HashMap<u32, KubernetesRef>,
}

/// Shared by the pipeline (cgroup events, records) and the pod watcher.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Set when a pod watcher runs; until then cgroup paths are not even parsed.
    enabled: AtomicBool,
    inner: Mutex<Inner>,
}

impl Node {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A cgroup appeared (or was found at start). Returns it when it is a container cgroup
    /// whose pod and container name are known.
    pub(crate) fn cgroup_seen(&self, path: &str, cgroup_id: u64) -> Option<Container> {
        if !self.enabled() {
            return None;
        }
        let parsed = cgroup::parse(path)?;
        if !parsed.is_container() {
            return None;
        }
        let seen = Seen {
            path: path.to_owned(),
            pod_uid: parsed.pod_uid,
            container_id: parsed.container_id?,
        };
        let mut inner = self.lock();
        let found = inner
            .pods
            .get(&seen.pod_uid)
            .and_then(|pod| container(pod, &seen, cgroup_id));
        inner.cgroups.insert(cgroup_id, seen);
        found
    }

    /// A cgroup went away.
    pub(crate) fn cgroup_removed(&self, cgroup_id: u64) {
        self.lock().cgroups.remove(&cgroup_id);
    }

    /// A pod was listed, added or changed. Returns its containers whose cgroups are known.
    pub(crate) fn pod_applied(&self, pod: PodMeta) -> Vec<Container> {
        let mut inner = self.lock();
        let found = inner
            .cgroups
            .iter()
            .filter(|(_, seen)| seen.pod_uid == pod.uid)
            .filter_map(|(id, seen)| container(&pod, seen, *id))
            .collect();
        inner.pods.insert(pod.uid.clone(), pod);
        found
    }

    pub(crate) fn pod_deleted(&self, uid: &str) {
        self.lock().pods.remove(uid);
    }

    /// After a (re-)list: pods not in it are gone.
    pub(crate) fn retain_pods(&self, listed: &std::collections::HashSet<String>) {
        self.lock().pods.retain(|uid, _| listed.contains(uid));
    }

    /// Every known container, for a re-match after the scopes changed.
    pub(crate) fn containers(&self) -> Vec<Container> {
        let inner = self.lock();
        inner
            .cgroups
            .iter()
            .filter_map(|(id, seen)| container(inner.pods.get(&seen.pod_uid)?, seen, *id))
            .collect()
    }

    pub(crate) fn adopted(&self, slot: u32, reference: KubernetesRef) {
        self.lock().agents.insert(slot, reference);
    }

    pub(crate) fn forget_agent(&self, slot: u32) {
        self.lock().agents.remove(&slot);
    }

    /// What the records of an agent carry; None for agents that are not containers.
    pub(crate) fn agent(&self, slot: u32) -> Option<KubernetesRef> {
        if !self.enabled() {
            return None;
        }
        self.lock().agents.get(&slot).cloned()
    }
}

fn container(pod: &PodMeta, seen: &Seen, cgroup_id: u64) -> Option<Container> {
    let name = pod.containers.get(&seen.container_id)?;
    Some(Container {
        cgroup: seen.path.clone(),
        cgroup_id,
        labels: pod.labels.clone(),
        reference: KubernetesRef {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: name.clone(),
            pod_uid: pod.uid.clone(),
            container_id: seen.container_id.clone(),
        },
    })
}

#[cfg(all(test, feature = "kubernetes"))]
mod tests {
    use super::*;

    const UID: &str = "3f1c2b7a-5d4e-4c11-9a2b-7e0d1c2b3a4f";

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn pod(with_status: bool) -> Pod {
        let status = if with_status {
            serde_json::json!({"containerStatuses": [
                {"name": "agent", "containerID": format!("containerd://{}", id(1)), "image": "i",
                 "imageID": "", "ready": true, "restartCount": 0},
                {"name": "sidecar", "containerID": format!("containerd://{}", id(2)), "image": "i",
                 "imageID": "", "ready": true, "restartCount": 0}]})
        } else {
            serde_json::json!({"phase": "Pending"})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "coder-0", "namespace": "agents", "uid": UID,
                         "labels": {"app": "coder"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "agent"}, {"name": "sidecar"}]},
            "status": status,
        }))
        .expect("pod")
    }

    fn path(n: u8) -> String {
        format!("/kubepods/burstable/pod{UID}/{}", id(n))
    }

    #[test]
    fn pod_first_then_cgroup() {
        let node = Node::default();
        node.enable();
        assert!(
            node.pod_applied(PodMeta::from_pod(&pod(true)).expect("meta"))
                .is_empty()
        );
        let c = node.cgroup_seen(&path(1), 11).expect("identified");
        assert_eq!(c.reference.container, "agent");
        assert_eq!(c.reference.pod, "coder-0");
        assert_eq!(c.reference.namespace, "agents");
        assert_eq!(c.cgroup_id, 11);
        assert_eq!(c.labels.get("app").map(String::as_str), Some("coder"));
        // The pod's own cgroup and the sandbox (not in the statuses) are not containers.
        assert!(
            node.cgroup_seen(&format!("/kubepods/burstable/pod{UID}"), 10)
                .is_none()
        );
        assert!(node.cgroup_seen(&path(9), 19).is_none());
    }

    #[test]
    fn cgroup_first_then_the_status_names_it() {
        let node = Node::default();
        node.enable();
        assert!(node.cgroup_seen(&path(1), 11).is_none());
        assert!(node.cgroup_seen(&path(2), 12).is_none());
        assert!(
            node.pod_applied(PodMeta::from_pod(&pod(false)).expect("meta"))
                .is_empty()
        );
        let mut found = node.pod_applied(PodMeta::from_pod(&pod(true)).expect("meta"));
        found.sort_by_key(|c| c.cgroup_id);
        let names: Vec<&str> = found
            .iter()
            .map(|c| c.reference.container.as_str())
            .collect();
        assert_eq!(names, ["agent", "sidecar"]);
        node.cgroup_removed(11);
        assert_eq!(node.containers().len(), 1);
        node.pod_deleted(UID);
        assert!(node.containers().is_empty());
    }

    #[test]
    fn disabled_ignores_cgroups_and_agents() {
        let node = Node::default();
        node.pod_applied(PodMeta::from_pod(&pod(true)).expect("meta"));
        assert!(node.cgroup_seen(&path(1), 11).is_none());
        node.adopted(
            1,
            KubernetesRef {
                namespace: "a".into(),
                pod: "p".into(),
                container: "c".into(),
                pod_uid: UID.into(),
                container_id: id(1),
            },
        );
        assert!(node.agent(1).is_none());
        node.enable();
        assert_eq!(node.agent(1).map(|r| r.pod), Some("p".to_owned()));
        node.forget_agent(1);
        assert!(node.agent(1).is_none());
    }
}
