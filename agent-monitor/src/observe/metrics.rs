//! `GET /metrics`: Prometheus text format (0.0.4) through `prometheus-client`.
//!
//! Live metrics (records by kind, violations by kind/dimension/action, decoded kernel events
//! by hook, policy evaluation time) are updated by the pipeline; the rest (kernel counters,
//! blocks, kills, tasks, followers, hooks) is read at scrape time (`api::scrape`).

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use prometheus_client::{
    encoding::prometheus_text,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::{
    kernel::decoder::Event,
    kernel::ring_fill::{RingFill, RingUsage},
    observe::record::{Record, Verdict},
};

type Labels2 = [(&'static str, &'static str); 2];
type Labels3 = [(&'static str, &'static str); 3];
type Labels1 = [(&'static str, &'static str); 1];

/// Record kinds (`record::Kind`'s variants).
const KINDS: usize = 7;

pub(crate) struct Metrics {
    registry: Registry,
    records: Family<Labels2, Counter>,
    violations: Family<Labels3, Counter>,
    kernel_events: Family<Labels1, Counter>,
    policy_eval: Histogram,
    /// `records`' counter of each kind and verdict once first used: a family's lookup
    /// (a lock and a hash of the labels) per record was a share of the writer's time.
    record_counters: [[OnceLock<Counter>; 2]; KINDS],
    /// `hook_events`' counters by hook name, once first used.
    hook_counters: std::sync::RwLock<Vec<(&'static str, Counter)>>,
    ring: OnceLock<RingFill>,
    /// Kernel events read from the ring buffer and decoded (all hooks).
    events_read: AtomicU64,
}

/// Decoded kernel events by hook, counted in the pipeline's thread and added to the
/// metrics once per drain of the ring buffer ([`Metrics::kernel_events`]): per event, the
/// shared counters' lock and atomics cost more than the count.
#[derive(Debug, Default)]
pub(crate) struct HookCounts(Vec<(&'static str, u64)>);

impl HookCounts {
    pub(crate) fn add(&mut self, event: &Event) {
        let hook = match event {
            Event::File { op, .. } => op.name(),
            Event::Net { op, .. } => op.name(),
            other => other.kind().name(),
        };
        // The same literal is the same address; the text is compared only when that fails.
        match self
            .0
            .iter_mut()
            .find(|(h, _)| std::ptr::eq(*h, hook) || *h == hook)
        {
            Some((_, n)) => *n += 1,
            None => self.0.push((hook, 1)),
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("agent_monitor");
        let records = Family::<Labels2, Counter>::default();
        let violations = Family::<Labels3, Counter>::default();
        let kernel_events = Family::<Labels1, Counter>::default();
        // 250 ns .. ~4 ms.
        let policy_eval = Histogram::new(exponential_buckets(250e-9, 2.0, 15));
        registry.register(
            "records",
            "Records written, by kind (exec, file, connect, send, bind, escape) and verdict",
            records.clone(),
        );
        registry.register(
            "violations",
            "Violations, by kind, scope dimension and action taken",
            violations.clone(),
        );
        registry.register(
            "hook_events",
            "Kernel events decoded, by hook (exec, open, unlink, rename, chdir, connect, sendmsg, bind, exit, cgroup_mkdir, cgroup_rmdir)",
            kernel_events.clone(),
        );
        registry.register(
            "policy_evaluation_seconds",
            "Time to judge one activity against its scope (one evaluation in 8 is timed)",
            policy_eval.clone(),
        );
        Self {
            registry,
            records,
            violations,
            kernel_events,
            policy_eval,
            record_counters: Default::default(),
            hook_counters: std::sync::RwLock::new(Vec::new()),
            ring: OnceLock::new(),
            events_read: AtomicU64::new(0),
        }
    }

    /// Watches the ring buffer's fill level from now on (set once, by the daemon).
    pub(crate) fn watch_ring(&self, fill: RingFill) {
        let _ = self.ring.set(fill);
    }

    /// Bytes waiting in the ring buffer, when it is watched.
    pub(crate) fn ring_usage(&self) -> Option<RingUsage> {
        self.ring.get().map(RingFill::usage)
    }

    /// Adds the decoded kernel events counted since the last call (per-hook counts), and
    /// clears `counts`.
    pub(crate) fn kernel_events(&self, counts: &mut HookCounts) {
        for (hook, n) in counts.0.iter_mut().filter(|(_, n)| *n > 0) {
            self.count_hook(hook, *n);
            self.events_read.fetch_add(*n, Relaxed);
            *n = 0;
        }
    }

    /// Counts `n` events of a hook: its counter is found in a short list (a dozen hooks),
    /// made once.
    fn count_hook(&self, hook: &'static str, n: u64) {
        let read = self
            .hook_counters
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The same literal is the same address: most lookups end without comparing text.
        if let Some((_, c)) = read
            .iter()
            .find(|(h, _)| std::ptr::eq(*h, hook) || *h == hook)
        {
            c.inc_by(n);
            return;
        }
        drop(read);
        let c = self.kernel_events.get_or_create(&[("hook", hook)]).clone();
        c.inc_by(n);
        self.hook_counters
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((hook, c));
    }

    /// Kernel events read and decoded so far (up to the last drain of the ring buffer).
    pub(crate) fn events_read(&self) -> u64 {
        self.events_read.load(Relaxed)
    }

    /// One policy evaluation took `took`.
    pub(crate) fn policy_eval(&self, took: Duration) {
        self.policy_eval.observe(took.as_secs_f64());
    }

    /// One record written.
    pub(crate) fn record(&self, r: &Record) {
        let kind = r.kind.name();
        let (verdict, v) = match r.verdict {
            Verdict::Allowed => ("allowed", 0),
            Verdict::Violation => ("violation", 1),
        };
        let labels = [("kind", kind), ("verdict", verdict)];
        match self.record_counters.get(r.kind as usize) {
            Some(cached) => cached[v]
                .get_or_init(|| self.records.get_or_create(&labels).clone())
                .inc(),
            // A kind added without a cache place: counted the slow way.
            None => self.records.get_or_create(&labels).inc(),
        };
        if let Some(v) = &r.violation {
            let dimension = match v.dimension {
                crate::policy::Dimension::Exec => "exec",
                crate::policy::Dimension::Files => "files",
                crate::policy::Dimension::Network => "network",
                crate::policy::Dimension::Escape => "escape",
            };
            // An aggregated record (refused DNS questions) stands for `count` violations.
            self.violations
                .get_or_create(&[
                    ("kind", kind),
                    ("dimension", dimension),
                    ("action", r.action.name()),
                ])
                .inc_by(r.count.unwrap_or(1));
        }
    }

    /// The whole exposition: live metrics plus `scraped`, the values read at scrape time.
    pub(crate) fn render(&self, scraped: &Registry) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        prometheus_text::encode(&mut out, scraped)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::record::Kind;

    fn record(verdict: Verdict) -> Record {
        Record {
            violation: (verdict == Verdict::Violation).then(|| crate::policy::Violation {
                dimension: crate::policy::Dimension::Files,
                rule: "files.read".into(),
                reason: "r".into(),
            }),
            ..Record::sample(Kind::File, verdict)
        }
    }

    #[test]
    fn live_metrics_are_encoded() {
        let m = Metrics::new();
        m.record(&record(Verdict::Allowed));
        m.record(&record(Verdict::Violation));
        m.policy_eval(Duration::from_micros(3));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &m.registry).expect("encode");
        assert!(
            out.contains(r#"agent_monitor_records_total{kind="file",verdict="allowed"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"agent_monitor_violations_total{kind="file",dimension="files",action="none"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains("agent_monitor_policy_evaluation_seconds_count 1"),
            "{out}"
        );
    }
}
