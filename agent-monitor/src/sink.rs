//! Where records go: the append-only audit log (durable: a batch holding a violation is
//! synced before the pipeline moves on) and, optionally, stdout.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::record::{Record, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StdoutFormat {
    /// Records are not printed.
    None,
    /// One readable line per record.
    Text,
    /// One JSON object per line.
    Json,
}

pub struct Sinks {
    audit: File,
    audit_path: PathBuf,
    stdout: StdoutFormat,
    buf: Vec<u8>,
}

impl Sinks {
    pub fn open(audit_path: &Path, stdout: StdoutFormat) -> Result<Self, SinkError> {
        let err = |source| SinkError::Open {
            path: audit_path.to_path_buf(),
            source,
        };
        if let Some(dir) = audit_path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let audit = OpenOptions::new()
            .create(true)
            .append(true)
            .open(audit_path)
            .map_err(err)?;
        Ok(Self {
            audit,
            audit_path: audit_path.to_path_buf(),
            stdout,
            buf: Vec::new(),
        })
    }

    /// Writes a batch with one write(2); syncs when it holds a violation.
    pub fn write(&mut self, records: &[Record]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for r in records {
            // Serialising plain data to a Vec cannot fail.
            if serde_json::to_writer(&mut self.buf, r).is_ok() {
                self.buf.push(b'\n');
            }
        }
        let err = |source| SinkError::Write {
            path: self.audit_path.clone(),
            source,
        };
        self.audit.write_all(&self.buf).map_err(err)?;
        if records.iter().any(|r| r.verdict == Verdict::Violation) {
            self.audit.sync_data().map_err(err)?;
        }
        let mut out = io::stdout().lock();
        let printed = match self.stdout {
            StdoutFormat::None => Ok(()),
            StdoutFormat::Json => out.write_all(&self.buf),
            StdoutFormat::Text => records
                .iter()
                .try_for_each(|r| writeln!(out, "{}", r.summary())),
        };
        // stdout going away (closed pipe) must not stop the audit log.
        if let Err(e) = printed.and_then(|()| out.flush()) {
            tracing::debug!(error = %e, "stdout write failed");
        }
        Ok(())
    }
}
