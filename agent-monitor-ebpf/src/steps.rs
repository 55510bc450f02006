//! Bounded searches in the kernel programs, under `bpf_loop` when the kernel has it.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop};

/// 1 when the kernel has `bpf_loop` (Linux 5.17), written by the loader into frozen
/// `.rodata`: the verifier then follows one arm of [`search_steps`] and drops the other.
#[unsafe(no_mangle)]
pub static HAVE_BPF_LOOP: u32 = 0;

/// Runs `step(i, ctx)` for i in `0..n` (`n` at most `max`) until a step returns 1.
///
/// Verifier workaround: under `bpf_loop` the verifier checks a step once. Unrolled (the
/// fallback for kernels without it), a step is checked again for every iteration and on
/// every path that reaches the loop: the connect and sendmsg programs' host-rule search,
/// with the port search inside it, took most of the daemon's start to verify that way.
/// (The cgroup ancestor walk is cheaper to verify unrolled: its states prune.)
#[inline(always)]
pub fn search_steps(
    n: u32,
    max: u32,
    step: extern "C" fn(u64, *mut c_void) -> i64,
    ctx: *mut c_void,
) {
    // SAFETY: a static, always initialised; volatile so that the object's default is not
    // folded in.
    if unsafe { core::ptr::read_volatile(&raw const HAVE_BPF_LOOP) } != 0 {
        // SAFETY: `step` only touches `ctx`, which the caller keeps alive for the call.
        unsafe { bpf_loop(n, step as *mut c_void, ctx, 0) };
        return;
    }
    // A constant bound, with the count checked inside.
    for i in 0..max {
        if i >= n || step(u64::from(i), ctx) != 0 {
            break;
        }
    }
}
