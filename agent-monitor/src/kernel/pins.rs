//! Pinned state under bpffs, so enforcement outlives the daemon: every map the daemon uses
//! and every hook's link. A restarted daemon adopts them instead of loading a second copy
//! of the programs, and reads what the ring buffer collected while it was down.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf},
    programs::links::{FdLink, PinnedLink},
};

use crate::{
    control::enforce::Enforcer,
    kernel::loader::{Handles, HookStatus, Kernel, LoadError},
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

    fn links(&self) -> PathBuf {
        self.dir.join("links")
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
        for dir in [self.links(), self.maps()] {
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
            let _ = fs::remove_dir(&dir);
        }
        let _ = fs::remove_dir(&self.dir);
    }

    /// Adopts a previous daemon's pinned maps and links.
    pub(crate) fn adopt(&self) -> Result<Kernel, LoadError> {
        let open = |name: &'static str| -> Result<MapData, LoadError> {
            MapData::from_pin(self.maps().join(name))
                .map_err(|source| LoadError::Map { name, source })
        };
        let events =
            RingBuf::try_from(Map::RingBuf(open("EVENTS")?)).map_err(|source| LoadError::Map {
                name: "EVENTS",
                source,
            })?;
        let verdicts = RingBuf::try_from(Map::RingBuf(open("VERDICTS")?)).map_err(|source| {
            LoadError::Map {
                name: "VERDICTS",
                source,
            }
        })?;
        let hash = |name: &'static str| open(name).map(Map::HashMap);
        let map_err = |name: &'static str| move |source| LoadError::Map { name, source };
        let lru = |name: &'static str| open(name).map(Map::LruHashMap);
        let enforcer = Enforcer {
            config: HashMap::try_from(hash("AGENT_CONFIG")?).map_err(map_err("AGENT_CONFIG"))?,
            net: LpmTrie::try_from(Map::LpmTrie(open("NET_RULES")?))
                .map_err(map_err("NET_RULES"))?,
            bind: HashMap::try_from(hash("BIND_PORTS")?).map_err(map_err("BIND_PORTS"))?,
            exec_allow: HashMap::try_from(hash("EXEC_ALLOW")?).map_err(map_err("EXEC_ALLOW"))?,
            file_deny: HashMap::try_from(hash("FILE_DENY")?).map_err(map_err("FILE_DENY"))?,
            pids: HashMap::try_from(hash("AGENT_PIDS")?).map_err(map_err("AGENT_PIDS"))?,
            drops: HashMap::try_from(hash("AGENT_DROPS")?).map_err(map_err("AGENT_DROPS"))?,
            file_ok: HashMap::try_from(lru("FILE_OK")?).map_err(map_err("FILE_OK"))?,
            host: HashMap::try_from(hash("HOST_RULES")?).map_err(map_err("HOST_RULES"))?,
        };
        let handles = Handles {
            agent_cgroups: HashMap::try_from(hash("AGENT_CGROUPS")?)
                .map_err(map_err("AGENT_CGROUPS"))?,
            tag_state: Array::try_from(Map::Array(open("TAG_STATE")?))
                .map_err(map_err("TAG_STATE"))?,
            counters: PerCpuArray::try_from(Map::PerCpuArray(open("COUNTERS")?))
                .map_err(map_err("COUNTERS"))?,
            enforcer,
            dns_learned: HashMap::try_from(hash("DNS_LEARNED")?).map_err(map_err("DNS_LEARNED"))?,
            hooks: self.pinned_hooks(),
            identity_error: None,
        };
        Ok(Kernel {
            ebpf: None,
            events,
            verdicts,
            handles,
        })
    }

    /// The hooks a previous daemon pinned (each pin holds one attached link).
    fn pinned_hooks(&self) -> Vec<HookStatus> {
        let mut hooks: Vec<HookStatus> = fs::read_dir(self.links())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| PinnedLink::from_pin(e.path()).is_ok())
            .map(|e| HookStatus {
                program: "pinned",
                target: target_name(&e.file_name().to_string_lossy()),
                attached: true,
                error: None,
            })
            .collect();
        hooks.sort_by(|a, b| a.target.cmp(&b.target));
        hooks
    }
}

/// Descriptors of every pinned map and link, held by the running daemon: removing a pin
/// (an agent unlinking files on bpffs) then detaches nothing, and the daemon puts the pin
/// back so that a later daemon can still adopt the set.
pub(crate) struct PinGuard {
    held: Vec<(PathBuf, std::os::fd::OwnedFd)>,
}

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;

/// `union bpf_attr` for `BPF_OBJ_*`: `pathname` (u64) @0, `bpf_fd` (u32) @8.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

fn bpf_obj(cmd: libc::c_long, path: &Path, fd: u32) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: `attr` and the string it points to outlive the call; the size is exact.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(&attr),
            size_of::<ObjAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl PinGuard {
    /// Opens every pin under `pins` (maps and links).
    pub(crate) fn hold(pins: &Pins) -> Self {
        use std::os::fd::FromRawFd as _;
        let mut held = Vec::new();
        for dir in [pins.maps(), pins.links()] {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                match bpf_obj(BPF_OBJ_GET, &path, 0).and_then(|fd| {
                    i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
                }) {
                    // SAFETY: a descriptor the kernel just returned to us alone.
                    Ok(fd) => held.push((path, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })),
                    Err(e) => {
                        tracing::warn!(pin = %path.display(), error = %e, "cannot hold a pin");
                    }
                }
            }
        }
        Self { held }
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Puts back every pin that disappeared; returns how many.
    pub(crate) fn restore(&self) -> usize {
        use std::os::fd::AsRawFd as _;
        let mut restored = 0;
        for (path, fd) in &self.held {
            if path.exists() {
                continue;
            }
            if let Some(parent) = path.parent() {
                let _ = fs::create_dir_all(parent);
            }
            let raw = u32::try_from(fd.as_raw_fd()).unwrap_or_default();
            match bpf_obj(BPF_OBJ_PIN, path, raw) {
                Ok(_) => restored += 1,
                Err(e) => {
                    tracing::error!(pin = %path.display(), error = %e, "cannot restore a removed pin");
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
