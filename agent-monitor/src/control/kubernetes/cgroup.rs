//! Pod UID and container ID from a cgroup v2 path, as kubelet and the container runtimes lay
//! the tree out.
//!
//! | driver | runtime | pod cgroup | container cgroup |
//! |---|---|---|---|
//! | cgroupfs | containerd, docker | `pod<uid>` | `<64 hex>` |
//! | cgroupfs | CRI-O | `pod<uid>` | `crio-<64 hex>` |
//! | systemd | containerd | `kubepods-<qos>-pod<uid_>.slice` | `cri-containerd-<64 hex>.scope` |
//! | systemd | CRI-O | `kubepods-<qos>-pod<uid_>.slice` | `crio-<64 hex>.scope` |
//! | systemd | docker (cri-dockerd) | `kubepods-<qos>-pod<uid_>.slice` | `docker-<64 hex>.scope` |
//!
//! With the systemd driver the UID's dashes become underscores (a dash nests slices). The
//! pod segment may sit below a prefix (kubelet's `--cgroup-root`, a kind node's own scope),
//! so it is searched for anywhere in the path, and the container is the segment right after
//! it. CRI-O's `crio-conmon-<id>.scope` holds the monitor, not the container.

/// What a cgroup path says about Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupRef {
    /// The pod UID with dashes (`metadata.uid`).
    pub(crate) pod_uid: String,
    /// The container ID (64 hex digits, as in `status.containerStatuses[].containerID`
    /// after the `runtime://` scheme); None for the pod's own cgroup.
    pub(crate) container_id: Option<String>,
    /// Path segments below the container cgroup (a runtime's nested cgroup, e.g. CRI-O's
    /// `container`); 0 for the container cgroup itself.
    pub(crate) depth_below_container: usize,
}

impl CgroupRef {
    /// The container's own cgroup (not the pod's, not one nested below the container's).
    pub(crate) fn is_container(&self) -> bool {
        self.container_id.is_some() && self.depth_below_container == 0
    }
}

/// Parses a cgroup path (relative to the cgroup2 root, e.g. from `/proc/PID/cgroup`).
/// None when the path is not inside a pod.
pub(crate) fn parse(path: &str) -> Option<CgroupRef> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The last pod segment wins: a pod cannot nest in a pod, but a prefix could look like one.
    let (at, pod_uid) = segments
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| pod_segment(s).map(|uid| (i, uid)))?;
    let rest = &segments[at + 1..];
    let container_id = rest.first().and_then(|s| container_segment(s));
    let depth_below_container = match container_id {
        Some(_) => rest.len() - 1,
        None if rest.is_empty() => 0,
        // Something else below the pod (a sandbox helper, conmon): not a container.
        None => return None,
    };
    Some(CgroupRef {
        pod_uid,
        container_id,
        depth_below_container,
    })
}

/// `pod<uid>` (cgroupfs) or `...-pod<uid_with_underscores>.slice` (systemd).
fn pod_segment(segment: &str) -> Option<String> {
    let raw = if let Some(slice) = segment.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid
    } else {
        segment.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    valid_uid(&uid).then_some(uid)
}

/// A UUID (`8-4-4-4-12` hex) or, for static pods, the 32-hex-digit hash kubelet uses.
fn valid_uid(uid: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if uid.len() == 32 {
        return hex(uid);
    }
    let groups: Vec<&str> = uid.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && hex(g))
}

fn container_segment(segment: &str) -> Option<String> {
    let id = if let Some(scope) = segment.strip_suffix(".scope") {
        ["cri-containerd-", "crio-", "docker-", "cri-dockerd-"]
            .iter()
            .find_map(|p| scope.strip_prefix(p))?
    } else if let Some(id) = segment.strip_prefix("crio-") {
        id
    } else {
        segment
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` -> `<id>`.
#[cfg(any(test, feature = "kubernetes"))]
pub(crate) fn strip_runtime_scheme(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f1c2b7a-5d4e-4c11-9a2b-7e0d1c2b3a4f";
    const UID_: &str = "3f1c2b7a_5d4e_4c11_9a2b_7e0d1c2b3a4f";
    const ID: &str = "9b8d4c5e2f1a0b3c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c";

    fn container(path: &str) -> CgroupRef {
        parse(path).unwrap_or_else(|| panic!("{path} parses"))
    }

    fn assert_container(path: &str) {
        let r = container(path);
        assert_eq!(r.pod_uid, UID, "{path}");
        assert_eq!(r.container_id.as_deref(), Some(ID), "{path}");
        assert!(r.is_container(), "{path}");
    }

    #[test]
    fn cgroupfs_driver_containerd_and_docker() {
        assert_container(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_container(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        // Guaranteed pods sit right under kubepods.
        assert_container(&format!("/kubepods/pod{UID}/{ID}"));
    }

    #[test]
    fn cgroupfs_driver_crio() {
        assert_container(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"));
    }

    #[test]
    fn systemd_driver_containerd() {
        assert_container(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        assert_container(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
        assert_container(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
    }

    #[test]
    fn systemd_driver_crio_and_its_monitor() {
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        assert_container(&format!("{pod}/crio-{ID}.scope"));
        // crun's nested cgroup below the container's: the same container, one level down.
        let nested = container(&format!("{pod}/crio-{ID}.scope/container"));
        assert_eq!(nested.container_id.as_deref(), Some(ID));
        assert_eq!(nested.depth_below_container, 1);
        assert!(!nested.is_container());
        assert_eq!(parse(&format!("{pod}/crio-conmon-{ID}.scope")), None);
    }

    #[test]
    fn systemd_driver_docker() {
        assert_container(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"
        ));
    }

    #[test]
    fn a_kind_node_below_its_own_docker_scope() {
        // kind runs kubelet inside a docker container: the node's own `docker-<id>.scope`
        // and kubelet's cgroup root come first; the container is the one after the pod.
        let other = "0a".repeat(32);
        assert_container(&format!(
            "/system.slice/docker-{other}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        ));
    }

    #[test]
    fn the_pod_cgroup_and_static_pods() {
        let pod = container(&format!("/kubepods/burstable/pod{UID}"));
        assert_eq!(pod.pod_uid, UID);
        assert_eq!(pod.container_id, None);
        assert!(!pod.is_container());
        let hash = "6b0d3c1ffb7a2c5e8d4a9f0e1b2c3d4e";
        let r = container(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(r.pod_uid, hash);
    }

    #[test]
    fn not_kubernetes() {
        for path in [
            "/",
            "/system.slice/sshd.service",
            &format!("/system.slice/docker-{ID}.scope"),
            "/user.slice/user-1000.slice/session-2.scope",
            "/kubepods/burstable",
            "/kubepods.slice/kubepods-burstable.slice",
            "/agents/pod-reviewer",
            &format!("/kubepods/burstable/pod{UID}/not-a-container"),
            &format!("/kubepods/burstable/pod{}/{ID}", &UID[1..]),
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
        // Too short to be a container id.
        let r = parse(&format!("/kubepods/pod{UID}/{}", &ID[..12]));
        assert_eq!(r, None);
    }

    #[test]
    fn runtime_schemes_are_stripped() {
        assert_eq!(strip_runtime_scheme(&format!("containerd://{ID}")), ID);
        assert_eq!(strip_runtime_scheme(&format!("cri-o://{ID}")), ID);
        assert_eq!(strip_runtime_scheme(&format!("docker://{ID}")), ID);
        assert_eq!(strip_runtime_scheme(ID), ID);
    }
}
