//! Who gets a connection slot, who waits for one and who is turned away, so that a burst is
//! queued rather than reset and one client cannot hold every slot.
//!
//! Every connection has a [`Holder`]: root's own tools, another uid (a member of the socket
//! group), or an agent (any uid; also a peer that cannot be verified: both are refused by
//! every request anyway). Three pools are shared out by the same [`Caps`] rule:
//!
//! - `OPEN`: connections the daemon holds in all (served, waiting, or being answered 503);
//!   past it a connection is closed at accept;
//! - `SLOTS`: connections served at once (hyper reads and answers them);
//! - `WAITING`: connections waiting, in order, for a slot (at most [`super::QUEUE_WAIT`],
//!   then `503 busy`); past it a connection is answered `503 busy` at once.
//!
//! Root (outside any agent) may use a whole pool. The others together may not use the part
//! reserved for root, one uid at most a share, agents much less: a member of the socket
//! group that hogs the socket slows itself down, not `agent-monitor status` or `exec` run
//! by root.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

/// Whose connection this is, for the shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// uid 0, outside any agent: root's own tools (`status`, `exec`, probes).
    Root,
    /// Any other uid, outside any agent (a member of the socket group).
    Uid(u32),
    /// A process inside an agent's cgroup, whatever its uid, or a peer the kernel gave no
    /// credentials for or that is gone: its requests are refused (403), it gets a few slots.
    Agent,
}

impl Holder {
    /// `uid` from `SO_PEERCRED`; `agent`: whether the peer runs inside an agent's cgroup
    /// (None: it could not be told).
    pub(crate) fn of(uid: Option<u32>, agent: Option<bool>) -> Self {
        match (uid, agent) {
            (Some(0), Some(false)) => Self::Root,
            (Some(uid), Some(false)) => Self::Uid(uid),
            _ => Self::Agent,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("root"),
            Self::Uid(uid) => write!(f, "uid {uid}"),
            Self::Agent => f.write_str("an agent"),
        }
    }
}

/// How much of a pool each holder may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// The whole pool (root may use all of it).
    pub(crate) total: usize,
    /// Everyone but root together (the rest is root's reserve).
    pub(crate) others: usize,
    /// One uid other than root.
    pub(crate) uid: usize,
    /// Agents together.
    pub(crate) agents: usize,
}

/// Connections held in all.
pub(crate) const OPEN: Caps = Caps {
    total: 2048,
    others: 1536,
    uid: 512,
    agents: 64,
};
/// Connections served at once.
pub(crate) const SLOTS: Caps = Caps {
    total: 64,
    others: 56,
    uid: 32,
    agents: 4,
};
/// Connections waiting for a slot.
pub(crate) const WAITING: Caps = Caps {
    total: 1024,
    others: 768,
    uid: 256,
    agents: 16,
};

/// What one pool holds, by holder.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    others: usize,
    agents: usize,
    uids: HashMap<u32, usize>,
}

impl Counts {
    fn admits(&self, holder: Holder, caps: &Caps) -> bool {
        if self.total >= caps.total {
            return false;
        }
        match holder {
            Holder::Root => true,
            Holder::Uid(uid) => {
                self.others < caps.others && self.uids.get(&uid).copied().unwrap_or(0) < caps.uid
            }
            Holder::Agent => self.others < caps.others && self.agents < caps.agents,
        }
    }

    fn add(&mut self, holder: Holder) {
        self.total += 1;
        match holder {
            Holder::Root => {}
            Holder::Uid(uid) => {
                self.others += 1;
                *self.uids.entry(uid).or_default() += 1;
            }
            Holder::Agent => {
                self.others += 1;
                self.agents += 1;
            }
        }
    }

    fn remove(&mut self, holder: Holder) {
        self.total = self.total.saturating_sub(1);
        match holder {
            Holder::Root => {}
            Holder::Uid(uid) => {
                self.others = self.others.saturating_sub(1);
                if let Some(n) = self.uids.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.uids.remove(&uid);
                    }
                }
            }
            Holder::Agent => {
                self.others = self.others.saturating_sub(1);
                self.agents = self.agents.saturating_sub(1);
            }
        }
    }
}

struct Waiter {
    id: u64,
    holder: Holder,
    /// Fired (under the lock, the slot already counted for it) when a slot is handed over.
    given: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    open: Counts,
    slots: Counts,
    waiting: Counts,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

impl State {
    /// A slot of `holder` is free again: it goes to the first waiter whose share admits it.
    fn release_slot(&mut self, holder: Holder) {
        self.slots.remove(holder);
        while let Some(i) = self
            .queue
            .iter()
            .position(|w| self.slots.admits(w.holder, &SLOTS))
        {
            let Some(waiter) = self.queue.remove(i) else {
                return;
            };
            self.waiting.remove(waiter.holder);
            self.slots.add(waiter.holder);
            if waiter.given.send(()).is_ok() {
                return;
            }
            // Its connection is gone: the slot goes to the next one.
            self.slots.remove(waiter.holder);
        }
    }

    /// Takes waiter `id` out of the queue; false when it was handed a slot already.
    fn leave_queue(&mut self, id: u64) -> bool {
        let Some(i) = self.queue.iter().position(|w| w.id == id) else {
            return false;
        };
        if let Some(waiter) = self.queue.remove(i) {
            self.waiting.remove(waiter.holder);
        }
        true
    }
}

/// Why a connection gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// The holder's share of the queue was full: answered 503 at once.
    QueueFull,
    /// It waited [`super::QUEUE_WAIT`] without a slot becoming free for it.
    Waited,
}

#[derive(Default)]
pub(crate) struct Admission {
    state: Mutex<State>,
}

impl Admission {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place among the open connections, or None: the holder's share of them is used up.
    pub(crate) fn open(self: &Arc<Self>, holder: Holder) -> Option<OpenGuard> {
        let mut state = self.lock();
        if !state.open.admits(holder, &OPEN) {
            return None;
        }
        state.open.add(holder);
        Some(OpenGuard {
            admission: Arc::clone(self),
            holder,
        })
    }

    /// A slot at once when the holder's share has one free, else a place in the queue until
    /// one is handed over or `wait` passes.
    pub(crate) async fn slot(
        self: &Arc<Self>,
        holder: Holder,
        wait: Duration,
    ) -> Result<SlotGuard, Busy> {
        let (id, given) = {
            let mut state = self.lock();
            // A slot freed while others wait goes to them first (`release_slot`), so a free
            // one here is one no waiter may take.
            if state.slots.admits(holder, &SLOTS) {
                state.slots.add(holder);
                return Ok(self.slot_guard(holder));
            }
            if !state.waiting.admits(holder, &WAITING) {
                return Err(Busy::QueueFull);
            }
            let id = state.next_id;
            state.next_id += 1;
            let (tx, rx) = oneshot::channel();
            state.waiting.add(holder);
            state.queue.push_back(Waiter {
                id,
                holder,
                given: tx,
            });
            (id, rx)
        };
        let mut ticket = Ticket {
            admission: Arc::clone(self),
            id,
            holder,
            settled: false,
        };
        let handed = matches!(tokio::time::timeout(wait, given).await, Ok(Ok(())));
        ticket.settled = true;
        // Timed out: still queued, or handed a slot just now.
        if handed || !self.lock().leave_queue(id) {
            return Ok(self.slot_guard(holder));
        }
        Err(Busy::Waited)
    }

    fn slot_guard(self: &Arc<Self>, holder: Holder) -> SlotGuard {
        SlotGuard {
            admission: Arc::clone(self),
            holder,
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.open.total, state.slots.total, state.waiting.total)
    }
}

/// One of the open connections; given back on drop.
pub(crate) struct OpenGuard {
    admission: Arc<Admission>,
    holder: Holder,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.admission.lock().open.remove(self.holder);
    }
}

/// A slot; on drop it goes to the first waiter its share admits.
pub(crate) struct SlotGuard {
    admission: Arc<Admission>,
    holder: Holder,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.admission.lock().release_slot(self.holder);
    }
}

/// A place in the queue: a waiter dropped while waiting (the daemon stops) leaves it, and
/// gives back a slot handed to it meanwhile.
struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    holder: Holder,
    settled: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.admission.lock();
        if !state.leave_queue(self.id) {
            state.release_slot(self.holder);
        }
    }
}

/// Connections refused or cut off since the last warning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Answered `503 busy` after waiting for a slot.
    pub(crate) waited: u64,
    /// Answered `503 busy` at once: the holder's share of the queue was full.
    pub(crate) queue_full: u64,
    /// Closed at accept: the holder's share of open connections was used up.
    pub(crate) closed: u64,
    /// Closed without a complete request head within [`super::HEAD_TIMEOUT`].
    pub(crate) slow: u64,
}

impl Tally {
    fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// What the daemon refused, as one warning per `interval` at most (the first at once), with
/// the counts since the last one.
pub(crate) struct Refusals {
    interval: Duration,
    state: Mutex<RefusalState>,
}

#[derive(Default)]
struct RefusalState {
    tally: Tally,
    last_warning: Option<Instant>,
    last_holder: Option<Holder>,
}

/// One kind of refusal, for [`Refusals::note`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    Busy(Busy),
    Closed,
    Slow,
}

impl Refusals {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RefusalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one refusal; returns what to warn about when a warning is due.
    pub(crate) fn note(&self, refused: Refused, holder: Holder, now: Instant) -> Option<Warning> {
        let mut state = self.lock();
        let tally = &mut state.tally;
        match refused {
            Refused::Busy(Busy::Waited) => tally.waited += 1,
            Refused::Busy(Busy::QueueFull) => tally.queue_full += 1,
            Refused::Closed => tally.closed += 1,
            Refused::Slow => tally.slow += 1,
        }
        state.last_holder = Some(holder);
        self.due(&mut state, now)
    }

    /// What is still untold once the interval has passed (called on a timer).
    pub(crate) fn flush(&self, now: Instant) -> Option<Warning> {
        let mut state = self.lock();
        self.due(&mut state, now)
    }

    fn due(&self, state: &mut RefusalState, now: Instant) -> Option<Warning> {
        let quiet = state
            .last_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if !quiet || !state.tally.any() {
            return None;
        }
        let warning = Warning {
            tally: std::mem::take(&mut state.tally),
            last_holder: state.last_holder.take(),
        };
        state.last_warning = Some(now);
        Some(warning)
    }
}

/// One warning's worth of refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Warning {
    pub(crate) tally: Tally,
    pub(crate) last_holder: Option<Holder>,
}

#[cfg(test)]
mod tests;
