//! Kernel programs of agent-monitor.
//!
//! Every hook first decides "is the current task an agent?" (see [`tag`]); untagged tasks
//! return right after that lookup. Tagged activity is written to one ring buffer.
// Inline assembly for the tracepoint field loads (`process::tp_field`) and an atomic add
// (`tag::pid_tags_changed`).
#![feature(asm_experimental_arch)]
#![no_std]
#![no_main]

mod cgroup;
mod dns;
mod enforce;
mod escape;
mod file;
mod maps;
mod net;
mod process;
mod steps;
mod tag;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_send_signal and bpf_probe_read_* need a GPL-compatible license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
