//! agent-monitor: an eBPF runtime monitor for AI-agent processes.

pub mod policy;
pub mod scope;
