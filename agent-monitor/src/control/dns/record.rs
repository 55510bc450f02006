//! Records of DNS questions no host rule allows: kind `send` (a UDP datagram to port 53),
//! verdict `violation`, `net.host` naming the name asked for, `count` the questions the
//! record stands for (aggregated, see `aggregate`). The process is not known here (the
//! resolver sees a socket, not a pid), so `process` is absent.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use tokio::sync::mpsc;

use super::{Asked, OutOfScope, RECORD_INTERVAL};
use crate::{
    control::state::{Shared, Stats},
    observe::record::{
        Action, AgentNames, AgentRef, Kind, Layer, NetObject, Record, Verdict, rfc3339,
    },
    policy::{Dimension, Violation},
};

/// Turns out-of-scope questions into records until the resolver is gone: a name's first
/// question as it comes, the repeats counted meanwhile every [`RECORD_INTERVAL`].
pub(crate) async fn run(shared: Arc<Shared>, mut questions: mpsc::Receiver<OutOfScope>) {
    let mut tick = tokio::time::interval(RECORD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate.
    tick.tick().await;
    loop {
        tokio::select! {
            q = questions.recv() => match q {
                Some(q) => record(&shared, &q),
                None => return,
            },
            _ = tick.tick() => {
                for q in shared.dns.flush_out_of_scope() {
                    record(&shared, &q);
                }
            }
        }
    }
}

/// Counts the questions of `q` as violations of its task (also one that has just ended)
/// and queues its record.
fn record(shared: &Shared, q: &OutOfScope) {
    let agent = {
        let mut registry = shared.registry();
        if let Some(t) = registry.by_slot_mut(q.slot) {
            t.violations += q.count;
            Some(AgentRef::of(&t.scope, &t.id))
        } else {
            registry
                .attribute(q.slot)
                .map(|a| AgentRef::new(AgentNames::of(&a.scope, Arc::clone(&a.names.id))))
        }
    };
    let Some(agent) = agent else {
        return;
    };
    Stats::add(&shared.stats.violations, q.count);
    if q.enforced {
        Stats::add(&shared.stats.blocked, q.count);
    }
    let mut record = build(q, agent);
    record.kubernetes = shared.kubernetes.agent(q.slot).map(Box::new);
    shared.push_record(record);
}

/// The record of out-of-scope questions.
pub(crate) fn build(q: &OutOfScope, agent: AgentRef) -> Record {
    let upstream = q.upstream.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 53)));
    Record {
        time: rfc3339(SystemTime::now()).into(),
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
        call: None,
        process: None,
        kubernetes: None,
        file: None,
        net: Some(NetObject {
            family: if upstream.is_ipv4() { "inet" } else { "inet6" },
            protocol: "udp".into(),
            address: upstream.ip().to_string().into(),
            port: upstream.port(),
            host: (q.asked != Asked::Others).then(|| q.name.clone()),
        }),
        exec: None,
        escape: None,
        violation: Some(Violation {
            dimension: Dimension::Network,
            rule: "network.connect".into(),
            reason: reason(q),
        }),
        task: None,
        count: Some(q.count),
        truncated: false,
        approval: None,
    }
}

/// The violation's reason: what was asked, how often, and what the agent was answered.
fn reason(q: &OutOfScope) -> String {
    let queries = |n: u64| if n == 1 { "query" } else { "queries" };
    let asked = match q.asked {
        Asked::First => format!(
            "DNS query for {} ({}) matches no host: rule in network.connect",
            q.name, q.qtype
        ),
        Asked::Again => format!(
            "{} more DNS {} for {} ({}) since its previous record: no host: rule in \
             network.connect matches it",
            q.count,
            queries(q.count),
            q.name,
            q.qtype
        ),
        Asked::Others => format!(
            "{} DNS {} ({}) for names beyond the {} counted one by one (the first: {}): no \
             host: rule in network.connect matches them",
            q.count,
            queries(q.count),
            q.qtype,
            super::aggregate::NAMES_PER_AGENT,
            q.name
        ),
    };
    if q.enforced {
        format!("{asked}; answered as refused")
    } else {
        asked
    }
}
