//! Audit logs read back: each line of a JSONL audit log (`--audit-log`, its rotated files,
//! `events --json`) into the activity it records, with the file and line it came from.
//!
//! A log can be rotated, truncated mid-line (a crash, a full disk), hold `gap` records
//! (records the daemon made and could not write) or come from another build. None of that
//! stops the reading: each is a [`Warning`] naming the file and line, and a log with a
//! warning that means missing records is [`Log::partial`], so that no result built from it
//! is presented as whole.

use std::{
    fmt,
    fs::File,
    io::BufReader,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::policy::{Activity, FileAccess, NetOp, Protocol};

/// The longest line read; longer ones are skipped with a warning (records are far shorter).
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: reading: {source}")]
    Read {
        path: PathBuf,
        line: usize,
        #[source]
        source: std::io::Error,
    },
    /// Its records are OCSF events: what the lifecycle reads (`kind`, `agent`, `file`, ...)
    /// is only in native records, and a partial reading would pass for a whole one.
    #[error(
        "{path}:{line}: written with --audit-format ocsf; scope propose --from-log and scope \
         replay need json (a log written with --audit-format json, the default)"
    )]
    Ocsf { path: PathBuf, line: usize },
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Source {
    pub(crate) file: PathBuf,
    /// 1-based.
    pub(crate) line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Something about a log that a reader of the result must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warning {
    pub(crate) at: Source,
    pub(crate) message: String,
    /// Records are missing because of it (the result is partial).
    pub(crate) loses_records: bool,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.at, self.message)
    }
}

/// The fields of a record the lifecycle reads (`observe::record::Record`, as written; the
/// others are skipped).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Logged {
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) verdict: Option<String>,
    #[serde(default)]
    pub(crate) agent: Option<LoggedAgent>,
    #[serde(default)]
    pub(crate) process: Option<LoggedProcess>,
    #[serde(default)]
    pub(crate) file: Option<LoggedFile>,
    #[serde(default)]
    pub(crate) net: Option<LoggedNet>,
    #[serde(default)]
    pub(crate) exec: Option<LoggedExec>,
    #[serde(default)]
    pub(crate) violation: Option<LoggedViolation>,
    #[serde(default)]
    pub(crate) task: Option<LoggedTaskEvent>,
    /// How many actions the record stands for (aggregated DNS refusals).
    #[serde(default)]
    pub(crate) count: Option<u64>,
    /// `kind: gap`: records lost before this line.
    #[serde(default)]
    pub(crate) lost: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedAgent {
    pub(crate) scope: String,
    pub(crate) task: String,
    pub(crate) owner: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedProcess {
    pub(crate) pid: u32,
    #[serde(default)]
    pub(crate) exe: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedFile {
    pub(crate) path: String,
    pub(crate) access: String,
    #[serde(default)]
    pub(crate) new_path: Option<String>,
    #[serde(default)]
    pub(crate) unresolved: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedNet {
    pub(crate) protocol: String,
    pub(crate) address: String,
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedExec {
    pub(crate) path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedViolation {
    pub(crate) rule: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedTaskEvent {
    pub(crate) event: String,
}

/// An activity as recorded, owning its strings (see [`Observed::activity`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Observed {
    Exec {
        path: String,
    },
    File {
        path: String,
        access: FileAccessName,
    },
    Rename {
        from: String,
        to: String,
    },
    Link {
        from: String,
        to: String,
    },
    Net {
        op: NetOpName,
        addr: IpAddr,
        port: u16,
        protocol: ProtocolName,
        /// The DNS name the address was learned from, when the record says.
        host: Option<String>,
    },
}

/// [`FileAccess`], ordered (for deterministic output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct FileAccessName(pub(crate) u8);

impl FileAccessName {
    pub(crate) fn access(self) -> FileAccess {
        FileAccess::ALL
            .get(usize::from(self.0))
            .copied()
            .unwrap_or(FileAccess::Read)
    }

    fn parse(name: &str) -> Option<Self> {
        FileAccess::ALL
            .iter()
            .position(|a| a.to_string() == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(Self)
    }
}

/// [`NetOp`], ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum NetOpName {
    Connect,
    Send,
    Bind,
}

impl NetOpName {
    pub(crate) fn op(self) -> NetOp {
        match self {
            Self::Connect => NetOp::Connect,
            Self::Send => NetOp::Send,
            Self::Bind => NetOp::Bind,
        }
    }
}

/// [`Protocol`], ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ProtocolName {
    Tcp,
    Udp,
    Other(u8),
}

impl ProtocolName {
    pub(crate) fn protocol(self) -> Protocol {
        match self {
            Self::Tcp => Protocol::Tcp,
            Self::Udp => Protocol::Udp,
            Self::Other(n) => Protocol::Other(n),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            other => other
                .strip_prefix("ip protocol ")
                .unwrap_or(other)
                .parse()
                .ok()
                .map(Self::Other),
        }
    }
}

impl Observed {
    /// The policy engine's view of it.
    pub(crate) fn activity(&self) -> Activity<'_> {
        match self {
            Self::Exec { path } => Activity::Exec { path },
            Self::File { path, access } => Activity::File {
                path,
                access: access.access(),
            },
            Self::Rename { from, to } => Activity::Rename { from, to },
            Self::Link { from, to } => Activity::Link { from, to },
            Self::Net {
                op,
                addr,
                port,
                protocol,
                ..
            } => Activity::Net {
                op: op.op(),
                addr: *addr,
                port: *port,
                protocol: protocol.protocol(),
            },
        }
    }
}

impl Logged {
    /// The scope and task it belongs to.
    pub(crate) fn scope(&self) -> Option<&str> {
        self.agent.as_ref().map(|a| a.scope.as_str())
    }

    pub(crate) fn task_id(&self) -> Option<&str> {
        self.agent.as_ref().map(|a| a.task.as_str())
    }

    /// The activity it records: `None` for records of no single activity (task lifecycle,
    /// gaps, escapes, DNS questions) and for paths the daemon could not resolve exactly.
    ///
    /// # Errors
    /// A message when a field holds a value this build does not know (another build's log).
    pub(crate) fn observed(&self) -> Result<Option<Observed>, String> {
        match self.kind.as_str() {
            "exec" => {
                let Some(exec) = &self.exec else {
                    return Err("an exec record without `exec`".to_owned());
                };
                Ok(Some(Observed::Exec {
                    path: exec.path.clone(),
                }))
            }
            "file" => {
                // A refused exec is a file record naming the image.
                if let Some(exec) = &self.exec {
                    return Ok(Some(Observed::Exec {
                        path: exec.path.clone(),
                    }));
                }
                let Some(file) = &self.file else {
                    // A listen or a Unix-socket connect recorded without a path.
                    return Ok(None);
                };
                if file.unresolved {
                    return Ok(None);
                }
                let Some(access) = FileAccessName::parse(&file.access) else {
                    return Err(format!("unknown file access {:?}", file.access));
                };
                Ok(Some(match (&file.new_path, access.access()) {
                    (Some(to), FileAccess::Link) => Observed::Link {
                        from: file.path.clone(),
                        to: to.clone(),
                    },
                    (Some(to), _) => Observed::Rename {
                        from: file.path.clone(),
                        to: to.clone(),
                    },
                    (None, _) => Observed::File {
                        path: file.path.clone(),
                        access,
                    },
                }))
            }
            "connect" | "send" | "bind" => {
                let Some(net) = &self.net else {
                    return Ok(None);
                };
                let op = match self.kind.as_str() {
                    "connect" => NetOpName::Connect,
                    "send" => NetOpName::Send,
                    _ => NetOpName::Bind,
                };
                let Ok(addr) = net.address.parse::<IpAddr>() else {
                    // A Unix socket: its path is in `file` when one was reached.
                    return Ok(None);
                };
                let Some(protocol) = ProtocolName::parse(&net.protocol) else {
                    return Err(format!("unknown protocol {:?}", net.protocol));
                };
                Ok(Some(Observed::Net {
                    op,
                    addr,
                    port: net.port,
                    protocol,
                    host: net
                        .host
                        .clone()
                        .filter(|h| !h.starts_with('<'))
                        .map(|h| crate::policy::canonical_host(&h)),
                }))
            }
            "escape" | "task" | "gap" | "dns" => Ok(None),
            other => Err(format!("unknown record kind {other:?}")),
        }
    }
}

/// One record and where it was read.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) at: Source,
    pub(crate) record: Logged,
}

/// Records read from one or more logs, in the order given.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) entries: Vec<Entry>,
    pub(crate) warnings: Vec<Warning>,
}

impl Log {
    /// Whether records are missing (gaps, unreadable lines): a result built from this log
    /// must say it is partial.
    pub(crate) fn partial(&self) -> bool {
        self.warnings.iter().any(|w| w.loses_records)
    }

    /// Reads `paths` in order (oldest first, as rotated: `audit.jsonl.2`, `.1`, then the
    /// current file).
    ///
    /// # Errors
    /// A file that cannot be opened or read; what is wrong inside a file is a warning.
    pub(crate) fn read(paths: &[PathBuf]) -> Result<Self, LogError> {
        let mut log = Self::default();
        for path in paths {
            let file = File::open(path).map_err(|source| LogError::Open {
                path: path.clone(),
                source,
            })?;
            log.read_from(path, BufReader::new(file))?;
        }
        Ok(log)
    }

    /// Reads one log's text (`path` names it in warnings).
    ///
    /// # Errors
    /// A read error of the underlying reader.
    pub(crate) fn read_from(
        &mut self,
        path: &Path,
        mut reader: impl std::io::BufRead,
    ) -> Result<(), LogError> {
        let mut buf = Vec::new();
        let mut line = 0;
        loop {
            buf.clear();
            line += 1;
            let n = read_line(&mut reader, &mut buf).map_err(|source| LogError::Read {
                path: path.to_owned(),
                line,
                source,
            })?;
            if n == 0 {
                return Ok(());
            }
            let at = Source {
                file: path.to_owned(),
                line,
            };
            let complete = buf.last() == Some(&b'\n');
            if n > MAX_LINE {
                self.warn(at, format!("a line of {n} bytes skipped"), true);
                continue;
            }
            let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Logged>(text) {
                Ok(record) => self.push(at, record),
                Err(_)
                    if serde_json::from_slice::<serde_json::Value>(text)
                        .is_ok_and(|v| crate::observe::ocsf::is_ocsf(&v)) =>
                {
                    return Err(LogError::Ocsf {
                        path: path.to_owned(),
                        line,
                    });
                }
                Err(_) if !complete => self.warn(
                    at,
                    "the last line is cut short (the log was truncated or is being written); \
                     it is skipped"
                        .to_owned(),
                    true,
                ),
                Err(e) => self.warn(at, format!("not a record ({e}); skipped"), true),
            }
        }
    }

    fn push(&mut self, at: Source, record: Logged) {
        if record.kind == "gap" {
            let lost = record.lost.unwrap_or(0);
            self.warn(
                at,
                format!(
                    "the daemon lost {lost} records before this line (a gap in the log); \
                     what they recorded is missing"
                ),
                true,
            );
            return;
        }
        if let Err(message) = record.observed() {
            self.warn(
                at,
                format!("{message} (a log of another build?); skipped"),
                true,
            );
            return;
        }
        self.entries.push(Entry { at, record });
    }

    fn warn(&mut self, at: Source, message: String, loses_records: bool) {
        self.warnings.push(Warning {
            at,
            message,
            loses_records,
        });
    }

    /// The records of one scope (and, if given, one task).
    pub(crate) fn select<'a>(
        &'a self,
        scope: Option<&'a str>,
        task: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| {
            scope.is_none_or(|s| e.record.scope() == Some(s))
                && task.is_none_or(|t| e.record.task_id() == Some(t))
        })
    }
}

/// `read_until(b'\n')` that stops storing past [`MAX_LINE`] (the count still grows).
fn read_line(reader: &mut impl std::io::BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let len = chunk.len();
        if buf.len() + len <= MAX_LINE + 1 {
            buf.extend_from_slice(chunk);
        }
        total += len;
        reader.consume(len);
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests;
