//! Reads the ring buffers: tokio `AsyncFd` wakes the task when records are ready; each wake
//! drains everything available (verdicts early: a held process is waiting on them), then
//! the batch's records are written in one go.
//!
//! The kernel wakes this task at most once per millisecond per CPU for ordinary events
//! (verdicts always wake it). So after every drain that found records it drains again
//! `FOLLOW_UP` later, until a drain finds none: an event written without a wakeup waits at
//! most that long, and an idle daemon is not woken at all.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch, time::Instant};

use super::{
    decoder::{DecodeError, Event, decode},
    maps::Rings,
};

/// Where the reader hands what it read.
pub(crate) trait Consumer {
    fn event(&mut self, event: Event);
    /// A record that did not decode (skipped).
    fn undecodable(&mut self, error: &DecodeError);
    /// Whether enough is pending that it should be written now.
    fn batch_full(&self) -> bool;
    /// Writes what is pending.
    fn flush(&mut self);
}

pub(crate) async fn run(
    rings: Rings,
    mut pipeline: impl Consumer,
    mut stop: watch::Receiver<bool>,
) {
    let Rings { events, verdicts } = rings;
    // SAFETY: each RingBuf owns its map fd for as long as its AsyncFd owns it, and always
    // reports that same fd.
    let registered = unsafe { (AsyncFd::register(events), AsyncFd::register(verdicts)) };
    let (mut events, mut verdicts) = match registered {
        (Ok(e), Ok(v)) => (e, v),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot poll the event ring buffers; no events will be read");
            return;
        }
    };
    // Lifecycle notices (revocations, degraded agents) are written even when no event comes.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // When to drain again without a wakeup (None: wait for one).
    let mut follow_up: Option<Instant> = None;
    loop {
        let deadline = follow_up.unwrap_or_else(Instant::now);
        // Whether the kernel woke us (as opposed to the follow-up timer).
        let woke = tokio::select! {
            _ = tick.tick() => {
                pipeline.flush();
                continue;
            }
            () = tokio::time::sleep_until(deadline), if follow_up.is_some() => false,
            guard = verdicts.readable_mut() => match guard {
                Ok(mut guard) => { guard.clear_ready(); true }
                Err(e) => {
                    tracing::error!(error = %e, "polling the verdict ring buffer failed");
                    return;
                }
            },
            guard = events.readable_mut() => match guard {
                Ok(mut guard) => { guard.clear_ready(); true }
                Err(e) => {
                    tracing::error!(error = %e, "polling the event ring buffer failed");
                    return;
                }
            },
            _ = stop.changed() => break,
        };
        // Readiness is cleared before the drain, so a record written meanwhile wakes us again.
        let n = drain_both(events.get_mut(), verdicts.get_mut(), &mut pipeline);
        pipeline.flush();
        // After a wakeup, records written without one may follow within the interval.
        follow_up = (woke || n > 0).then(|| Instant::now() + FOLLOW_UP);
    }
    // Whatever the kernel wrote before the stop is still recorded.
    drain_both(events.get_mut(), verdicts.get_mut(), &mut pipeline);
    pipeline.flush();
}

/// Longer than the kernel's wakeup interval (`WAKE_INTERVAL_NS`, 1 ms), so that a drain
/// that finds nothing comes after the last event that did not wake the daemon.
pub(crate) const FOLLOW_UP: Duration = Duration::from_millis(2);

/// Ordinary events read before a verdict: the process's fork, exec and chdir that came before
/// a held operation are then known when it is judged and recorded (an ordinary event may
/// wait up to `FOLLOW_UP` in EVENTS, and the two rings are read separately). Bounded, so
/// that a flood of ordinary events cannot hold a verdict up by more than this many events.
const BEFORE_VERDICT: usize = 1024;

/// Reads both rings: each verdict once the ordinary events written before it are handled,
/// then the rest of the ordinary events.
fn drain_both(
    events: &mut RingBuf<MapData>,
    verdicts: &mut RingBuf<MapData>,
    pipeline: &mut impl Consumer,
) -> usize {
    let mut n = 0;
    while let Some(item) = verdicts.next() {
        let verdict = decode(&item);
        drop(item);
        // Taken out of its ring first: whatever the kernel committed to EVENTS before it
        // (in the same process, everything) is visible now.
        n += 1 + drain(events, BEFORE_VERDICT, pipeline);
        handle(verdict, pipeline);
    }
    n + drain(events, usize::MAX, pipeline)
}

/// Decodes and handles up to `limit` records of a ring; returns how many it read.
fn drain(ring: &mut RingBuf<MapData>, limit: usize, pipeline: &mut impl Consumer) -> usize {
    let mut n = 0;
    while n < limit
        && let Some(item) = ring.next()
    {
        n += 1;
        let event = decode(&item);
        drop(item);
        handle(event, pipeline);
    }
    n
}

/// One decoded record to the consumer (also what `bench-pipeline` times).
pub(crate) fn handle(event: Result<Event, DecodeError>, pipeline: &mut impl Consumer) {
    match event {
        Ok(event) => {
            pipeline.event(event);
            if pipeline.batch_full() {
                pipeline.flush();
            }
        }
        Err(e) => pipeline.undecodable(&e),
    }
}
