//! The adversarial evasion suite (issue #7): an agent running as root inside its cgroup,
//! tagged in enforce mode, tries one way around its scope per case; each test asserts
//! that the attempt is stopped (refused with EPERM, or killed before any effect: no file
//! content printed, no marker written, no byte received by the target) and recorded. The
//! in-scope session shows the same setup raises no false positive.
//!
//! The attacker programs are in `cases/` (Python run with `python3 -I -u`, one shell
//! script); each says which technique it tries and why agent-monitor stops it.
//! `docs/SECURITY.md` maps every case to its test and lists what is not covered.
//!
//! Test names are `evasion::<family>::<case>`, so `cargo xtask test evasion` runs exactly
//! this suite.

mod common;

// An inline module named like the target, so that test names start with `evasion::`; its
// files sit next to this one.
#[path = "."]
mod evasion {
    mod escape;
    mod exec;
    mod exhaustion;
    mod in_scope;
    mod network;
    mod paths;
    mod refuse;
    mod uring;
}
