//! Records of DNS questions no host rule allows: kind `send` (a UDP datagram to port 53),
//! verdict `violation`, `net.host` naming the name asked for. The process is not known
//! here (the resolver sees a socket, not a pid), so `process` is absent.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use tokio::sync::mpsc;

use super::OutOfScope;
use crate::{
    control::state::{Shared, Stats},
    observe::record::{Action, AgentRef, Kind, Layer, NetObject, Record, Verdict, rfc3339},
    policy::{Dimension, Violation},
};

/// Turns out-of-scope questions into records until the resolver is gone.
pub(crate) async fn run(shared: Arc<Shared>, mut questions: mpsc::Receiver<OutOfScope>) {
    while let Some(q) = questions.recv().await {
        let Some(agent) = shared.registry().by_slot_mut(q.slot).map(|t| {
            t.violations += 1;
            AgentRef {
                scope: t.scope.name.clone(),
                task: t.id.clone(),
                owner: t.scope.owner.clone(),
                identity: t.scope.identity.clone(),
            }
        }) else {
            continue;
        };
        Stats::add(&shared.stats.violations, 1);
        if q.enforced {
            Stats::add(&shared.stats.blocked, 1);
        }
        Stats::add(&shared.stats.records, 1);
        let mut record = build(&q, agent);
        record.kubernetes = shared.kubernetes.agent(q.slot);
        shared.push_record(record);
    }
}

/// The record of one out-of-scope question.
pub(crate) fn build(q: &OutOfScope, agent: AgentRef) -> Record {
    let upstream = q.upstream.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 53)));
    Record {
        time: rfc3339(SystemTime::now()),
        kind: Kind::Send,
        verdict: Verdict::Violation,
        action: if q.enforced {
            Action::Blocked
        } else {
            Action::None
        },
        layer: q.enforced.then_some(Layer::Daemon),
        after: None,
        agent,
        process: None,
        kubernetes: None,
        file: None,
        net: Some(NetObject {
            family: if upstream.is_ipv4() { "inet" } else { "inet6" },
            protocol: "udp".into(),
            address: upstream.ip().to_string(),
            port: upstream.port(),
            host: Some(q.name.clone()),
        }),
        exec: None,
        escape: None,
        violation: Some(Violation {
            dimension: Dimension::Network,
            rule: "network.connect".into(),
            reason: format!(
                "DNS query for {} ({}) matches no host: rule in network.connect{}",
                q.name,
                q.qtype,
                if q.enforced {
                    "; answered as refused"
                } else {
                    ""
                }
            ),
        }),
        task: None,
        truncated: false,
    }
}
