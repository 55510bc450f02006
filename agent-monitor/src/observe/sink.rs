//! Where records go: the append-only audit log and, optionally, stdout.
//!
//! Durability: a batch holding a violation is synced (`fdatasync`) before `write` returns,
//! and the pipeline's writer thread publishes records to the API only after that (see
//! `feed::publish`). A failed write leaves no partial line behind (the file is cut back to
//! its last whole line) and says how many of the batch's records did reach the file
//! ([`Sinks::appended`]), so that the writer retries only the others. Should the cut itself
//! fail, nothing more is written until it succeeds; a file found ending in a partial line
//! at start (a crash mid-write) is cut back to its last whole line too. A batch may start
//! with a `gap` line ([`Gap`]: records that could not be written).
//! Rotation is size-based: before a line would take the file past `max_bytes`, the file is
//! synced and renamed to `<path>.1` (older ones shift to `.2` .. `.keep`, the oldest is
//! removed) and a new file is started. One writer (the pipeline) writes whole lines, so no
//! line is split or lost across a rotation.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::observe::{
    feed::Written,
    ocsf::{self, AuditFormat},
    record::{Gap, Record, Shared, Verdict, write_record},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    #[error("opening audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing audit log {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rotating audit log {path}: {source}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StdoutFormat {
    /// Records are not printed.
    None,
    /// One readable line per record.
    Text,
    /// One JSON object per line.
    Json,
}

/// Size-based rotation of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// Rotate before the file would grow past this; 0 never rotates.
    pub(crate) max_bytes: u64,
    /// Rotated files kept (`<path>.1` .. `<path>.<keep>`); 0 keeps none.
    pub(crate) keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
        }
    }
}

pub(crate) struct Sinks {
    audit: File,
    audit_path: PathBuf,
    /// Bytes in the current file.
    size: u64,
    rotation: Rotation,
    stdout: StdoutFormat,
    buf: Vec<u8>,
    /// Where each record's line of the last batch ends in `buf` (its newline's offset):
    /// the API takes the lines without scanning for them again.
    ends: Vec<usize>,
    /// Bytes of `buf` appended to a file by the last `write` (whole lines).
    appended: usize,
    /// Bytes of `buf` taken by the last `write`'s gap line (0: none).
    gap_len: usize,
    /// The file may end in part of a line (a failed write whose cut failed too): it is cut
    /// back to `size` before anything else is written.
    cut_pending: bool,
    /// A rotation renamed the file but could not start a new one: opened before the next
    /// write.
    reopen: bool,
    /// What the file and stdout's `json` get: `buf` itself, or (`ocsf`) `ocsf_buf`, the
    /// same lines as OCSF events. `buf` stays native: the API publishes it.
    format: AuditFormat,
    ocsf: ocsf::Context,
    ocsf_buf: Vec<u8>,
    /// The text of recent records' agent and process objects.
    shared: Shared,
    ocsf_gap_len: usize,
}

/// Opens `path` for appending; a file ending in part of a line (a crash or an older
/// version's failed write) is cut back to its last whole line first.
fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let whole = whole_lines(&file, len).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "reading the audit log's last line");
        len
    });
    if whole < len {
        file.set_len(whole)?;
        tracing::warn!(
            path = %path.display(),
            bytes = len - whole,
            "the audit log ended in part of a line; cut back to its last whole line"
        );
    }
    Ok((file, whole))
}

/// The length of `file`'s first `len` bytes up to and with their last newline.
fn whole_lines(file: &File, len: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let want = usize::try_from(end - start).unwrap_or(chunk.len());
        let part = &mut chunk[..want];
        file.read_exact_at(part, start)?;
        if let Some(i) = part.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Appends one record as an OCSF line; `{}` should serialising fail (lines and records
/// must stay paired).
fn ocsf_line(
    buf: &mut Vec<u8>,
    ctx: &ocsf::Context,
    native: Result<serde_json::Value, serde_json::Error>,
) {
    let start = buf.len();
    let written = native.and_then(|v| serde_json::to_writer(&mut *buf, &ocsf::event(&v, ctx)));
    if written.is_err() {
        buf.truncate(start);
        buf.extend_from_slice(b"{}");
    }
    buf.push(b'\n');
}

/// `<path>.<n>`.
pub(crate) fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Sinks {
    pub(crate) fn open(
        audit_path: &Path,
        stdout: StdoutFormat,
        rotation: Rotation,
    ) -> Result<Self, SinkError> {
        let err = |source| SinkError::Open {
            path: audit_path.to_path_buf(),
            source,
        };
        if let Some(dir) = audit_path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let (audit, size) = open_append(audit_path).map_err(err)?;
        Ok(Self {
            audit,
            audit_path: audit_path.to_path_buf(),
            size,
            rotation,
            stdout,
            buf: Vec::new(),
            ends: Vec::new(),
            appended: 0,
            gap_len: 0,
            cut_pending: false,
            reopen: false,
            format: AuditFormat::Json,
            ocsf: ocsf::Context::local(),
            ocsf_buf: Vec::new(),
            shared: Shared::default(),
            ocsf_gap_len: 0,
        })
    }

    /// Writes the file (and stdout's `json`) in `format`.
    #[must_use]
    pub(crate) fn with_format(mut self, format: AuditFormat) -> Self {
        self.format = format;
        self
    }

    /// The bytes the file gets from the last batch, and how many of them are its gap line.
    fn out(&self) -> (&[u8], usize) {
        match self.format {
            AuditFormat::Json => (&self.buf, self.gap_len),
            AuditFormat::Ocsf => (&self.ocsf_buf, self.ocsf_gap_len),
        }
    }

    /// The last batch's records as written: one JSON line per record, in order (without
    /// its gap line).
    #[cfg(test)]
    pub(crate) fn last_batch(&self) -> &[u8] {
        &self.buf[self.gap_len..]
    }

    /// The last batch's native lines for the API (`feed::publish`), handed over rather
    /// than copied: the next batch is written into a new buffer of the same size. Taken
    /// last: [`Self::appended`] and the gap's state read the buffer.
    pub(crate) fn take_written(&mut self) -> Written {
        let capacity = self.buf.capacity();
        Written {
            text: std::mem::replace(&mut self.buf, Vec::with_capacity(capacity)),
            start: self.gap_len,
            ends: std::mem::take(&mut self.ends),
        }
    }

    /// The last batch's gap line (with its newline), if it had one.
    pub(crate) fn last_gap(&self) -> Option<&[u8]> {
        (self.gap_len > 0).then(|| &self.buf[..self.gap_len])
    }

    /// How many leading records of the last `write` are in a file, also when it failed
    /// (a failed `fdatasync` counts them as appended: retrying it proves nothing, the
    /// kernel has already marked the pages clean). The gap line is not counted.
    pub(crate) fn appended(&self) -> usize {
        let (out, gap_len) = self.out();
        out.get(gap_len..self.appended).map_or(0, |lines| {
            lines.split(|b| *b == b'\n').count().saturating_sub(1)
        })
    }

    /// Whether the last `write`'s gap line is in the file.
    pub(crate) fn gap_appended(&self) -> bool {
        let (_, gap_len) = self.out();
        gap_len > 0 && self.appended >= gap_len
    }

    /// Writes a batch (one write(2) per file it goes to), after its gap line if any; syncs
    /// when it holds a violation or a gap.
    pub(crate) fn write(&mut self, gap: Option<&Gap>, records: &[Record]) -> Result<(), SinkError> {
        self.buf.clear();
        self.ends.clear();
        self.appended = 0;
        self.gap_len = 0;
        if records.is_empty() && gap.is_none() {
            return Ok(());
        }
        if let Some(gap) = gap
            && serde_json::to_writer(&mut self.buf, gap).is_ok()
        {
            self.buf.push(b'\n');
            self.gap_len = self.buf.len();
        }
        for r in records {
            // Writing plain data to a Vec cannot fail; were it to, no part of the record
            // stays (lines and records must stay paired).
            let start = self.buf.len();
            if write_record(&mut self.buf, r, &mut self.shared).is_err() {
                self.buf.truncate(start);
                self.buf.extend_from_slice(b"{}");
            }
            self.ends.push(self.buf.len());
            self.buf.push(b'\n');
        }
        if self.format == AuditFormat::Ocsf {
            self.encode_ocsf(gap, records);
        }
        self.repair()?;
        self.write_rotating()?;
        let err = |source| SinkError::Write {
            path: self.audit_path.clone(),
            source,
        };
        if gap.is_some() || records.iter().any(|r| r.verdict == Verdict::Violation) {
            self.audit.sync_data().map_err(err)?;
        }
        self.print(gap, records);
        Ok(())
    }

    /// `ocsf_buf`: the batch as OCSF events, line for line.
    fn encode_ocsf(&mut self, gap: Option<&Gap>, records: &[Record]) {
        self.ocsf_buf.clear();
        self.ocsf_gap_len = 0;
        if self.gap_len > 0
            && let Some(gap) = gap
        {
            ocsf_line(&mut self.ocsf_buf, &self.ocsf, serde_json::to_value(gap));
            self.ocsf_gap_len = self.ocsf_buf.len();
        }
        for r in records {
            ocsf_line(&mut self.ocsf_buf, &self.ocsf, serde_json::to_value(r));
        }
    }

    /// Makes the file end in a whole line before a batch goes in: opens the file a failed
    /// rotation did not, cuts a partial line a failed cut left.
    fn repair(&mut self) -> Result<(), SinkError> {
        let err = |source| SinkError::Write {
            path: self.audit_path.clone(),
            source,
        };
        if self.reopen {
            let (file, size) = open_append(&self.audit_path).map_err(err)?;
            self.audit = file;
            self.size = size;
            self.reopen = false;
            self.cut_pending = false;
        }
        if self.cut_pending {
            self.audit.set_len(self.size).map_err(err)?;
            self.cut_pending = false;
            tracing::info!("the partial line a failed write left is cut off the audit log");
        }
        Ok(())
    }

    /// Writes `buf` whole lines at a time, rotating before a line would take the file past
    /// `max_bytes` (a single line longer than that gets a file of its own).
    fn write_rotating(&mut self) -> Result<(), SinkError> {
        let max = self.rotation.max_bytes;
        let len = self.out().0.len();
        if max == 0 || self.size + len as u64 <= max {
            // Nothing to rotate: no need to look for the lines.
            return self.append(0, len);
        }
        let (mut start, mut end) = (0, 0);
        while let Some(off) = self.out().0[end..].iter().position(|b| *b == b'\n') {
            let next = end + off + 1;
            let pending = (next - start) as u64;
            if max > 0 && self.size + pending > max && (self.size > 0 || end > start) {
                self.append(start, end)?;
                if self.size > 0 {
                    self.rotate()?;
                }
                start = end;
            }
            end = next;
        }
        self.append(start, self.out().0.len())
    }

    fn append(&mut self, start: usize, end: usize) -> Result<(), SinkError> {
        let out = match self.format {
            AuditFormat::Json => &self.buf,
            AuditFormat::Ocsf => &self.ocsf_buf,
        };
        let Some(bytes) = out.get(start..end).filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        if let Err(source) = self.audit.write_all(bytes) {
            // No partial line stays in the log (a full disk, an I/O error): the batch is
            // written again whole, after the last line that did get in. Should the cut
            // fail, nothing is written until it succeeds (`repair`).
            let cut = self.audit.set_len(self.size).and_then(|()| {
                let len = self.audit.metadata()?.len();
                if len == self.size {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "{len} bytes after the cut to {}",
                        self.size
                    )))
                }
            });
            if let Err(e) = cut {
                tracing::warn!(error = %e, "cutting a partial line off the audit log; tried again before the next write");
                self.cut_pending = true;
            }
            return Err(SinkError::Write {
                path: self.audit_path.clone(),
                source,
            });
        }
        self.size += bytes.len() as u64;
        self.appended = end;
        Ok(())
    }

    fn print(&self, gap: Option<&Gap>, records: &[Record]) {
        let mut out = io::stdout().lock();
        let printed = match self.stdout {
            StdoutFormat::None => Ok(()),
            StdoutFormat::Json => out.write_all(self.out().0),
            StdoutFormat::Text => gap
                .map_or(Ok(()), |g| {
                    writeln!(
                        out,
                        "{} GAP: {} records since {} could not be written",
                        g.time, g.lost, g.since
                    )
                })
                .and_then(|()| {
                    records
                        .iter()
                        .try_for_each(|r| writeln!(out, "{}", r.summary()))
                }),
        };
        // stdout going away (closed pipe) must not stop the audit log.
        if let Err(e) = printed.and_then(|()| out.flush()) {
            tracing::debug!(error = %e, "stdout write failed");
        }
    }

    /// Closes the current file (synced) as `<path>.1` and starts a new one.
    fn rotate(&mut self) -> Result<(), SinkError> {
        let path = self.audit_path.clone();
        let err = |source| SinkError::Rotate {
            path: path.clone(),
            source,
        };
        self.audit.sync_all().map_err(err)?;
        let keep = self.rotation.keep;
        if keep == 0 {
            fs::remove_file(&path).map_err(err)?;
        } else {
            // The oldest goes; the others move up by one.
            match fs::remove_file(rotated_path(&path, keep)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            }
            for n in (1..keep).rev() {
                match fs::rename(rotated_path(&path, n), rotated_path(&path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
                    _ => {}
                }
            }
            fs::rename(&path, rotated_path(&path, 1)).map_err(err)?;
        }
        // Until a new file is open, the old one (renamed) must not be written to.
        self.reopen = true;
        let (file, size) = open_append(&path).map_err(err)?;
        self.audit = file;
        self.size = size;
        self.reopen = false;
        // Make the renames and the new file durable too.
        if let Some(dir) = path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        tracing::info!(path = %path.display(), keep, "audit log rotated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::record::{Kind, ProcessNames, ProcessRef};
    use std::sync::Arc;

    fn record(n: u32) -> Record {
        let verdict = if n.is_multiple_of(7) {
            Verdict::Violation
        } else {
            Verdict::Allowed
        };
        let mut r = Record::sample(Kind::Exec, verdict);
        r.time = format!("t{n}").into();
        r.agent.names_mut().identity = Some("spiffe://x".into());
        r.process = Some(ProcessRef {
            pid: n,
            tid: n,
            ppid: 1,
            names: Arc::new(ProcessNames {
                comm: "c".into(),
                exe: None,
                cgroup: None,
            }),
        });
        r
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn rotation_keeps_every_line_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 4096,
            keep: 1000,
        };
        let mut sinks = Sinks::open(&path, StdoutFormat::None, rotation).expect("open");
        let mut n = 0;
        for batch in 0..200u32 {
            let records: Vec<Record> = (0..=batch % 40)
                .map(|_| {
                    n += 1;
                    record(n)
                })
                .collect();
            sinks.write(None, &records).expect("write");
        }
        let mut all = Vec::new();
        let mut files = 0;
        for i in (1..=1000).rev() {
            let p = rotated_path(&path, i);
            if p.exists() {
                files += 1;
                let l = lines(&p);
                let size = fs::metadata(&p).expect("meta").len();
                assert!(size <= 4096, "{} is {size} bytes", p.display());
                all.extend(l);
            }
        }
        all.extend(lines(&path));
        assert!(files > 3, "rotated {files} times");
        assert_eq!(all.len(), n as usize);
        for (i, l) in all.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            assert_eq!(v["time"], format!("t{}", i + 1));
            assert_eq!(v["agent"]["owner"], "o");
        }
    }

    #[test]
    fn a_partial_last_line_is_cut_at_open_and_a_gap_line_goes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let long = "x".repeat(100_000);
        fs::write(&path, format!("{{\"a\":1}}\n{{\"b\":\"{long}")).expect("write");
        let mut sinks = Sinks::open(&path, StdoutFormat::None, Rotation::default()).expect("open");
        assert_eq!(lines(&path), ["{\"a\":1}"], "the fragment is gone");
        let now = std::time::SystemTime::now();
        let gap = Gap::new(7, now, now);
        sinks
            .write(Some(&gap), &[record(1), record(2)])
            .expect("write");
        assert_eq!(sinks.appended(), 2, "records, not the gap line");
        assert!(sinks.gap_appended());
        assert_eq!(sinks.last_batch().split(|b| *b == b'\n').count(), 3);
        let all = lines(&path);
        assert_eq!(all.len(), 4);
        let g: serde_json::Value = serde_json::from_str(&all[1]).expect("JSON");
        assert_eq!(g["kind"], "gap");
        assert_eq!(g["lost"], 7);
        let r: serde_json::Value = serde_json::from_str(&all[2]).expect("JSON");
        assert_eq!(r["time"], "t1");
        // Only a file of whole lines, or an empty one, is left alone.
        fs::write(&path, "").expect("write");
        drop(Sinks::open(&path, StdoutFormat::None, Rotation::default()).expect("open"));
        assert_eq!(fs::read(&path).expect("read"), b"");
    }

    #[test]
    fn rotation_drops_the_oldest_beyond_keep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let rotation = Rotation {
            max_bytes: 600,
            keep: 2,
        };
        let mut sinks = Sinks::open(&path, StdoutFormat::None, rotation).expect("open");
        for n in 0..50 {
            sinks.write(None, &[record(n)]).expect("write");
        }
        assert!(rotated_path(&path, 1).exists());
        assert!(rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        let last = lines(&path);
        assert!(last.last().is_some_and(|l| l.contains("\"t49\"")));
    }
}
