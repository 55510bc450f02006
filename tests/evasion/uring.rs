//! Bypassing the syscall tracepoints: `io_uring` performs opens, reads, writes and connects
//! without the open/connect syscalls the hooks watch. The intended stop is at the door:
//! `io_uring_setup` fails with EPERM for an agent and is recorded as an escape.

use std::fs;

use crate::common::{Env, Run, p};
use agent_monitor_e2e::s;

const LIB: &str = include_str!("cases/uring_lib.py");
const OPS: &str = include_str!("cases/uring_ops.py");

fn setup_refused_and_recorded(env: &Env, run: &Run) {
    env.assert_eperm(run, "setup");
    env.expect(run, &Env::seccomp_refused("io_uring_setup"));
}

#[test]
fn io_uring_read_of_a_denied_file() {
    let env = Env::start();
    let run = env.py(&[LIB, OPS], &["read", p(&env.secret)]);
    env.assert_no_leak(&run, &[&env.secret_text]);
    setup_refused_and_recorded(&env, &run);
}

#[test]
fn io_uring_read_of_a_file_outside_files_read() {
    let env = Env::start();
    let run = env.py(&[LIB, OPS], &["read", p(&env.outside_file)]);
    env.assert_no_leak(&run, &[&env.outside_text]);
    setup_refused_and_recorded(&env, &run);
}

#[test]
fn io_uring_write_outside_files_write() {
    let env = Env::start();
    let marker = env.outside.join("marker");
    let content = format!("MARKER-{}", env.secret_text);
    let run = env.py(&[LIB, OPS], &["write", p(&marker), &content]);
    let written = fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        !written.contains(&content),
        "the marker's content was written\n{}",
        env.describe(&run)
    );
    setup_refused_and_recorded(&env, &run);
}

#[test]
fn io_uring_connect_and_send_out_of_scope() {
    let env = Env::start();
    let run = env.py(&[LIB, OPS], &["connect", &env.target_port().to_string()]);
    let got = env.tcp_received();
    env.assert_nothing_received("connect", &got, &run);
    setup_refused_and_recorded(&env, &run);
    // Whatever the ring did, nothing it did was allowed.
    assert!(
        env.records(&run.task)
            .iter()
            .all(|r| s(r, "/kind") != "connect" || s(r, "/verdict") == "violation"),
        "{}",
        env.describe(&run)
    );
}
