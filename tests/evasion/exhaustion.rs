//! Exhaustion: an event flood (many threads, many chdirs) that overflows a one-page ring
//! buffer, and a pivot made while the flood still runs. The kernel decides before any
//! event is reserved, so the pivot is still stopped; what only the daemon can judge must
//! not slip through the lost events either.

use agent_monitor_e2e::Expected;

use crate::common::{Env, p};

const FLOOD: &str = include_str!("cases/exhaust_flood.py");

fn flooded() -> Env {
    let env = Env::start_with(&["--ring-buffer-bytes", "4096"]);
    std::fs::write(env.ws.join("flood"), "x").expect("write flood file");
    env
}

fn assert_drops(env: &Env) {
    let status = env.daemon.get_json("/v1/status");
    assert!(
        status["counters"]["dropped"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "the flood did not overflow the ring buffer (no drops): {status}"
    );
}

#[test]
fn flood_then_read_the_denied_file() {
    let env = flooded();
    let flood = env.ws.join("flood");
    let run = env.py(&[FLOOD], &[p(&flood), "secret", p(&env.secret)]);
    env.assert_no_leak(&run, &[&env.secret_text]);
    env.assert_stopped(&run, "pivot");
    assert_drops(&env);
    env.expect(&run, &env.secret_read(p(&env.secret)));
}

#[test]
fn flood_then_read_outside_files_read() {
    let env = flooded();
    let flood = env.ws.join("flood");
    let run = env.py(&[FLOOD], &[p(&flood), "outside", p(&env.outside_file)]);
    env.assert_no_leak(&run, &[&env.outside_text]);
    env.assert_stopped(&run, "pivot");
    assert_drops(&env);
    env.expect(&run, &Env::landlock_read(p(&env.outside_file)));
}

#[test]
fn flood_then_exec_a_forbidden_tool() {
    let env = flooded();
    let flood = env.ws.join("flood");
    let marker = env.ws.join("marker");
    let run = env.py(&[FLOOD], &[p(&flood), "exec", p(&marker)]);
    assert!(
        !marker.exists(),
        "the forbidden tool ran\n{}",
        env.describe(&run)
    );
    env.assert_stopped(&run, "pivot");
    assert_drops(&env);
    env.expect(
        &run,
        &Expected::violation("exec", "exec", "exec.allow")
            .exec_path("/usr/bin/touch")
            .action("refused")
            .layer("landlock")
            .after("killed-process"),
    );
}

#[test]
fn flood_then_connect_out_of_scope() {
    let env = flooded();
    let flood = env.ws.join("flood");
    let run = env.py(
        &[FLOOD],
        &[p(&flood), "connect", &env.target_port().to_string()],
    );
    let got = env.tcp_received();
    env.assert_nothing_received("pivot", &got, &run);
    env.assert_eperm(&run, "pivot");
    assert_drops(&env);
    env.expect(&run, &env.blocked_connect("127.0.0.1"));
}
