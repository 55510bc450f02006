//! Pinned state under bpffs, so enforcement outlives the daemon: every map the daemon uses
//! and every hook's link. A restarted daemon adopts them instead of loading a second copy
//! of the programs, and reads what the ring buffer collected while it was down.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData},
    programs::links::{FdLink, PinnedLink},
};

use super::{
    demand::OnDemand,
    loader::{Handles, HookStatus, Kernel, LoadError},
    maps::Maps,
};

pub(crate) struct Pins {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PinError {
    #[error("preparing {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pinning {what} at {path}: {source}")]
    Pin {
        what: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

impl Pins {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn maps(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// The links of the hooks that stay attached.
    fn links(&self) -> PathBuf {
        self.dir.join("links")
    }

    /// The syscall programs, attached only while agents run.
    pub(crate) fn programs(&self) -> PathBuf {
        self.dir.join("programs")
    }

    /// Their links while they are attached.
    pub(crate) fn demand(&self) -> PathBuf {
        self.dir.join("demand")
    }

    /// Whether a previous daemon left its state here (links are pinned last).
    pub(crate) fn present(&self) -> bool {
        fs::read_dir(self.links()).is_ok_and(|mut d| d.next().is_some())
    }

    pub(crate) fn prepare(&self) -> Result<(), PinError> {
        for dir in [self.maps(), self.links()] {
            fs::create_dir_all(&dir).map_err(|source| PinError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub(crate) fn pin_map(&self, name: &str, map: &Map) -> Result<(), PinError> {
        let path = self.maps().join(name);
        map.pin(&path).map_err(|source| PinError::Pin {
            what: format!("map {name}"),
            path,
            source,
        })
    }

    /// Pins a hook's link; the pin, not this process, now keeps the hook attached.
    pub(crate) fn pin_link(&self, target: &str, link: FdLink) -> Result<PinnedLink, PinError> {
        let path = self.links().join(file_name(target));
        link.pin(&path).map_err(|source| PinError::Pin {
            what: format!("link {target}"),
            path,
            source,
        })
    }

    /// Removes every pin: hooks detach once no process holds them.
    pub(crate) fn remove_all(&self) {
        for dir in [self.demand(), self.links(), self.programs(), self.maps()] {
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
            let _ = fs::remove_dir(&dir);
        }
        let _ = fs::remove_dir(&self.dir);
    }

    /// Adopts a previous daemon's pinned maps and links, and its syscall programs (`demand`).
    pub(crate) fn adopt(&self, demand: OnDemand) -> Result<Kernel, LoadError> {
        let maps = Maps::open(|name| {
            MapData::from_pin(self.maps().join(name))
                .and_then(Map::from_map_data)
                .map_err(|source| LoadError::Map { name, source })
        })?;
        Ok(Kernel {
            ebpf: None,
            rings: maps.rings,
            handles: Handles {
                maps: maps.state,
                enforce: maps.enforce,
                hooks: self.pinned_hooks(&demand),
                demand,
                identity_error: None,
            },
        })
    }

    /// The hooks a previous daemon pinned (each pin holds one attached link), and the
    /// syscall hooks whose programs it pinned.
    fn pinned_hooks(&self, demand: &OnDemand) -> Vec<HookStatus> {
        let mut hooks: Vec<HookStatus> = fs::read_dir(self.links())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| PinnedLink::from_pin(e.path()).is_ok())
            .map(|e| HookStatus::ok("pinned", target_name(&e.file_name().to_string_lossy())))
            .collect();
        hooks.extend(
            demand
                .hooks()
                .into_iter()
                .map(|(program, target)| HookStatus {
                    on_demand: true,
                    ..HookStatus::ok(program, target)
                }),
        );
        hooks.sort_by(|a, b| a.target.cmp(&b.target));
        hooks
    }
}

/// Descriptors of every pinned map and link, held by the running daemon: removing a pin
/// (an agent unlinking files on bpffs) then detaches nothing, and the daemon puts the pin
/// back so that a later daemon can still adopt the set.
pub(crate) struct PinGuard {
    held: std::sync::Mutex<Vec<(PathBuf, Held)>>,
}

enum Held {
    Map(MapData),
    /// None only while it is being pinned again.
    Link(Option<FdLink>),
}

impl PinGuard {
    /// Opens every pin under `pins` (maps and links).
    pub(crate) fn hold(pins: &Pins) -> Self {
        let mut held = Vec::new();
        let open = |dir: &Path, map: bool| {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(move |e| (e.path(), map))
        };
        for (path, map) in open(&pins.maps(), true).chain(open(&pins.links(), false)) {
            let opened = if map {
                MapData::from_pin(&path)
                    .map(Held::Map)
                    .map_err(|e| e.to_string())
            } else {
                PinnedLink::from_pin(&path)
                    .map(|l| Held::Link(Some(l.into())))
                    .map_err(|e| e.to_string())
            };
            match opened {
                Ok(h) => held.push((path, h)),
                Err(error) => {
                    tracing::warn!(pin = %path.display(), %error, "cannot hold a pin");
                }
            }
        }
        Self {
            held: std::sync::Mutex::new(held),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, Held)>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts back every pin that disappeared; returns how many.
    pub(crate) fn restore(&self) -> usize {
        let mut restored = 0;
        for (path, held) in self.lock().iter_mut() {
            if path.exists() {
                continue;
            }
            if let Some(parent) = path.parent() {
                let _ = fs::create_dir_all(parent);
            }
            let pinned = match held {
                Held::Map(map) => map.pin(&*path).map_err(|e| e.to_string()),
                Held::Link(slot) => match slot.take() {
                    // Pinning consumes the link; the pinned link gives it back.
                    Some(link) => link
                        .pin(&*path)
                        .map(|pinned| {
                            *slot = Some(pinned.into());
                        })
                        .map_err(|e| e.to_string()),
                    None => Err("the link was lost when it was last pinned".to_owned()),
                },
            };
            match pinned {
                Ok(()) => restored += 1,
                Err(error) => {
                    tracing::error!(pin = %path.display(), %error, "cannot restore a removed pin");
                }
            }
        }
        restored
    }
}

/// `tracepoint:syscalls:sys_enter_openat` <-> `tracepoint=syscalls=sys_enter_openat`
/// (bpffs names cannot hold `/`; `@` paths keep their `/` as `|`).
fn file_name(target: &str) -> String {
    target.replace(':', "=").replace('/', "|")
}

fn target_name(file: &str) -> String {
    file.replace('=', ":").replace('|', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_round_trip() {
        for t in [
            "tracepoint:syscalls:sys_enter_openat",
            "cgroup:connect4@/sys/fs/cgroup/unified",
        ] {
            assert!(!file_name(t).contains('/'));
            assert_eq!(target_name(&file_name(t)), t);
        }
    }
}
