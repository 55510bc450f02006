//! The kernel side as the daemon sees it: the eBPF object, loading and attaching it
//! (`loader`), the struct offsets it needs (`btf`), pinning for a restarted daemon
//! (`pins`), the ring buffers (`reader`) and the wire format of their records (`decoder`).
//! Uses only `host`.

pub(crate) mod btf;
pub(crate) mod decoder;
pub(crate) mod demand;
pub(crate) mod ebpf_object;
pub(crate) mod loader;
pub(crate) mod maps;
pub(crate) mod pins;
pub(crate) mod reader;
pub(crate) mod ring_fill;
pub(crate) mod tracefs;
