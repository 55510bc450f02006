//! What the API shows of the records: a bounded ring of recent records, a broadcast to
//! followers (`GET /v1/events?follow=1`), per-task usage for reports and the metrics.
//!
//! Records reach it only after the audit log has them (see [`publish`]): the API never
//! reports a violation that is not on disk yet.

use std::{
    collections::VecDeque,
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::broadcast;

use crate::{
    observe::metrics::Metrics,
    observe::record::{Record, Verdict},
    observe::usage::Usage,
};

/// Records kept in memory for `GET /v1/events` without `follow`.
pub(crate) const RECENT: usize = 4096;
/// Records a follower may fall behind before it is told it skipped some.
const FOLLOW_BUFFER: usize = 4096;
/// Concurrent followers at most; more get `503 too_many_followers`.
pub(crate) const MAX_FOLLOWERS: usize = 16;

/// One published record: its JSON line and what the filters look at. Cloned as two
/// reference counts.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Shared by the entries of a batch's task (not a copy per record).
    pub(crate) task: Arc<str>,
    pub(crate) violation: bool,
    /// The record's JSON, without the newline.
    pub(crate) line: Line,
}

impl Entry {
    pub(crate) fn matches(&self, filter: &Filter) -> bool {
        (!filter.violations || self.violation)
            && filter.task.as_deref().is_none_or(|t| t == &*self.task)
    }
}

/// A record's JSON line: a part of the text of the batch it was written with, which the
/// audit log's writer hands over whole instead of copying each line out of it.
#[derive(Clone)]
pub(crate) struct Line {
    text: Arc<String>,
    start: usize,
    end: usize,
}

impl Line {
    /// The lines of a batch's text, from where each ends (its newline's offset); the first
    /// starts at `start`.
    fn split(text: Arc<String>, start: usize, ends: &[usize]) -> impl Iterator<Item = Self> {
        let starts = std::iter::once(start).chain(ends.iter().map(|e| e + 1));
        starts.zip(ends.iter()).map(move |(start, &end)| Self {
            text: Arc::clone(&text),
            start,
            end,
        })
    }
}

impl std::ops::Deref for Line {
    type Target = str;

    fn deref(&self) -> &str {
        // The offsets are those of ASCII newlines (or the text's ends): always in range
        // and on character boundaries.
        self.text.get(self.start..self.end).unwrap_or_default()
    }
}

impl From<String> for Line {
    fn from(text: String) -> Self {
        let end = text.len();
        Self {
            text: Arc::new(text),
            start: 0,
            end,
        }
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// A written batch's text, for [`publish`]: the native JSON lines as the audit log's
/// writer made them (a gap line first when `start` > 0).
pub(crate) struct Written {
    pub(crate) text: Vec<u8>,
    /// Where the first record's line starts.
    pub(crate) start: usize,
    /// Where each record's line ends (its newline's offset).
    pub(crate) ends: Vec<usize>,
}

/// `?violations=1&task=ID`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) violations: bool,
    pub(crate) task: Option<String>,
}

/// The recent ring and the followers' channel.
pub(crate) struct Feed {
    /// Entries in place, not each in an `Arc` of its own: that was an allocation and a
    /// free per record.
    recent: Mutex<VecDeque<Entry>>,
    tx: broadcast::Sender<Arc<Entry>>,
    followers: Arc<AtomicUsize>,
}

/// A follower's place; dropping it frees the place.
pub(crate) struct FollowerSlot(Arc<AtomicUsize>);

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Feed {
    fn new() -> Self {
        let (tx, _) = broadcast::channel(FOLLOW_BUFFER);
        Self {
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            tx,
            followers: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn push(&self, entry: Entry) {
        self.push_all(std::iter::once(entry));
    }

    /// Pushes a batch: the ring is locked once, not once per record, and the followers'
    /// channel (a lock per send) is skipped when nobody follows. One that starts following
    /// meanwhile gets the records from the next batch on, as if it had started then.
    fn push_all(&self, entries: impl Iterator<Item = Entry>) {
        let follow = self.tx.receiver_count() > 0;
        let mut sent = Vec::new();
        {
            let mut recent = lock(&self.recent);
            for entry in entries {
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                if follow {
                    sent.push(Arc::new(entry.clone()));
                }
                recent.push_back(entry);
            }
        }
        for entry in sent {
            // A follower gone since is not an error.
            let _ = self.tx.send(entry);
        }
    }

    /// The last `limit` recent records matching `filter`, oldest first.
    pub(crate) fn recent(&self, filter: &Filter, limit: usize) -> Vec<Entry> {
        let recent = lock(&self.recent);
        let mut out: Vec<Entry> = recent
            .iter()
            .rev()
            .filter(|e| e.matches(filter))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// A place for one more follower and its receiver, or None when all places are taken.
    pub(crate) fn follow(&self) -> Option<(FollowerSlot, broadcast::Receiver<Arc<Entry>>)> {
        let taken = self
            .followers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_FOLLOWERS).then_some(n + 1)
            });
        taken.ok().map(|_| {
            (
                FollowerSlot(Arc::clone(&self.followers)),
                self.tx.subscribe(),
            )
        })
    }

    pub(crate) fn followers(&self) -> usize {
        self.followers.load(Ordering::Acquire)
    }

    /// Fills the recent ring from the end of the audit log (at start, so that `events`
    /// shows what happened before a restart). Returns the number of records loaded.
    pub(crate) fn preload(&self, audit_log: &Path) -> usize {
        let Ok(mut file) = File::open(audit_log) else {
            return 0;
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let start = len.saturating_sub(PRELOAD_BYTES);
        let mut text = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut text).is_err() {
            return 0;
        }
        let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        // A cut first line is not a record.
        if start > 0 && !lines.is_empty() {
            lines.remove(0);
        }
        lines.retain(|l| !l.is_empty());
        let skip = lines.len().saturating_sub(RECENT);
        let mut loaded = 0;
        for line in lines.into_iter().skip(skip) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            // A log written with `--audit-format ocsf`: the API serves native records only.
            if crate::observe::ocsf::is_ocsf(&v) {
                continue;
            }
            let task = v
                .pointer("/agent/task")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .into();
            let violation =
                v.get("verdict").and_then(serde_json::Value::as_str) == Some("violation");
            self.push(Entry {
                task,
                violation,
                line: String::from_utf8_lossy(line).into_owned().into(),
            });
            loaded += 1;
        }
        loaded
    }
}

/// How much of the audit log's end `preload` reads.
const PRELOAD_BYTES: u64 = 8 * 1024 * 1024;

/// Everything derived from published records.
pub(crate) struct Observed {
    pub(crate) feed: Feed,
    pub(crate) usage: Usage,
    pub(crate) metrics: Metrics,
    /// The OpenTelemetry exporter's health (idle unless `--otlp-endpoint`).
    pub(crate) export: crate::observe::otlp::Health,
}

impl Observed {
    pub(crate) fn new() -> Self {
        Self {
            feed: Feed::new(),
            usage: Usage::default(),
            metrics: Metrics::new(),
            export: crate::observe::otlp::Health::default(),
        }
    }
}

impl Default for Observed {
    fn default() -> Self {
        Self::new()
    }
}

/// Called by the pipeline once a batch is in the audit log (`written`: the batch as
/// written, one JSON line per record; None when the write failed, so the records are only
/// counted).
pub(crate) fn publish(
    observed: &Observed,
    scopes: &dyn crate::observe::usage::Scopes,
    records: &[Record],
    written: Option<Written>,
) {
    for r in records {
        observed.metrics.record(r);
    }
    observed.usage.observe(scopes, records);
    let Some(Written { text, start, ends }) = written else {
        return;
    };
    // The writer makes UTF-8 (JSON of Rust strings), so the strict check passes: one check
    // of the whole batch, and the text is taken over, not copied; the lossy copy stays for
    // a batch that would not.
    let text = Arc::new(
        String::from_utf8(text)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    );
    observed.feed.push_all(
        records
            .iter()
            .zip(Line::split(text, start, &ends))
            .map(|(r, line)| {
                Entry {
                    // Shared with the record (and its task): not copied.
                    task: Arc::clone(&r.agent.task),
                    violation: r.verdict == Verdict::Violation,
                    line,
                }
            }),
    );
}

/// Called by the writer once a gap line (records lost) is in the audit log: `events`
/// shows it among the records, as one of no task.
pub(crate) fn publish_gap(observed: &Observed, line: &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    observed.feed.push(Entry {
        task: Arc::from(""),
        violation: false,
        line: String::from_utf8_lossy(line).into_owned().into(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(task: &str, violation: bool) -> Entry {
        Entry {
            task: task.into(),
            violation,
            line: format!("{{\"task\":\"{task}\"}}").into(),
        }
    }

    #[test]
    fn recent_is_bounded_and_filtered() {
        let feed = Feed::new();
        for i in 0..RECENT + 10 {
            feed.push(entry(if i % 2 == 0 { "a" } else { "b" }, i % 3 == 0));
        }
        assert_eq!(feed.recent(&Filter::default(), usize::MAX).len(), RECENT);
        let only_a = Filter {
            task: Some("a".into()),
            ..Filter::default()
        };
        let got = feed.recent(&only_a, 5);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|e| &*e.task == "a"));
        let violations = Filter {
            violations: true,
            ..Filter::default()
        };
        assert!(
            feed.recent(&violations, usize::MAX)
                .iter()
                .all(|e| e.violation)
        );
    }

    #[test]
    fn preload_takes_the_last_records_of_the_audit_log() {
        use std::fmt::Write as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut text = String::new();
        for i in 0..RECENT + 5 {
            let verdict = if i % 2 == 0 { "allowed" } else { "violation" };
            let _ = writeln!(
                text,
                "{{\"n\":{i},\"verdict\":\"{verdict}\",\"agent\":{{\"task\":\"t{}\"}}}}",
                i % 3
            );
        }
        std::fs::write(&path, text).expect("write");
        let feed = Feed::new();
        assert_eq!(feed.preload(&path), RECENT);
        let all = feed.recent(&Filter::default(), usize::MAX);
        assert!(all[0].line.contains("\"n\":5,"), "{}", &*all[0].line);
        let t1 = Filter {
            task: Some("t1".into()),
            violations: true,
        };
        assert!(!feed.recent(&t1, usize::MAX).is_empty());
        assert_eq!(Feed::new().preload(&dir.path().join("missing")), 0);
    }

    #[test]
    fn followers_are_capped_and_released() {
        let feed = Feed::new();
        let slots: Vec<_> = (0..MAX_FOLLOWERS).map_while(|_| feed.follow()).collect();
        assert_eq!(slots.len(), MAX_FOLLOWERS);
        assert!(feed.follow().is_none());
        drop(slots);
        assert_eq!(feed.followers(), 0);
        let (_slot, mut rx) = feed.follow().expect("a place");
        feed.push(entry("t", true));
        assert_eq!(&*rx.try_recv().expect("record").task, "t");
    }
}
