//! Exec: running a forbidden tool under another name or through another door. Every exec
//! of a tagged process is judged by the inode of the image that really runs, so the marker
//! the tool would write never appears.

use crate::common::{Env, Run, each, p};

const COPY: &str = include_str!("cases/exec_copy.py");
const SPAWN: &str = include_str!("cases/exec_spawn.py");
const SPAWN_SH: &str = include_str!("cases/exec_spawn.sh");
const INTERPRETER: &str = include_str!("cases/exec_interpreter.py");
const MEMFD: &str = include_str!("cases/exec_memfd.py");

/// Asserts the forbidden tool did not run (no marker), the attempt was stopped and an exec
/// violation was recorded.
fn tool_did_not_run(env: &Env, run: &Run, marker: &std::path::Path) {
    assert!(
        !marker.exists(),
        "the forbidden tool ran (the marker exists)\n{}",
        env.describe(run)
    );
    env.assert_stopped(run, "exec");
    env.violation(run, "exec", |_| true);
}

#[test]
fn copied_symlinked_and_loader_run_binaries() {
    let env = Env::start();
    let payload = env.ws.join("payload.bin");
    std::fs::copy("/usr/bin/touch", &payload).expect("copy payload");
    each(&["copy", "symlink", "loader"], |technique| {
        let marker = env.ws.join(format!("marker-{technique}"));
        let run = env.py(&[COPY], &[p(&env.ws), p(&payload), p(&marker), technique]);
        tool_did_not_run(&env, &run, &marker);
    });
}

#[test]
fn python_spawning_a_forbidden_tool() {
    let env = Env::start();
    each(&["subprocess", "system", "execv"], |technique| {
        let marker = env.ws.join(format!("marker-{technique}"));
        let run = env.py(&[SPAWN], &[p(&marker), technique]);
        tool_did_not_run(&env, &run, &marker);
    });
}

#[test]
fn a_shell_spawning_a_forbidden_tool() {
    let env = Env::start();
    let marker = env.ws.join("marker");
    let run = env.run(&["/bin/sh", "-c", SPAWN_SH, "sh", p(&marker)]);
    tool_did_not_run(&env, &run, &marker);
}

#[test]
fn a_script_whose_interpreter_is_forbidden() {
    let env = Env::start();
    each(&["shebang", "shebang-link"], |technique| {
        let marker = env.ws.join(format!("marker-{technique}"));
        let run = env.py(&[INTERPRETER], &[p(&env.ws), p(&marker), technique]);
        tool_did_not_run(&env, &run, &marker);
    });
}

#[test]
fn fileless_exec_from_a_memfd() {
    let env = Env::start();
    // The payload is in the workspace already (downloaded, say): reading it is in scope.
    let payload = env.ws.join("payload.bin");
    std::fs::copy("/usr/bin/touch", &payload).expect("copy payload");
    each(&["execveat", "proc-fd"], |technique| {
        let marker = env.ws.join(format!("marker-{technique}"));
        let run = env.py(&[MEMFD], &[p(&payload), p(&marker), technique]);
        tool_did_not_run(&env, &run, &marker);
    });
}
