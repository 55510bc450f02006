//! The kernel programs, built by build.rs (aya-build) and embedded in the binary.

/// The BPF ELF object of agent-monitor-ebpf.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-monitor"));
