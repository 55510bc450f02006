//! Reading the audit log from a cursor, across its rotations.
//!
//! The writer appends whole lines and rotates by renaming the file to `<path>.1` (older
//! ones shift to `.2` ..) before it starts a new one; it never writes to a renamed file.
//! The tail keeps its file open: at the end of it, a file no longer at `<path>` has been
//! rotated, so it is read once more to its end (lines written just before the rename) and
//! the tail moves to the next newer file. A file is known by its device and inode; the
//! cursor (file identity and the offset after the last line the collector acknowledged)
//! is saved to a small file next to the audit log after every acknowledged batch, so a
//! restarted daemon resumes where the collector stopped acknowledging.

use std::{
    fs::{self, File},
    io::{self, BufRead as _, BufReader, Seek as _, SeekFrom},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::observe::sink::rotated_path;

/// A position in the audit log: the file (device, inode) and the offset of the next line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) offset: u64,
}

impl Cursor {
    fn of(meta: &fs::Metadata, offset: u64) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
        }
    }

    fn same_file(&self, meta: &fs::Metadata) -> bool {
        self.dev == meta.dev() && self.ino == meta.ino()
    }
}

/// `<audit log>.otlp-cursor`.
pub(crate) fn cursor_path(audit: &Path) -> PathBuf {
    let mut s = audit.as_os_str().to_os_string();
    s.push(".otlp-cursor");
    PathBuf::from(s)
}

/// The saved cursor; None when there is none (or it cannot be read: the export starts
/// over, at-least-once).
pub(crate) fn load_cursor(path: &Path) -> Option<Cursor> {
    let text = fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable OTLP export cursor; ignored");
            None
        }
    }
}

/// Saves `cursor` atomically (a new file renamed over the old one).
pub(crate) fn save_cursor(path: &Path, cursor: &Cursor) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_vec(cursor).map_err(io::Error::other)?;
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// Whole lines read from the log, and the cursor just after the last of them.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) lines: Vec<Vec<u8>>,
    pub(crate) bytes: usize,
    pub(crate) end: Option<Cursor>,
}

/// Looks at the files again when a rotation renamed one between looking and opening.
const OPEN_ATTEMPTS: usize = 8;

pub(crate) struct Tail {
    path: PathBuf,
    keep: u32,
    /// Where to start when no file is open yet (a saved cursor).
    start: Option<Cursor>,
    file: Option<(BufReader<File>, Cursor)>,
    /// The open file was seen renamed away: what is left of it is read, then the next.
    rotated: bool,
}

impl Tail {
    pub(crate) fn new(path: &Path, keep: u32, start: Option<Cursor>) -> Self {
        Self {
            path: path.to_path_buf(),
            keep,
            start,
            file: None,
            rotated: false,
        }
    }

    /// The audit log's files, newest first: `<path>`, `<path>.1` .. `<path>.<keep>` (those
    /// that exist).
    fn chain(&self) -> Vec<(PathBuf, fs::Metadata)> {
        std::iter::once(self.path.clone())
            .chain((1..=self.keep).map(|n| rotated_path(&self.path, n)))
            .filter_map(|p| fs::metadata(&p).ok().map(|m| (p, m)))
            .collect()
    }

    /// Opens `path` at `offset` if it is still the file `seen` (a rotation between looking
    /// and opening moves another file to that name: None, look again).
    fn open_at(
        path: &Path,
        seen: &fs::Metadata,
        offset: u64,
    ) -> io::Result<Option<(BufReader<File>, Cursor)>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if meta.dev() != seen.dev() || meta.ino() != seen.ino() {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(Some((BufReader::new(file), Cursor::of(&meta, offset))))
    }

    /// Opens the file to read from, when none is: the saved cursor's (wherever rotation
    /// has moved it), else `<path>` from its start. False when there is nothing to open yet.
    fn ensure_open(&mut self) -> io::Result<bool> {
        if self.file.is_some() {
            return Ok(true);
        }
        let start = self.start;
        let mut warned = false;
        for _ in 0..OPEN_ATTEMPTS {
            let chain = self.chain();
            let at_cursor = start.and_then(|c| {
                chain
                    .iter()
                    .find(|(_, m)| c.same_file(m) && m.len() >= c.offset)
                    .map(|(p, m)| (p, m, c.offset))
            });
            let found = match (start, at_cursor) {
                (_, Some(found)) => Some(found),
                (Some(_), None) => {
                    // Rotated away (or a different file now): the oldest kept file is the
                    // first that may hold lines not yet exported.
                    if !warned {
                        tracing::warn!(
                            "the OTLP export cursor's audit log file is gone; exporting from the oldest kept file"
                        );
                        warned = true;
                    }
                    chain.last().map(|(p, m)| (p, m, 0))
                }
                (None, None) => chain.first().map(|(p, m)| (p, m, 0)),
            };
            let Some((path, meta, offset)) = found else {
                return Ok(false);
            };
            if let Some(open) = Self::open_at(path, meta, offset)? {
                self.file = Some(open);
                self.start = None;
                self.rotated = false;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves to the file written after the open one (which was rotated and is read to its
    /// end). False when that file does not exist yet.
    fn advance(&mut self) -> io::Result<bool> {
        let Some((_, cur)) = &self.file else {
            return Ok(false);
        };
        let cur = *cur;
        for _ in 0..OPEN_ATTEMPTS {
            let chain = self.chain();
            let next = match chain.iter().position(|(_, m)| cur.same_file(m)) {
                Some(0) => {
                    // Back at `<path>` (it was missing for a moment): keep reading it.
                    self.rotated = false;
                    return Ok(false);
                }
                Some(i) => chain.get(i - 1),
                None => {
                    // Removed by rotation while open: the oldest kept file is newer than it.
                    tracing::warn!(
                        "an audit log file was removed by rotation while exported; some of its successors may be gone too"
                    );
                    chain.last()
                }
            };
            let Some((path, meta)) = next else {
                return Ok(false);
            };
            if let Some(open) = Self::open_at(path, meta, 0)? {
                self.file = Some(open);
                self.rotated = false;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads whole lines into `batch` until it holds `max_lines` or `max_bytes` (a longer
    /// single line is taken alone) or the log has no more whole lines.
    pub(crate) fn fill(
        &mut self,
        batch: &mut Batch,
        max_lines: usize,
        max_bytes: usize,
    ) -> io::Result<()> {
        if !self.ensure_open()? {
            return Ok(());
        }
        loop {
            let Some((reader, cur)) = &mut self.file else {
                return Ok(());
            };
            let mut line = Vec::new();
            while batch.lines.len() < max_lines {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    // End of file, or a line still being written: read again from its start.
                    if n > 0 {
                        reader.seek(SeekFrom::Start(cur.offset))?;
                    }
                    break;
                }
                if !batch.lines.is_empty() && batch.bytes + n > max_bytes {
                    // Read again next time.
                    reader.seek(SeekFrom::Start(cur.offset))?;
                    return Ok(());
                }
                cur.offset += n as u64;
                batch.bytes += n;
                line.pop();
                batch.lines.push(std::mem::take(&mut line));
                batch.end = Some(*cur);
            }
            if batch.lines.len() >= max_lines {
                return Ok(());
            }
            // At the end of the open file.
            if self.rotated {
                if !self.advance()? {
                    return Ok(());
                }
                continue;
            }
            let moved = fs::metadata(&self.path).map_or(true, |m| !cur.same_file(&m));
            if !moved {
                return Ok(());
            }
            // Renamed away: what was written before the rename is read on the next pass.
            self.rotated = true;
        }
    }

    /// Bytes of the log after the read position: the rest of the open file and the files
    /// written after it.
    pub(crate) fn backlog(&self) -> u64 {
        let Some((_, cur)) = &self.file else {
            return self.chain().iter().map(|(_, m)| m.len()).sum();
        };
        let chain = self.chain();
        let Some(i) = chain.iter().position(|(_, m)| cur.same_file(m)) else {
            return chain.iter().map(|(_, m)| m.len()).sum();
        };
        chain[..i].iter().map(|(_, m)| m.len()).sum::<u64>()
            + chain[i].1.len().saturating_sub(cur.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn append(path: &Path, lines: &[&str]) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        for l in lines {
            writeln!(f, "{l}").expect("write");
        }
    }

    /// As the sink rotates: shift `.n` up, rename the file to `.1`.
    fn rotate(path: &Path, keep: u32) {
        for n in (1..keep).rev() {
            let _ = fs::rename(rotated_path(path, n), rotated_path(path, n + 1));
        }
        fs::rename(path, rotated_path(path, 1)).expect("rotate");
    }

    fn drain(tail: &mut Tail) -> (Vec<String>, Option<Cursor>) {
        let mut out = Vec::new();
        let mut end = None;
        loop {
            let mut b = Batch::default();
            tail.fill(&mut b, 2, 1 << 20).expect("fill");
            if b.lines.is_empty() {
                return (out, end);
            }
            end = b.end;
            out.extend(
                b.lines
                    .into_iter()
                    .map(|l| String::from_utf8(l).expect("utf8")),
            );
        }
    }

    #[test]
    fn follows_rotation_without_loss_or_repeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        append(&path, &["a", "b", "c"]);
        let mut tail = Tail::new(&path, 3, None);
        let (got, _) = drain(&mut tail);
        assert_eq!(got, ["a", "b", "c"]);
        // Lines written just before a rotation, then two rotations before the next read.
        append(&path, &["d"]);
        rotate(&path, 3);
        append(&path, &["e"]);
        rotate(&path, 3);
        append(&path, &["f", "g"]);
        let (got, _) = drain(&mut tail);
        assert_eq!(got, ["d", "e", "f", "g"]);
        assert_eq!(tail.backlog(), 0);
    }

    #[test]
    fn keeps_up_with_a_writer_rotating_while_it_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let keep = 200;
        append(&path, &["0"]);
        // Without a cursor the tail starts at the current file: open it before the writer
        // rotates.
        let mut tail = Tail::new(&path, keep, None);
        let mut got = drain(&mut tail).0;
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 1..600 {
                    append(&path, &[&i.to_string()]);
                    if i % 5 == 0 {
                        rotate(&path, keep);
                    }
                }
            })
        };
        while !writer.is_finished() {
            got.extend(drain(&mut tail).0);
        }
        writer.join().expect("writer");
        got.extend(drain(&mut tail).0);
        let want: Vec<String> = (0..600).map(|i: u32| i.to_string()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_partial_line_waits_for_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, "one\ntw").expect("write");
        let mut tail = Tail::new(&path, 1, None);
        assert_eq!(drain(&mut tail).0, ["one"]);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"o\n").expect("write");
        assert_eq!(drain(&mut tail).0, ["two"]);
    }

    #[test]
    fn resumes_from_a_saved_cursor_in_a_rotated_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        append(&path, &["a", "b"]);
        let mut tail = Tail::new(&path, 2, None);
        let mut b = Batch::default();
        tail.fill(&mut b, 1, 1 << 20).expect("fill");
        let cursor = b.end.expect("end");
        let saved = cursor_path(&path);
        save_cursor(&saved, &cursor).expect("save");
        rotate(&path, 2);
        append(&path, &["c"]);
        let mut resumed = Tail::new(&path, 2, load_cursor(&saved));
        assert_eq!(drain(&mut resumed).0, ["b", "c"]);
    }

    #[test]
    fn a_file_renamed_between_looking_and_opening_is_not_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        append(&path, &["a"]);
        let seen = fs::metadata(&path).expect("stat");
        rotate(&path, 1);
        append(&path, &["b"]);
        assert!(Tail::open_at(&path, &seen, 0).expect("open").is_none());
        let moved = rotated_path(&path, 1);
        assert!(Tail::open_at(&moved, &seen, 0).expect("open").is_some());
    }

    #[test]
    fn a_batch_stops_at_its_byte_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        append(&path, &["aaaa", "bbbb", "cccc"]);
        let mut tail = Tail::new(&path, 0, None);
        let mut b = Batch::default();
        tail.fill(&mut b, 100, 10).expect("fill");
        assert_eq!(b.lines.len(), 2);
        let mut rest = Batch::default();
        tail.fill(&mut rest, 100, 10).expect("fill");
        assert_eq!(rest.lines, [b"cccc".to_vec()]);
    }
}
