//! Reads the ring buffers: tokio `AsyncFd` wakes the task when records are ready; each wake
//! drains everything available (verdicts early: a held process is waiting on them); the
//! records go to the writer in batches, once a burst ends or every few milliseconds.
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
    /// Whether what is pending should be written now, not at the end of the burst.
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
    let mut flushed_at = Instant::now();
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
        // A drain that finds nothing ends a burst: what is pending is written now. Within a
        // burst the writer gets the records every `FLUSH_EVERY` (a violation's at once): a
        // handoff per drain (a wakeup of its thread) costs more than the records when they
        // come one per wakeup, as allowed held opens do.
        if n == 0 || flushed_at.elapsed() >= FLUSH_EVERY {
            pipeline.flush();
            flushed_at = Instant::now();
        }
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

/// How long records may wait in the reader while events keep coming; a full batch goes at
/// once.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// Ordinary events read before a verdict: the process's fork, exec and chdir that came before
/// a held operation are then known when it is judged and recorded (an ordinary event may
/// wait up to `FOLLOW_UP` in EVENTS, and the two rings are read separately). Bounded, so
/// that a flood of ordinary events cannot hold a verdict up by more than this many events.
const BEFORE_VERDICT: usize = 1024;

/// A decoded record.
type Decoded = Result<Event, DecodeError>;

/// Where records come from: a ring buffer, or a queue in the tests.
trait Source {
    fn next_record(&mut self) -> Option<Decoded>;
}

impl Source for RingBuf<MapData> {
    fn next_record(&mut self) -> Option<Decoded> {
        let item = self.next()?;
        Some(decode(&item))
    }
}

/// Reads both rings in the order the kernel wrote them: each verdict once the ordinary
/// events written before it are handled, then the rest of the ordinary events. An ordinary
/// event written after the verdict waits until the verdict is handled: the exit of a process
/// the verdict's own kill ended must not drop its cwd and image before the verdict is judged.
fn drain_both(
    events: &mut impl Source,
    verdicts: &mut impl Source,
    pipeline: &mut impl Consumer,
) -> usize {
    // The ordinary event read while looking for those written before a verdict, but
    // written after it; the last drain handles it at the latest.
    let mut ahead = None;
    let mut n = 0;
    // Taken out of its ring first: whatever the kernel committed to EVENTS before it (in the
    // same process, everything) is visible now.
    while let Some(verdict) = verdicts.next_record() {
        let until = time_of(&verdict);
        n += 1 + drain(events, &mut ahead, until, BEFORE_VERDICT, pipeline);
        handle(verdict, pipeline);
    }
    n + drain(events, &mut ahead, None, usize::MAX, pipeline)
}

/// When the kernel stamped a record; None for records without a header (cgroup events,
/// undecodable ones), which never wait.
fn time_of(record: &Decoded) -> Option<u64> {
    record.as_ref().ok()?.header().map(|h| h.time_ns)
}

/// Handles up to `limit` records of a ring (the one in `ahead` first) stamped no later than
/// `until`; the first later one is kept in `ahead`. Returns how many it took from the ring.
fn drain(
    ring: &mut impl Source,
    ahead: &mut Option<Decoded>,
    until: Option<u64>,
    limit: usize,
    pipeline: &mut impl Consumer,
) -> usize {
    let mut n = 0;
    while n < limit {
        let record = if let Some(record) = ahead.take() {
            record
        } else if let Some(record) = ring.next_record() {
            n += 1;
            record
        } else {
            break;
        };
        if let (Some(until), Some(time)) = (until, time_of(&record))
            && time > until
        {
            *ahead = Some(record);
            break;
        }
        handle(record, pipeline);
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::kernel::decoder::{Header, KernelDid};

    impl Source for VecDeque<Decoded> {
        fn next_record(&mut self) -> Option<Decoded> {
            self.pop_front()
        }
    }

    /// The times of the records handled, in order (0: a record without one).
    #[derive(Default)]
    struct Seen(Vec<u64>);

    impl Consumer for Seen {
        fn event(&mut self, event: Event) {
            self.0.push(event.header().map_or(0, |h| h.time_ns));
        }
        fn undecodable(&mut self, _: &DecodeError) {
            self.0.push(0);
        }
        fn batch_full(&self) -> bool {
            false
        }
        fn flush(&mut self) {}
    }

    fn exit(time_ns: u64) -> Event {
        Event::Exit {
            header: Header {
                agent: 1,
                time_ns,
                pid: 7,
                tgid: 7,
                ppid: 1,
                truncated: false,
                path_fault: false,
                kernel: KernelDid::default(),
                cgroup_id: 0,
                comm: crate::observe::record::ShortStr::new(),
            },
        }
    }

    #[test]
    fn a_verdict_is_handled_between_the_events_written_before_and_after_it() {
        // A chdir (1), an open killed for a denied file (2, a verdict), the killed
        // process's exit (3), and another later event (4).
        let mut events: VecDeque<Decoded> = [1, 3, 4].into_iter().map(|t| Ok(exit(t))).collect();
        let mut verdicts: VecDeque<Decoded> = [2].into_iter().map(|t| Ok(exit(t))).collect();
        let mut seen = Seen::default();
        let n = drain_both(&mut events, &mut verdicts, &mut seen);
        assert_eq!(seen.0, [1, 2, 3, 4]);
        assert_eq!(n, 4);
        assert!(events.is_empty() && verdicts.is_empty());
    }

    #[test]
    fn an_event_after_the_verdict_waits_for_a_later_drain() {
        let mut events: VecDeque<Decoded> = [5].into_iter().map(|t| Ok(exit(t))).collect();
        let (mut ahead, mut seen) = (None, Seen::default());
        // The verdict's drain stops at the later event and keeps it.
        drain(&mut events, &mut ahead, Some(2), BEFORE_VERDICT, &mut seen);
        assert!(seen.0.is_empty());
        assert!(ahead.is_some());
        // A later verdict's drain lets it through first.
        drain(&mut events, &mut ahead, Some(6), BEFORE_VERDICT, &mut seen);
        assert_eq!(seen.0, [5]);
        assert!(ahead.is_none());
    }

    #[test]
    fn records_without_a_time_never_wait() {
        let mut events: VecDeque<Decoded> = VecDeque::from([
            Err(DecodeError::UnknownKind(99)),
            Ok(Event::CgroupRmdir { id: 3 }),
            Ok(exit(9)),
        ]);
        let mut verdicts: VecDeque<Decoded> = [2].into_iter().map(|t| Ok(exit(t))).collect();
        let mut seen = Seen::default();
        drain_both(&mut events, &mut verdicts, &mut seen);
        assert_eq!(seen.0, [0, 0, 2, 9]);
    }
}
