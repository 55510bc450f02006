//! The audit log's writer: a thread of its own behind a bounded queue, so that a verdict
//! never waits for the disk. The pipeline judges an event, resumes or kills a held process
//! and only then queues the event's record here; `write(2)` and `fdatasync` (a slow,
//! stalled or full disk) hold up this thread alone.
//!
//! When the disk falls behind, records wait in memory, at most [`QUEUE_RECORDS`] of them
//! (queued and being retried together). Past that the pipeline does not wait: a record
//! that does not fit is dropped and counted (`audit_records_dropped`, logged with the
//! number lost when the writer catches up), never silently. A failed write is retried with
//! a growing pause (up to [`RETRY_MAX`]), only for the records that did not reach the file,
//! and counted in `audit_write_errors`; the records appear in the log, the API and the
//! metrics once it succeeds. Only records that reached the file count in `records`.
//!
//! Records dropped anywhere (this queue, the queue of records made outside the pipeline,
//! the resolver's) are told of in the log itself: the next write starts with a `gap` line
//! saying how many were lost and between which times (see `record::Gap`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    control::state::{Shared, Stats},
    observe::{
        record::{Gap, Record},
        sink::Sinks,
    },
};

/// Records waiting for the disk at most (about 1 KiB each in memory): a stalled disk costs
/// the daemon a bounded amount of memory, and records beyond it are dropped and counted.
pub(crate) const QUEUE_RECORDS: usize = 16 * 1024;

/// The longest pause between two attempts at a failing write.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How long the daemon's exit waits for the writer to finish what is queued.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Emptied batches kept for the pipeline to fill again, at most, and the most records one
/// may hold room for: a batch of `pipeline::BATCH` records is several hundred KiB, which
/// allocating anew for every batch cost page faults; a burst's larger ones are freed.
const SPARE_BATCHES: usize = 2;
const SPARE_RECORDS: usize = 2 * 1024;

/// Emptied batches going back from the writer thread to the pipeline.
#[derive(Default)]
struct Spare(Mutex<Vec<Vec<Record>>>);

impl Spare {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Record>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `batch` (emptied) unless enough are kept or it is a burst's.
    fn put(&self, mut batch: Vec<Record>) {
        if batch.capacity() > SPARE_RECORDS {
            return;
        }
        batch.clear();
        let mut spare = self.lock();
        if spare.len() < SPARE_BATCHES {
            spare.push(batch);
        }
    }
}

/// The pipeline's end of the queue. Dropping it lets the thread finish what is queued
/// and end.
pub(crate) struct Writer {
    tx: mpsc::Sender<Vec<Record>>,
    /// Records queued or being retried (the queue's bound, shared with the thread).
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    spare: Arc<Spare>,
}

/// The writer thread, for the daemon to wait for at exit.
pub(crate) struct WriterThread {
    done: mpsc::Receiver<()>,
}

impl Writer {
    /// Starts the writer thread on `sinks`.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        sinks: Sinks,
    ) -> std::io::Result<(Self, WriterThread)> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::sync_channel(1);
        let queued = Arc::new(AtomicUsize::new(0));
        let spare = Arc::new(Spare::default());
        let thread = Thread {
            rx,
            sinks,
            queued: Arc::clone(&queued),
            shared: Arc::clone(&shared),
            spare: Arc::clone(&spare),
            pending: Vec::new(),
            failing_since: None,
            lost_told: 0,
            told_until: SystemTime::now(),
        };
        thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                thread.run();
                let _ = done_tx.send(());
            })?;
        Ok((
            Self {
                tx,
                queued,
                shared,
                spare,
            },
            WriterThread { done },
        ))
    }

    /// An empty batch to gather the next records in: one the writer is done with, or a new
    /// one with room for `records`.
    pub(crate) fn empty_batch(&self, records: usize) -> Vec<Record> {
        let mut batch = self.spare.lock().pop().unwrap_or_default();
        batch.reserve(records);
        batch
    }

    /// Queues a batch for the audit log; never waits. Records that do not fit in the
    /// queue are dropped and counted.
    pub(crate) fn submit(&self, mut batch: Vec<Record>) {
        let room = QUEUE_RECORDS.saturating_sub(self.queued.load(Ordering::Acquire));
        if batch.len() > room {
            let lost = batch.len() - room;
            batch.truncate(room);
            Stats::add(&self.shared.stats.audit_records_dropped, lost as u64);
        }
        if batch.is_empty() {
            return;
        }
        self.queued.fetch_add(batch.len(), Ordering::AcqRel);
        let n = batch.len();
        if self.tx.send(batch).is_err() {
            // The thread is gone (it does not end before this end is dropped).
            self.queued.fetch_sub(n, Ordering::AcqRel);
            Stats::add(&self.shared.stats.audit_records_dropped, n as u64);
        }
    }
}

impl WriterThread {
    /// Waits (bounded) until the thread has written what was queued before its `Writer`
    /// was dropped.
    pub(crate) fn join(self) {
        if self.done.recv_timeout(EXIT_WAIT).is_err() {
            tracing::error!(
                "the audit log writer did not finish within {}s; records still queued are lost",
                EXIT_WAIT.as_secs()
            );
        }
    }
}

struct Thread {
    rx: mpsc::Receiver<Vec<Record>>,
    sinks: Sinks,
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    spare: Arc<Spare>,
    /// Records taken off the queue and not yet in the log, oldest first.
    pending: Vec<Record>,
    /// When the current run of failed writes began.
    failing_since: Option<Instant>,
    /// Records lost (dropped and counted) that gap lines in the log have told of.
    lost_told: u64,
    /// Every record lost before this is told of: the last check that found no new loss,
    /// or the last gap line written.
    told_until: SystemTime,
}

impl Thread {
    fn run(mut self) {
        let mut retry = Duration::ZERO;
        let mut open = true;
        while open || !self.pending.is_empty() {
            // Wait for records, or for the next attempt at those that failed.
            let next = if self.pending.is_empty() {
                // Records lost while the last batch was written are told of now, not
                // only with the next record.
                if self.lost() > self.lost_told {
                    self.write();
                }
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else if open {
                self.rx.recv_timeout(retry)
            } else {
                thread::sleep(retry);
                Err(RecvTimeoutError::Disconnected)
            };
            match next {
                // The batch itself when nothing waits: records are not copied.
                Ok(batch) if self.pending.is_empty() => self.pending = batch,
                Ok(mut batch) => {
                    self.pending.append(&mut batch);
                    self.spare.put(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            // Everything queued meanwhile goes in the same write (and the same sync).
            while let Ok(mut batch) = self.rx.try_recv() {
                self.pending.append(&mut batch);
                self.spare.put(batch);
            }
            if self.pending.is_empty() {
                continue;
            }
            if self.write() {
                retry = Duration::ZERO;
            } else if !open && self.failing_since.is_some_and(|t| t.elapsed() >= EXIT_WAIT) {
                tracing::error!(
                    records = self.pending.len(),
                    "the daemon is stopping and the audit log still fails: records lost"
                );
                Stats::add(
                    &self.shared.stats.audit_records_dropped,
                    self.pending.len() as u64,
                );
                return;
            } else {
                retry = (retry * 2).clamp(Duration::from_millis(50), RETRY_MAX);
            }
        }
        // Records lost after the last write are told of before the daemon goes.
        if self.lost() > self.lost_told {
            self.write();
        }
    }

    /// Records dropped so far, wherever they were.
    fn lost(&self) -> u64 {
        self.shared
            .stats
            .audit_records_dropped
            .load(Ordering::Relaxed)
            + self.shared.dns.records_dropped()
    }

    /// The gap line the next write starts with (and the loss count it tells up to) when
    /// records were lost since the last one.
    fn gap(&mut self, now: SystemTime) -> Option<(Gap, u64)> {
        let lost = self.lost();
        if lost <= self.lost_told {
            self.told_until = now;
            return None;
        }
        Some((Gap::new(lost - self.lost_told, self.told_until, now), lost))
    }

    /// Writes what is pending; publishes what reached the file. Returns whether all did.
    fn write(&mut self) -> bool {
        let now = SystemTime::now();
        let gap = self.gap(now);
        let result = self
            .sinks
            .write(gap.as_ref().map(|(g, _)| g), &self.pending);
        let done = match &result {
            Ok(()) => self.pending.len(),
            Err(_) => self.sinks.appended(),
        };
        if let Some((g, lost)) = &gap
            && self.sinks.gap_appended()
        {
            self.lost_told = *lost;
            self.told_until = now;
            Stats::add(&self.shared.stats.records, 1);
            if let Some(line) = self.sinks.last_gap() {
                crate::observe::feed::publish_gap(&self.shared.observed, line);
            }
            tracing::warn!(
                lost = g.lost,
                since = %g.since,
                "the audit log fell behind: records were dropped (counted, and a gap record in the log says so)"
            );
        }
        if done > 0 {
            // Counted as written only now that they are in the file.
            Stats::add(&self.shared.stats.records, done as u64);
            // Only now (written, and synced when it holds a violation) may the API show
            // them.
            crate::observe::feed::publish(
                &self.shared.observed,
                &*self.shared,
                &self.pending[..done],
                Some(self.sinks.take_written()),
            );
            self.pending.drain(..done);
            self.queued.fetch_sub(done, Ordering::AcqRel);
        }
        match result {
            Ok(()) => {
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        after_ms = since.elapsed().as_millis(),
                        "audit log writes succeed again"
                    );
                }
                // A burst must not keep its memory (a batch of usual size is used again).
                self.spare.put(std::mem::take(&mut self.pending));
                true
            }
            Err(e) => {
                Stats::add(&self.shared.stats.sink_errors, 1);
                if self.failing_since.is_none() {
                    self.failing_since = Some(Instant::now());
                    tracing::error!(error = %e, records = self.pending.len(), "audit log write failed; retrying");
                } else {
                    tracing::debug!(error = %e, records = self.pending.len(), "audit log write failed again");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::record::{Kind, Verdict};

    #[test]
    fn spare_batches_come_back_empty_and_are_bounded() {
        let spare = Spare::default();
        let batch = vec![Record::sample(Kind::File, Verdict::Allowed); 3];
        spare.put(batch);
        {
            let kept = spare.lock();
            assert_eq!(kept.len(), 1);
            assert!(kept[0].is_empty(), "a kept batch holds no record");
            assert!(kept[0].capacity() >= 3, "and keeps its room");
        }
        // A burst's batch is freed, not kept.
        spare.put(Vec::with_capacity(SPARE_RECORDS + 1));
        assert_eq!(spare.lock().len(), 1);
        for _ in 0..SPARE_BATCHES + 2 {
            spare.put(Vec::with_capacity(8));
        }
        assert_eq!(spare.lock().len(), SPARE_BATCHES);
    }
}
