//! `AgentScope` and `ClusterAgentScope` objects as scopes (docs/KUBERNETES.md). Each object
//! is rendered as a manifest (`scope::crd::render`) and kept in the catalog; the daemon's
//! one reload path loads it after the files of `--scopes`, with the same semantics: a
//! change that does not load leaves the last good version in force. After every reload the
//! `Accepted` condition of each object is written back with a merge patch to `/status`
//! when it differs from what the object has (so the daemons of the other nodes, which
//! judge alike, find nothing to write).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt as _;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use tokio::sync::watch as signal;

use crate::control::state::Shared;
use crate::scope::ResourceRef;
use crate::scope::crd::{self, ACCEPTED, Condition, GROUP, KINDS, ResourceStatus, VERSION};

/// How often the statuses are compared with the catalog without a change to an object.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(10);

/// What the watcher knows of one object.
struct Known {
    generation: Option<i64>,
    /// Its `Accepted` condition as last seen on the object or written.
    condition: Option<Condition>,
    /// Its current text was read by a reload: the catalog's verdict is about it.
    loaded: bool,
}

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Runs until `stop`. Errors (API server away, CRDs not installed, watch expired) are
/// logged and retried with backoff.
pub(crate) async fn run(shared: Arc<Shared>, client: Client, mut stop: signal::Receiver<bool>) {
    let [namespaced, cluster] = KINDS.map(|(kind, plural, ..)| api_resource(kind, plural));
    let watch = |resource: &ApiResource, cluster_wide: bool| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |event| (cluster_wide, event))
    };
    let mut stream = std::pin::pin!(futures_util::stream::select(
        watch(&namespaced, false),
        watch(&cluster, true)
    ));
    let mut known: BTreeMap<ResourceRef, Known> = BTreeMap::new();
    // The objects of each kind listed since its watch (re)started.
    let mut listed: [BTreeSet<ResourceRef>; 2] = Default::default();
    tracing::info!("watching AgentScope and ClusterAgentScope objects");
    // Reloads the watch does not cause (SIGHUP, `POST /v1/reload`: a scope file that took or
    // freed an object's name) reach the statuses at the next tick.
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (cluster_wide, event) = tokio::select! {
            event = stream.next() => match event {
                Some(event) => event,
                None => return,
            },
            _ = resync.tick() => {
                write_statuses(&shared, &client, &namespaced, &cluster, &mut known).await;
                continue;
            }
            _ = stop.changed() => return,
        };
        let changed = match event {
            Err(e) => {
                tracing::warn!(error = %e, "AgentScope watch (retrying)");
                false
            }
            Ok(watcher::Event::Init) => {
                listed[usize::from(cluster_wide)].clear();
                false
            }
            Ok(watcher::Event::InitApply(object)) => {
                let r = applied(&shared, &mut known, &object, cluster_wide);
                if let Some(r) = r.as_ref() {
                    listed[usize::from(cluster_wide)].insert(r.clone());
                }
                // Loaded together at InitDone.
                false
            }
            Ok(watcher::Event::InitDone) => {
                let gone: Vec<ResourceRef> = known
                    .keys()
                    .filter(|r| r.namespace.is_none() == cluster_wide)
                    .filter(|r| !listed[usize::from(cluster_wide)].contains(*r))
                    .cloned()
                    .collect();
                for r in gone {
                    known.remove(&r);
                    shared.set_scope_resource(r, None);
                }
                true
            }
            Ok(watcher::Event::Apply(object)) => {
                let before = shared.catalog().resources();
                applied(&shared, &mut known, &object, cluster_wide);
                before != shared.catalog().resources()
            }
            Ok(watcher::Event::Delete(object)) => {
                let r = reference(&object, cluster_wide);
                known.remove(&r);
                shared.set_scope_resource(r, None)
            }
        };
        // Statuses are judged by a reload, never before the objects' texts are loaded.
        if changed {
            match shared.reload().await {
                Ok(scopes) => {
                    tracing::info!(changed = ?scopes, "scopes reloaded (AgentScope objects)");
                    // Every text set so far was in the catalog when it was read.
                    for k in known.values_mut() {
                        k.loaded = true;
                    }
                }
                Err(e) => tracing::error!(error = %e, "reloading the scopes (AgentScope objects)"),
            }
            write_statuses(&shared, &client, &namespaced, &cluster, &mut known).await;
        }
    }
}

fn reference(object: &DynamicObject, cluster_wide: bool) -> ResourceRef {
    ResourceRef {
        namespace: if cluster_wide {
            None
        } else {
            object.metadata.namespace.clone()
        },
        name: object.metadata.name.clone().unwrap_or_default(),
    }
}

/// Takes in an object listed, added or changed: its text for the next reload, its
/// generation and its current condition.
fn applied(
    shared: &Shared,
    known: &mut BTreeMap<ResourceRef, Known>,
    object: &DynamicObject,
    cluster_wide: bool,
) -> Option<ResourceRef> {
    let r = reference(object, cluster_wide);
    if r.name.is_empty() || (!cluster_wide && r.namespace.is_none()) {
        return None;
    }
    let text = crd::render(&r, &object.data["spec"]);
    let condition = object.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::from_value::<Condition>(c.clone()).ok())
        .find(|c| c.kind == ACCEPTED);
    let new_text = shared.set_scope_resource(r.clone(), Some(text));
    let loaded = !new_text && known.get(&r).is_some_and(|k| k.loaded);
    known.insert(
        r.clone(),
        Known {
            generation: object.metadata.generation,
            condition,
            loaded,
        },
    );
    Some(r)
}

/// What the last reload made of `r`, as its `Accepted` condition.
fn judged(shared: &Shared, r: &ResourceRef, known: &Known) -> Condition {
    let (status, reason, message) = match shared.catalog().resource_problem(r) {
        None => ("True", "Valid", format!("loaded as scope {:?}", r.name)),
        Some((reason, message)) => ("False", reason, message.to_owned()),
    };
    let now = crate::observe::record::rfc3339(SystemTime::now());
    // Whole seconds, as Kubernetes writes its own times.
    let now = format!("{}Z", now.split('.').next().unwrap_or(&now));
    let transition = match &known.condition {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        kind: ACCEPTED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: known.generation,
        last_transition_time: transition,
    }
}

/// Patches the status of every object whose condition is not the one the last reload
/// gives it (only objects whose current text that reload read).
async fn write_statuses(
    shared: &Shared,
    client: &Client,
    namespaced: &ApiResource,
    cluster: &ApiResource,
    known: &mut BTreeMap<ResourceRef, Known>,
) {
    for (r, k) in known.iter_mut().filter(|(_, k)| k.loaded) {
        let condition = judged(shared, r, k);
        let same = k.condition.as_ref().is_some_and(|c| {
            (&c.status, &c.reason, &c.message, c.observed_generation)
                == (
                    &condition.status,
                    &condition.reason,
                    &condition.message,
                    condition.observed_generation,
                )
        });
        if same {
            continue;
        }
        let api: Api<DynamicObject> = match &r.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, namespaced),
            None => Api::all_with(client.clone(), cluster),
        };
        let status = ResourceStatus {
            observed_generation: k.generation,
            conditions: vec![condition.clone()],
        };
        let patch = Patch::Merge(json!({ "status": status }));
        match api
            .patch_status(&r.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                tracing::info!(object = %crate::scope::ScopeSource::Resource(Box::new(r.clone())), status = %condition.status, reason = %condition.reason, "AgentScope status written");
                k.condition = Some(condition);
            }
            Err(e) => tracing::warn!(object = %r.name, error = %e, "writing an AgentScope status"),
        }
    }
}
