//! What the daemon writes into the object at load: this kernel's structure offsets (from
//! BTF) and the devices of the monitor's own filesystems.

use agent_monitor_common::Offsets;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};

use crate::kernel::btf::Btf;

/// Why a map the programs read could not be filled in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FillError {
    #[error("map {0} is missing from the eBPF object")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, FillError> {
    ebpf.map_mut(name).ok_or(FillError::Missing(name))
}

fn fill_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> FillError {
    move |source| FillError::Map { name, source }
}

/// Structure offsets from this kernel's BTF, for the file and exec identity checks. They go
/// into the object's frozen `.rodata` before it loads (the verifier then knows them as
/// constants), so they are read first.
pub(super) fn struct_offsets() -> Result<Offsets, crate::kernel::btf::BtfError> {
    Btf::from_sys_fs()?.offsets()
}

/// Devices of the monitor's own filesystems, for the kernel's write check.
pub(super) fn write_protected(
    ebpf: &mut Ebpf,
    protected: &crate::host::mounts::Protected,
) -> Result<(), FillError> {
    let mut devs: HashMap<&mut MapData, u32, u8> =
        HashMap::try_from(map_mut(ebpf, "PROTECTED_DEVS")?).map_err(fill_err("PROTECTED_DEVS"))?;
    for (_, dev) in &protected.mounts {
        devs.insert(*dev, 1, 0)
            .map_err(fill_err("PROTECTED_DEVS"))?;
    }
    Ok(())
}
