//! The task registry on disk, so a restarted daemon knows which slot is which task and can
//! attribute the events its predecessor left in the ring buffer. Written atomically
//! (temporary file + rename) after every change.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::control::tasks::Origin;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a state file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) next_slot: u32,
    pub(crate) tasks: Vec<SavedTask>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedTask {
    pub(crate) id: String,
    pub(crate) slot: u32,
    pub(crate) scope: String,
    /// The manifest of an ad-hoc (per-task) scope.
    pub(crate) scope_yaml: Option<String>,
    pub(crate) cgroup: String,
    pub(crate) cgroup_id: u64,
    pub(crate) origin: Origin,
    pub(crate) started_unix_ms: u64,
    pub(crate) expires_unix_ms: Option<u64>,
    pub(crate) start_cwd: Option<PathBuf>,
    #[serde(default)]
    pub(crate) landlock_abi: u32,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn save(path: &Path, saved: &Saved) -> Result<(), PersistError> {
    let err = |source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(saved).map_err(|e| err(io::Error::other(e)))?;
    fs::write(&tmp, text).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// The saved registry, or None when there is no state file.
pub(crate) fn load(path: &Path) -> Result<Option<Saved>, PersistError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| PersistError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_absence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        assert!(load(&path).expect("absent is fine").is_none());
        let saved = Saved {
            next_slot: 7,
            tasks: vec![SavedTask {
                id: "t".into(),
                slot: 7,
                scope: "s".into(),
                scope_yaml: None,
                cgroup: "/p/t".into(),
                cgroup_id: 42,
                origin: Origin::Exec,
                started_unix_ms: 1,
                expires_unix_ms: Some(2),
                start_cwd: None,
                landlock_abi: 0,
            }],
        };
        save(&path, &saved).expect("save");
        let back = load(&path).expect("load").expect("present");
        assert_eq!(
            (back.next_slot, back.tasks.len(), back.tasks[0].cgroup_id),
            (7, 1, 42)
        );
        fs::write(&path, "{not json").expect("write");
        assert!(matches!(load(&path), Err(PersistError::Parse { .. })));
    }
}
