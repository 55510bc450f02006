//! Out-of-scope questions, aggregated (pure): an agent asking the same refused name again
//! and again, or endless different ones, gets a bounded number of records.
//!
//! - The first question for a name is recorded at once (`count` 1).
//! - Repeats of a name are counted; every [`INTERVAL`] a name asked again since its last
//!   record gets one record with the number of those questions (`count`). A name not
//!   asked for a whole interval is forgotten (its next question is a first one again).
//! - An agent has at most [`NAMES_PER_AGENT`] names counted at once. Questions for other
//!   names are counted together and recorded once per interval as one record naming the
//!   first of them (`others`).
//!
//! So an agent gets at most 2 x [`NAMES_PER_AGENT`] + 1 such records per interval
//! (129 per 10 s), whatever it asks, and the counts add up to every question it asked.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use super::OutOfScope;

/// How often repeats are recorded.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);
/// Names counted per agent at once.
pub(crate) const NAMES_PER_AGENT: usize = 64;
/// Question types listed per record at most.
const QTYPES: usize = 4;

/// What an out-of-scope record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// The first question for the name (`count` 1).
    First,
    /// Questions for the name since its previous record.
    Again,
    /// Questions for names beyond the ones counted one by one (the name is the first).
    Others,
}

/// Questions counted for a later record.
#[derive(Debug, Default)]
struct Count {
    questions: u64,
    qtypes: Vec<String>,
    enforced: bool,
    upstream: Option<SocketAddr>,
    /// `Others`: the first name asked.
    name: String,
}

impl Count {
    fn add(&mut self, q: &OutOfScope) {
        if self.questions == 0 {
            self.qtypes.clear();
            q.name.clone_into(&mut self.name);
        }
        self.questions += 1;
        if self.qtypes.len() < QTYPES && !self.qtypes.contains(&q.qtype) {
            self.qtypes.push(q.qtype.clone());
        }
        self.enforced = q.enforced;
        self.upstream = q.upstream;
    }

    /// The record of what was counted, and a fresh count.
    fn take(&mut self, slot: u32, name: &str, asked: Asked) -> Option<OutOfScope> {
        if self.questions == 0 {
            return None;
        }
        let q = OutOfScope {
            slot,
            name: name.to_owned(),
            qtype: self.qtypes.join(","),
            enforced: self.enforced,
            upstream: self.upstream,
            count: self.questions,
            asked,
        };
        self.questions = 0;
        Some(q)
    }
}

#[derive(Debug, Default)]
struct Agent {
    names: HashMap<String, Count>,
    others: Count,
}

/// The counts of every agent.
#[derive(Debug, Default)]
pub(crate) struct Aggregator {
    agents: HashMap<u32, Agent>,
}

impl Aggregator {
    /// Counts one question; true when it is to be recorded now (the name's first).
    pub(crate) fn question(&mut self, q: &OutOfScope) -> bool {
        let agent = self.agents.entry(q.slot).or_default();
        if let Some(count) = agent.names.get_mut(&q.name) {
            count.add(q);
            return false;
        }
        if agent.names.len() < NAMES_PER_AGENT {
            agent.names.insert(q.name.clone(), Count::default());
            return true;
        }
        agent.others.add(q);
        false
    }

    /// The records of the interval that ended: one per name asked again, one for the
    /// others; names not asked again are forgotten.
    pub(crate) fn flush(&mut self) -> Vec<OutOfScope> {
        let mut out = Vec::new();
        self.agents.retain(|slot, agent| {
            agent.names.retain(|name, count| {
                let record = count.take(*slot, name, Asked::Again);
                let asked = record.is_some();
                out.extend(record);
                asked
            });
            let name = agent.others.name.clone();
            out.extend(agent.others.take(*slot, &name, Asked::Others));
            !agent.names.is_empty()
        });
        out
    }

    /// Forgets an agent (its task ended); returns the records of what it had counted.
    pub(crate) fn close(&mut self, slot: u32) -> Vec<OutOfScope> {
        let Some(mut agent) = self.agents.remove(&slot) else {
            return Vec::new();
        };
        let mut out: Vec<OutOfScope> = agent
            .names
            .iter_mut()
            .filter_map(|(name, count)| count.take(slot, name, Asked::Again))
            .collect();
        let name = agent.others.name.clone();
        out.extend(agent.others.take(slot, &name, Asked::Others));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(slot: u32, name: &str) -> OutOfScope {
        OutOfScope {
            slot,
            name: name.into(),
            qtype: "A".into(),
            enforced: true,
            upstream: None,
            count: 1,
            asked: Asked::First,
        }
    }

    #[test]
    fn a_repeated_name_is_recorded_once_then_once_per_interval_with_its_count() {
        let mut a = Aggregator::default();
        assert!(a.question(&q(1, "evil.test")), "the first question");
        for _ in 0..10_000 {
            assert!(!a.question(&q(1, "evil.test")));
        }
        let mut aaaa = q(1, "evil.test");
        aaaa.qtype = "AAAA".into();
        assert!(!a.question(&aaaa));
        let records = a.flush();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].count, 10_001);
        assert_eq!(records[0].asked, Asked::Again);
        assert_eq!(records[0].qtype, "A,AAAA");
        // Still being asked: counted, not a first question.
        assert!(!a.question(&q(1, "evil.test")));
        assert_eq!(a.flush().len(), 1);
        // Silent for an interval: forgotten, so the next question is recorded at once.
        assert!(a.flush().is_empty());
        assert!(a.question(&q(1, "evil.test")));
    }

    #[test]
    fn names_beyond_the_bound_are_counted_together() {
        let mut a = Aggregator::default();
        let mut now = 0;
        for i in 0..1000 {
            if a.question(&q(7, &format!("n{i}.evil.test"))) {
                now += 1;
            }
        }
        assert!(a.question(&q(8, "other-agent.test")), "agents are apart");
        assert_eq!(now, NAMES_PER_AGENT);
        let records = a.flush();
        let others: Vec<_> = records
            .iter()
            .filter(|r| r.asked == Asked::Others)
            .collect();
        assert_eq!(others.len(), 1, "{records:?}");
        assert_eq!(others[0].count, 1000 - NAMES_PER_AGENT as u64);
        assert_eq!(others[0].name, format!("n{NAMES_PER_AGENT}.evil.test"));
        assert_eq!(records.len(), 1, "names asked once are not recorded again");
        // Every agent forgotten: room again.
        assert!(a.flush().is_empty());
        assert!(a.question(&q(7, "n999.evil.test")));
    }

    #[test]
    fn closing_an_agent_returns_what_it_had_counted() {
        let mut a = Aggregator::default();
        assert!(a.question(&q(3, "x.test")));
        assert!(!a.question(&q(3, "x.test")));
        assert!(!a.question(&q(3, "x.test")));
        let records = a.close(3);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].count, 2);
        assert!(a.close(3).is_empty());
        assert!(a.flush().is_empty());
    }
}
