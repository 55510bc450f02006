//! agent-monitor: an eBPF runtime monitor for AI-agent processes.
//!
//! Pipeline: [`loader`] attaches the kernel programs; [`reader`] drains the ring buffer;
//! [`decoder`] turns records into events; [`pipeline`] keeps the [`proctable`], resolves
//! paths ([`resolve`]), asks the [`policy`] engine and hands [`record`]s to the [`sink`]s.
//! [`state`] and [`tasks`] hold the agents; [`api`] is the status socket, fed by [`feed`]
//! (recent records and followers), [`usage`] (declared vs used) and [`metrics`].
//! [`kubernetes`] makes containers of this node's pods agents; [`systemd`] tells systemd
//! when it is ready.

pub mod actions;
pub mod api;
pub mod btf;
pub mod catalog;
pub mod cgroupfs;
pub mod cli;
pub mod commands;
pub mod daemon;
pub mod decoder;
pub mod dns;
pub mod ebpf_object;
pub mod enforce;
pub mod escape;
pub mod feed;
pub mod kubernetes;
pub mod landlock;
pub mod loader;
pub mod metrics;
pub mod persist;
pub mod pins;
pub mod pipeline;
pub mod policy;
pub mod proctable;
pub mod reader;
pub mod record;
pub mod resolve;
pub mod ring_fill;
pub mod scope;
pub mod seccomp;
pub mod sink;
pub mod sockets;
pub mod state;
pub mod syscalls;
pub mod systemd;
pub mod tasks;
pub mod usage;
