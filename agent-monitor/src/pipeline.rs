//! Per-event work: find the task, keep the process table, resolve paths, ask the policy,
//! build records and hand them to the sinks in batches.

use std::{
    collections::HashMap, net::IpAddr, os::unix::fs::MetadataExt as _, path::Path, sync::Arc,
};

use crate::{
    actions::{Step, decide},
    cgroupfs::Cgroup2,
    decoder::{Event, FileOp, Header, NetOp as WireNetOp},
    enforce::{kernel_dev, signal_process},
    policy::{Activity, Context, Dimension, FileAccess, NetOp, Protocol, Verdict as PolicyVerdict},
    proctable::{ProcInfo, ProcTable},
    record::{
        Action, AgentRef, Clock, EscapeObject, ExecObject, FileObject, Kind, NetObject, ProcessRef,
        Record, Verdict, rfc3339,
    },
    resolve::{AT_FDCWD, Actor, Follow, Resolved, resolve},
    scope::Scope,
    sink::Sinks,
    state::{Shared, Stats},
};

/// Records written per batch at most.
const BATCH: usize = 1024;

pub struct Pipeline {
    shared: Arc<Shared>,
    procs: ProcTable,
    /// cgroup id -> path, for records (the process may be gone when its event is read).
    cgroup_paths: HashMap<u64, String>,
    clock: Clock,
    sinks: Sinks,
    batch: Vec<Record>,
}

/// What one event asks the policy, with what the record shows of its object.
struct Judged {
    kind: Kind,
    file: Option<FileObject>,
    net: Option<NetObject>,
    exec: Option<ExecObject>,
    escape: Option<EscapeObject>,
    /// A verdict reached without the scope (escape attempts).
    preset: Option<PolicyVerdict>,
}

impl Pipeline {
    pub fn new(shared: Arc<Shared>, sinks: Sinks) -> Self {
        Self {
            shared,
            procs: ProcTable::default(),
            cgroup_paths: HashMap::new(),
            clock: Clock::new(),
            sinks,
            batch: Vec::new(),
        }
    }

    pub fn handle(&mut self, event: Event) {
        self.shared.observed.metrics.kernel_event(&event);
        match event {
            Event::CgroupMkdir { id, path } => self.shared.adopt(&path, id),
            Event::CgroupRmdir { id, .. } => self.shared.cgroup_removed(id),
            Event::Exit { header } => {
                if let Some(t) = self.shared.registry().by_slot_mut(header.agent) {
                    t.seen = true;
                }
                self.procs.remove(header.tgid);
            }
            Event::Exec { .. } | Event::File { .. } | Event::Net { .. } | Event::Escape { .. } => {
                self.judge(&event)
            }
        }
    }

    /// Writes the records gathered since the last flush, with any lifecycle notices.
    pub fn flush(&mut self) {
        self.batch.extend(self.shared.take_notices());
        if self.batch.is_empty() {
            return;
        }
        let written = self.sinks.write(&self.batch);
        if let Err(e) = &written {
            Stats::add(&self.shared.stats.sink_errors, 1);
            tracing::error!(error = %e, records = self.batch.len(), "audit log write failed");
        }
        // Only now (written, and synced when it holds a violation) may the API show them.
        let lines = written.is_ok().then(|| self.sinks.last_batch());
        crate::feed::publish(&self.shared, &self.batch, lines);
        self.batch.clear();
        // A burst must not keep its memory: give back what a full batch grew to.
        self.batch.shrink_to(BATCH);
    }

    /// Whether enough records are waiting that they should be written now (a full ring
    /// buffer is drained in bounded batches, not into one huge one).
    pub fn batch_full(&self) -> bool {
        self.batch.len() >= BATCH
    }

    fn judge(&mut self, event: &Event) {
        let Some(h) = event.header() else { return };
        let Some(task) = self.shared.registry().attribute(h.agent) else {
            Stats::add(&self.shared.stats.orphan_events, 1);
            return;
        };
        let (scope, task_id, start_cwd, task_cgroup, task_cgroup_id) = (
            task.scope,
            task.id,
            task.start_cwd,
            task.cgroup,
            task.cgroup_id,
        );
        let cgroup = self.cgroup_path(h.cgroup_id, &task_cgroup, task_cgroup_id);
        let learned = self.learned_host(event);
        let proc = self.procs.observe(h, start_cwd.as_deref());
        let Some(mut judged) = describe(event, h, proc, &task_cgroup) else {
            return;
        };
        let ctx = Context { tgid: h.tgid };
        let started = std::time::Instant::now();
        let protected = judged
            .file
            .as_ref()
            .and_then(|f| self.shared.protected.judge(&f.path, f.access));
        let verdict = match (judged.preset.take(), protected, learned) {
            (Some(v), _, _) => v,
            (None, Some(v), _) => {
                // A write into the monitor's own filesystems is an escape attempt.
                judged.kind = Kind::Escape;
                judged.escape = Some(EscapeObject {
                    technique: "protected-fs",
                    syscall: None,
                    args: None,
                    result: None,
                    cgroup: None,
                    moved_pid: None,
                });
                v
            }
            // The kernel found the address among those the agent's own resolver answered
            // for a host rule allowing this port and protocol, unexpired.
            (None, None, Some(host)) => {
                if let Some(net) = &mut judged.net {
                    net.host = Some(host);
                }
                PolicyVerdict::Allowed
            }
            (None, None, None) => evaluate(&scope, &judged, event, ctx),
        };
        let verdict = match verdict {
            // The kernel judged by identity what the path alone does not show (a hard link
            // to a denied file, a renamed binary): its kill is the verdict.
            PolicyVerdict::Allowed if h.kernel.killed => kernel_verdict(&judged),
            v => v,
        };
        self.shared.observed.metrics.policy_eval(started.elapsed());
        let violation = match verdict {
            PolicyVerdict::Allowed => None,
            PolicyVerdict::Violation(v) => Some(v),
        };
        let certain = judged.file.as_ref().is_none_or(|f| !f.unresolved);
        let (action, step) = decide(
            judged.kind,
            violation.is_some(),
            certain,
            scope.mode,
            scope.on_violation,
            h.kernel,
        );
        let process = process_ref(h, proc, cgroup);
        if step == Some(Step::Release)
            && let (Event::File { ret, .. }, Some(f)) = (event, &judged.file)
            && f.access == FileAccess::Read
            && let Ok(meta) = std::fs::metadata(format!("/proc/{}/fd/{ret}", h.pid))
        {
            // Judged readable: the kernel lets the next opens of this file through.
            self.shared
                .enforcer()
                .allow_read(h.agent, kernel_dev(meta.dev()), meta.ino());
        }
        if let (Some(e), Some(_)) = (&judged.escape, &violation)
            && let Some(moved) = e.moved_pid
            && scope.mode == crate::scope::Mode::Enforce
            && scope.on_violation != crate::scope::OnViolation::Alert
        {
            // The moved thread is the agent's even in its new cgroup.
            let shared = Arc::clone(&self.shared);
            signal_process(moved, libc::SIGKILL, || {
                shared.enforcer().is_tagged(moved, h.agent)
            });
        }
        if let Some(step) = step {
            let exe = judged.exec.as_ref().map(|e| e.path.as_str());
            self.carry_out(step, h, &task_cgroup, exe);
        }
        match action {
            Action::Blocked => Stats::add(&self.shared.stats.blocked, 1),
            Action::KilledProcess | Action::KilledAgent => Stats::add(&self.shared.stats.killed, 1),
            Action::None => {}
        }
        if let Some(v) = &violation {
            Stats::add(&self.shared.stats.violations, 1);
            if let Some(t) = self.shared.registry().by_slot_mut(h.agent) {
                t.violations += 1;
                if matches!(action, Action::KilledProcess | Action::KilledAgent) {
                    t.last_violation = Some(format!(
                        "{} by {} ({}): {}",
                        v.rule, process.comm, process.pid, v.reason
                    ));
                }
            }
        }
        Stats::add(&self.shared.stats.records, 1);
        self.batch.push(Record {
            time: rfc3339(self.clock.wall(h.time_ns)),
            kind: judged.kind,
            verdict: if violation.is_some() {
                Verdict::Violation
            } else {
                Verdict::Allowed
            },
            action,
            agent: AgentRef {
                scope: scope.name.clone(),
                task: task_id,
                owner: scope.owner.clone(),
                identity: scope.identity.clone(),
            },
            process: Some(process),
            kubernetes: self.shared.kubernetes.agent(h.agent),
            file: judged.file,
            net: judged.net,
            exec: judged.exec,
            escape: judged.escape,
            violation,
            task: None,
            truncated: h.truncated,
        });
    }
}

impl Pipeline {
    /// The name a connect's or send's address was learned from, when the kernel matched
    /// it to a host rule.
    fn learned_host(&self, event: &Event) -> Option<String> {
        let Event::Net {
            header,
            addr,
            host_rule,
            ..
        } = event
        else {
            return None;
        };
        let index = host_rule.checked_sub(1)?;
        Some(
            self.shared
                .dns
                .host_of(header.agent, index, *addr)
                // Learned by a previous daemon (or swept a moment ago): still a host rule.
                .unwrap_or_else(|| "<learned by an earlier resolver>".to_owned()),
        )
    }

    /// The path of the cgroup an event came from: the task's own, one below it (nested), or
    /// elsewhere (a tagged process that moved out).
    fn cgroup_path(&mut self, id: u64, task_cgroup: &str, task_cgroup_id: u64) -> String {
        if id == task_cgroup_id {
            return task_cgroup.to_string();
        }
        if let Some(p) = self.cgroup_paths.get(&id) {
            return p.clone();
        }
        match self.shared.cgroup2.find_id(task_cgroup, id) {
            Some(p) => {
                if self.cgroup_paths.len() > 4096 {
                    self.cgroup_paths.clear();
                }
                self.cgroup_paths.insert(id, p.clone());
                p
            }
            None => format!("<cgroup id {id}>"),
        }
    }

    /// The daemon's own enforcement. Every signal goes through a pidfd and a check that
    /// the target is still this agent's: a kill must never reach anything else.
    fn carry_out(&mut self, step: Step, h: &Header, cgroup: &str, exe: Option<&str>) {
        let (slot, tgid) = (h.agent, h.tgid);
        let shared = Arc::clone(&self.shared);
        let is_agents = |pid: u32| {
            shared.enforcer().is_tagged(pid, slot)
                || Cgroup2::of_pid(pid)
                    .is_some_and(|p| p == cgroup || p.starts_with(&format!("{cgroup}/")))
        };
        match step {
            Step::Release => {
                if let Some(meta) = exe.and_then(|p| std::fs::metadata(p).ok()) {
                    shared
                        .enforcer()
                        .allow_exec(slot, kernel_dev(meta.dev()), meta.ino());
                }
                signal_process(tgid, libc::SIGCONT, || is_agents(tgid));
            }
            Step::KillProcess => {
                if !signal_process(tgid, libc::SIGKILL, || is_agents(tgid)) {
                    tracing::debug!(pid = tgid, "process already gone before the daemon's kill");
                }
            }
            Step::KillAgent => {
                if let Err(e) = shared.cgroup2.kill(cgroup) {
                    tracing::error!(%cgroup, error = %e, "cgroup.kill failed");
                }
                // Tagged processes that left the cgroup are still the agent's.
                for pid in self.procs.pids_of(slot) {
                    signal_process(pid, libc::SIGKILL, || is_agents(pid));
                }
            }
        }
    }
}

fn evaluate(scope: &Scope, judged: &Judged, event: &Event, ctx: Context) -> PolicyVerdict {
    match event {
        Event::Exec { .. } => {
            let path = judged
                .exec
                .as_ref()
                .map(|e| e.path.as_str())
                .unwrap_or_default();
            scope.policy.evaluate(&Activity::Exec { path }, &ctx)
        }
        Event::File { .. } => {
            let Some(f) = &judged.file else {
                return PolicyVerdict::Allowed;
            };
            let activity = match &f.new_path {
                Some(to) => Activity::Rename { from: &f.path, to },
                None => Activity::File {
                    path: &f.path,
                    access: f.access,
                },
            };
            scope.policy.evaluate(&activity, &ctx)
        }
        Event::Net {
            op,
            addr,
            port,
            protocol,
            ..
        } => {
            let op = match op {
                WireNetOp::Connect => NetOp::Connect,
                WireNetOp::Send => NetOp::Send,
                WireNetOp::Bind => NetOp::Bind,
            };
            let protocol = match protocol {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                p => Protocol::Other(*p),
            };
            scope.policy.evaluate(
                &Activity::Net {
                    op,
                    addr: *addr,
                    port: *port,
                    protocol,
                },
                &ctx,
            )
        }
        _ => PolicyVerdict::Allowed,
    }
}

/// Resolves the event's object and updates the process table; None for events that only
/// keep the table (chdir) or report nothing (a move inside the agent's cgroup).
fn describe(event: &Event, h: &Header, proc: &mut ProcInfo, task_cgroup: &str) -> Option<Judged> {
    fn actor<'a>(h: &Header, proc: &'a ProcInfo) -> Actor<'a> {
        Actor {
            tgid: h.tgid,
            tid: h.pid,
            cwd: proc.cwd.as_deref(),
        }
    }
    match event {
        Event::Exec { filename, argv, .. } => {
            let r = resolve(&actor(h, proc), AT_FDCWD, filename, Follow::Last);
            let path = r.path.to_string_lossy().into_owned();
            proc.exe = Some(r.path);
            proc.argv.clone_from(argv);
            Some(Judged {
                kind: Kind::Exec,
                exec: Some(ExecObject {
                    path,
                    argv: argv.clone(),
                }),
                file: None,
                net: None,
                escape: None,
                preset: None,
            })
        }
        Event::File {
            op: FileOp::Chdir,
            dirfd,
            path,
            ..
        } => {
            let r = resolve(&actor(h, proc), *dirfd, path, Follow::Last);
            // An unreadable chdir target leaves the cwd unknown (then /proc is asked).
            proc.cwd = (r.exact && !h.path_fault).then_some(r.path);
            None
        }
        Event::File {
            op: FileOp::ConnectUnix { abstract_name },
            path,
            ..
        } => {
            // Judged as a write of the socket file (connecting needs write permission on
            // it); an abstract name has no file and is judged as `@name`.
            let r = if *abstract_name {
                Resolved {
                    path: Path::new("@").join(path),
                    exact: true,
                }
            } else {
                resolve(&actor(h, proc), AT_FDCWD, path, Follow::Last)
            };
            let address = if *abstract_name {
                format!("@{}", path.display())
            } else {
                r.path.to_string_lossy().into_owned()
            };
            Some(Judged {
                kind: Kind::Connect,
                file: Some(FileObject {
                    path: address.clone(),
                    access: FileAccess::Write,
                    new_path: None,
                    unresolved: !r.exact,
                }),
                net: Some(NetObject {
                    family: "unix",
                    protocol: "unix".into(),
                    address,
                    port: 0,
                    host: None,
                }),
                exec: None,
                escape: None,
                preset: None,
            })
        }
        Event::File {
            op,
            dirfd,
            path,
            dirfd2,
            path2,
            ret,
            ..
        } => {
            let (access, follow) = match op {
                FileOp::Open { flags } => (classify_open(*flags), Follow::Last),
                FileOp::Unlink => (FileAccess::Unlink, Follow::NotLast),
                FileOp::Rename | FileOp::Chdir | FileOp::ConnectUnix { .. } => {
                    (FileAccess::Rename, Follow::NotLast)
                }
            };
            let fd = matches!(op, FileOp::Open { .. }).then_some(*ret);
            // A held open's descriptor is still there: it names what was really opened.
            let r = fd
                .filter(|_| h.kernel.held)
                .and_then(|fd| opened_path(&actor(h, proc), fd))
                .unwrap_or_else(|| resolve_named(&actor(h, proc), *dirfd, path, follow, fd));
            let new_path = (*op == FileOp::Rename)
                .then(|| resolve_named(&actor(h, proc), *dirfd2, path2, Follow::NotLast, None))
                .map(|to| to.path.to_string_lossy().into_owned());
            Some(Judged {
                kind: Kind::File,
                file: Some(FileObject {
                    path: r.path.to_string_lossy().into_owned(),
                    access,
                    new_path,
                    unresolved: !r.exact,
                }),
                net: None,
                exec: None,
                escape: None,
                preset: None,
            })
        }
        Event::Net {
            op,
            addr,
            port,
            protocol,
            ..
        } => Some(Judged {
            kind: match op {
                WireNetOp::Connect => Kind::Connect,
                WireNetOp::Send => Kind::Send,
                WireNetOp::Bind => Kind::Bind,
            },
            net: Some(NetObject {
                family: if addr.is_ipv4() { "inet" } else { "inet6" },
                protocol: match protocol {
                    6 => "tcp".into(),
                    17 => "udp".into(),
                    p => p.to_string(),
                },
                address: display_addr(addr),
                port: *port,
                host: None,
            }),
            file: None,
            exec: None,
            escape: None,
            preset: None,
        }),
        Event::Escape { what, .. } => {
            let (object, verdict) = crate::escape::judge(what, task_cgroup)?;
            Some(Judged {
                kind: Kind::Escape,
                file: None,
                net: None,
                exec: None,
                escape: Some(object),
                preset: Some(verdict),
            })
        }
        Event::Exit { .. } | Event::CgroupMkdir { .. } | Event::CgroupRmdir { .. } => None,
    }
}

/// Resolves a path an operation named. A successful open, unlink or rename never names an
/// empty path: an empty one could not be read from the caller's memory, and resolving ""
/// would wrongly give the working directory. An open's file is then taken from its new fd.
fn resolve_named(
    actor: &Actor<'_>,
    dirfd: i32,
    raw: &Path,
    follow: Follow,
    fd: Option<i64>,
) -> Resolved {
    if !raw.as_os_str().is_empty() {
        return resolve(actor, dirfd, raw, follow);
    }
    let from_fd = fd.and_then(|fd| {
        std::fs::read_link(format!("/proc/{}/fd/{fd}", actor.tid))
            .or_else(|_| std::fs::read_link(format!("/proc/{}/fd/{fd}", actor.tgid)))
            .ok()
            .filter(|p| p.is_absolute())
    });
    match from_fd {
        Some(path) => Resolved { path, exact: true },
        None => Resolved {
            path: "<unreadable path>".into(),
            exact: false,
        },
    }
}

/// The violation behind a kernel kill the path-based policy did not see.
fn kernel_verdict(judged: &Judged) -> PolicyVerdict {
    if let Some(e) = &judged.exec {
        return PolicyVerdict::violation(
            Dimension::Exec,
            "exec.allow",
            format!(
                "{} is not a binary exec.allow names (judged by device and inode)",
                e.path
            ),
        );
    }
    let path = judged.file.as_ref().map_or("", |f| f.path.as_str());
    PolicyVerdict::violation(
        Dimension::Files,
        "files.deny",
        format!("{path} is a file files.deny names (same device and inode) under another name"),
    )
}

/// What descriptor `fd` of the acting thread refers to, from /proc (canonical: symlinks,
/// `..`, dirfds and /proc/self/root are already resolved by the kernel).
fn opened_path(actor: &Actor<'_>, fd: i64) -> Option<Resolved> {
    std::fs::read_link(format!("/proc/{}/fd/{fd}", actor.tid))
        .or_else(|_| std::fs::read_link(format!("/proc/{}/fd/{fd}", actor.tgid)))
        .ok()
        .filter(|p| p.is_absolute())
        .map(|path| Resolved { path, exact: true })
}

fn display_addr(addr: &IpAddr) -> String {
    addr.to_string()
}

/// open(2) flags -> the access the policy judges. `O_CREAT` is a create even when the file
/// existed (the caller asked to be allowed to create it).
pub fn classify_open(flags: u32) -> FileAccess {
    const O_ACCMODE: u32 = 0o3;
    const O_WRONLY: u32 = 0o1;
    const O_RDWR: u32 = 0o2;
    const O_CREAT: u32 = 0o100;
    const O_TRUNC: u32 = 0o1000;
    if flags & O_CREAT != 0 {
        FileAccess::Create
    } else if matches!(flags & O_ACCMODE, O_WRONLY | O_RDWR) || flags & O_TRUNC != 0 {
        FileAccess::Write
    } else {
        FileAccess::Read
    }
}

fn process_ref(h: &Header, proc: &ProcInfo, cgroup: String) -> ProcessRef {
    ProcessRef {
        pid: h.tgid,
        tid: h.pid,
        ppid: if h.ppid != 0 { h.ppid } else { proc.ppid },
        comm: h.comm.clone(),
        exe: proc
            .exe
            .as_deref()
            .map(|p: &Path| p.to_string_lossy().into_owned()),
        cgroup: Some(cgroup),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_classify() {
        assert_eq!(classify_open(0), FileAccess::Read);
        assert_eq!(classify_open(0o1), FileAccess::Write);
        assert_eq!(classify_open(0o2), FileAccess::Write);
        assert_eq!(classify_open(0o1000), FileAccess::Write);
        assert_eq!(classify_open(0o101), FileAccess::Create);
        assert_eq!(classify_open(0o200_000), FileAccess::Read); // O_DIRECTORY
    }
}
