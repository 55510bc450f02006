//! Pending requests of `onViolation: ask`: pure state (no signals, no clocks of its own),
//! so the rules (ids, the per-task limit, timeouts) are tested without a kernel.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::observe::record::{ExecObject, FileObject, Kind, NetObject, ProcessRef};

/// One held operation waiting for a person.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) id: u64,
    pub(crate) task: String,
    pub(crate) slot: u32,
    pub(crate) scope: String,
    pub(crate) owner: String,
    pub(crate) identity: Option<String>,
    /// The task's cgroup (a kill must stay inside it).
    pub(crate) cgroup: String,
    pub(crate) process: ProcessRef,
    pub(crate) kind: Kind,
    pub(crate) file: Option<FileObject>,
    pub(crate) net: Option<NetObject>,
    pub(crate) exec: Option<ExecObject>,
    pub(crate) violation: crate::policy::Violation,
    /// A stopped process waits (false: a refused network call, nothing to resume).
    pub(crate) stopped: bool,
    pub(crate) since: Instant,
    /// RFC 3339, for listings.
    pub(crate) held_at: String,
    pub(crate) deadline: Instant,
}

impl Request {
    /// What the agent tried, in a few words.
    pub(crate) fn what(&self) -> String {
        if let Some(f) = &self.file {
            return format!("{} {}", f.access, f.path);
        }
        if let Some(n) = &self.net {
            return match &n.host {
                Some(h) => format!("{} {}:{} ({h})", self.kind.name(), n.address, n.port),
                None => format!(
                    "{} {}/{}:{}",
                    self.kind.name(),
                    n.protocol,
                    n.address,
                    n.port
                ),
            };
        }
        if let Some(e) = &self.exec {
            return format!("exec {}", e.path);
        }
        self.kind.name().to_owned()
    }

    pub(crate) fn view(&self, now: Instant) -> RequestView {
        RequestView {
            id: self.id,
            task: self.task.clone(),
            scope: self.scope.clone(),
            owner: self.owner.clone(),
            pid: self.process.pid,
            comm: self.process.comm.to_string(),
            kind: self.kind.name().to_owned(),
            what: self.what(),
            rule: self.violation.rule.clone(),
            reason: self.violation.reason.clone(),
            stopped: self.stopped,
            held_at: self.held_at.clone(),
            age_ms: millis(now.saturating_duration_since(self.since)),
            expires_in_ms: millis(self.deadline.saturating_duration_since(now)),
        }
    }
}

/// `GET /v1/holds` item.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct RequestView {
    pub(crate) id: u64,
    pub(crate) task: String,
    pub(crate) scope: String,
    pub(crate) owner: String,
    pub(crate) pid: u32,
    pub(crate) comm: String,
    pub(crate) kind: String,
    pub(crate) what: String,
    pub(crate) rule: String,
    pub(crate) reason: String,
    /// The process is stopped (false: a refused network call waiting for a retry).
    pub(crate) stopped: bool,
    pub(crate) held_at: String,
    pub(crate) age_ms: u64,
    pub(crate) expires_in_ms: u64,
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Every pending request, by id.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    next_id: u64,
    requests: BTreeMap<u64, Request>,
}

impl Pending {
    /// Adds a request (its `id` is assigned here) unless its task already has `max`
    /// pending (None: the caller kills, as `kill-process` would).
    pub(crate) fn add(&mut self, mut request: Request, max: usize) -> Option<u64> {
        let of_task = self
            .requests
            .values()
            .filter(|r| r.task == request.task)
            .count();
        if of_task >= max {
            return None;
        }
        self.next_id += 1;
        request.id = self.next_id;
        self.requests.insert(request.id, request);
        Some(self.next_id)
    }

    pub(crate) fn take(&mut self, id: u64) -> Option<Request> {
        self.requests.remove(&id)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Request> {
        self.requests.get(&id)
    }

    /// Removes and returns the requests whose deadline has passed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Request> {
        let ids: Vec<u64> = self
            .requests
            .values()
            .filter(|r| r.deadline <= now)
            .map(|r| r.id)
            .collect();
        ids.iter()
            .filter_map(|id| self.requests.remove(id))
            .collect()
    }

    /// Removes and returns every request whose task is not in `live`.
    pub(crate) fn orphans(&mut self, live: impl Fn(&str) -> bool) -> Vec<Request> {
        let ids: Vec<u64> = self
            .requests
            .values()
            .filter(|r| !live(&r.task))
            .map(|r| r.id)
            .collect();
        ids.iter()
            .filter_map(|id| self.requests.remove(id))
            .collect()
    }

    /// Whether a stopped request of this process's thread is pending (the kernel's
    /// release of another thread must not resume it).
    pub(crate) fn holds_process(&self, pid: u32) -> bool {
        self.requests
            .values()
            .any(|r| r.stopped && r.process.pid == pid)
    }

    /// (id, process) of every request whose process should be stopped, opened before
    /// `before` (a stop from eBPF can land a little after the event).
    pub(crate) fn stopped(&self, before: Instant) -> Vec<(u64, u32)> {
        self.requests
            .values()
            .filter(|r| r.stopped && r.since < before)
            .map(|r| (r.id, r.process.pid))
            .collect()
    }

    pub(crate) fn views(&self, now: Instant) -> Vec<RequestView> {
        self.requests.values().map(|r| r.view(now)).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::record::ProcessNames;
    use crate::policy::FileAccess;
    use std::sync::Arc;

    fn request(task: &str, pid: u32, deadline: Instant) -> Request {
        Request {
            id: 0,
            task: task.into(),
            slot: 1,
            scope: "s".into(),
            owner: "o".into(),
            identity: None,
            cgroup: "/c".into(),
            process: ProcessRef {
                pid,
                tid: pid,
                ppid: 1,
                names: Arc::new(ProcessNames {
                    comm: "cat".into(),
                    exe: None,
                    cgroup: None,
                }),
            },
            kind: Kind::File,
            file: Some(FileObject {
                path: "/etc/hostname".into(),
                access: FileAccess::Read,
                new_path: None,
                unresolved: false,
            }),
            net: None,
            exec: None,
            violation: crate::policy::Violation {
                dimension: crate::policy::Dimension::Files,
                rule: "files.read".into(),
                reason: "not allowed".into(),
            },
            stopped: true,
            since: Instant::now(),
            held_at: String::new(),
            deadline,
        }
    }

    #[test]
    fn ids_are_distinct_and_the_task_limit_holds() {
        let start = Instant::now();
        let later = Instant::now() + Duration::from_mins(1);
        let mut p = Pending::default();
        let a = p.add(request("t1", 10, later), 2).expect("first");
        let b = p.add(request("t1", 11, later), 2).expect("second");
        assert_ne!(a, b);
        let over = p.add(request("t1", 12, later), 2);
        assert!(over.is_none(), "a third request of t1 is past maxPending");
        p.add(request("t2", 13, later), 2)
            .expect("another task has its own limit");
        assert_eq!(p.len(), 3);
        assert!(p.holds_process(10));
        assert_eq!(p.stopped(Instant::now() + Duration::from_secs(1)).len(), 3);
        assert!(p.stopped(start).is_empty(), "opened after start");
        assert!(!p.holds_process(12));
        let taken = p.take(a).expect("pending");
        assert_eq!(taken.process.pid, 10);
        assert!(p.take(a).is_none(), "a request is decided once");
        p.add(request("t1", 12, later), 2)
            .expect("room again after a decision");
    }

    #[test]
    fn expired_and_ended_requests_leave() {
        let now = Instant::now();
        let mut p = Pending::default();
        let soon = p.add(request("t1", 10, now), 8).expect("add");
        p.add(request("t1", 11, now + Duration::from_mins(1)), 8)
            .expect("add");
        p.add(request("t2", 12, now + Duration::from_mins(1)), 8)
            .expect("add");
        let expired = p.expired(now);
        assert_eq!(expired.iter().map(|r| r.id).collect::<Vec<_>>(), [soon]);
        let orphans = p.orphans(|t| t != "t1");
        assert_eq!(orphans.len(), 1, "t1 ended");
        assert_eq!(orphans[0].process.pid, 11);
        assert_eq!(p.len(), 1);
        let orphans = p.orphans(|_| false);
        assert_eq!(orphans.len(), 1);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn views_say_what_and_which_rule() {
        let mut p = Pending::default();
        let later = Instant::now() + Duration::from_mins(1);
        p.add(request("t1", 10, later), 8).expect("add");
        let v = p.views(Instant::now());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].what, "read /etc/hostname");
        assert_eq!(v[0].rule, "files.read");
        assert!(v[0].expires_in_ms > 50_000);
    }
}
