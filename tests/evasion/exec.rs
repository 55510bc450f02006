//! Exec: running a forbidden tool under another name or through another door. Every exec
//! of a tagged process is judged by the inode of the image that really runs, so the marker
//! the tool would write never appears.

use agent_monitor_e2e::Expected;

use crate::common::{Env, Run, each, p};

const COPY: &str = include_str!("cases/exec_copy.py");
const SPAWN: &str = include_str!("cases/exec_spawn.py");
const SPAWN_SH: &str = include_str!("cases/exec_spawn.sh");
const INTERPRETER: &str = include_str!("cases/exec_interpreter.py");
const MEMFD: &str = include_str!("cases/exec_memfd.py");

/// How the kernel stopped an exec: Landlock refused it (the image is not executable under
/// the scope) and the daemon then killed the process, or an eBPF program killed it at
/// `sched_process_exec` (an image Landlock cannot judge by its path).
#[derive(Debug, Clone, Copy)]
enum Stop {
    Landlock,
    Ebpf,
}

/// The `exec.allow` violation of running `image`, stopped as `stop` says.
fn exec_violation(image: &str, stop: Stop) -> Expected {
    let want = Expected::violation("exec", "exec", "exec.allow").exec_path(image);
    match stop {
        Stop::Landlock => want
            .action("refused")
            .layer("landlock")
            .after("killed-process"),
        Stop::Ebpf => want.action("killed-process").layer("ebpf"),
    }
}

/// Asserts the forbidden tool did not run (no marker), the attempt was stopped and the
/// exec violation of `image` was recorded as `stop` says.
fn tool_did_not_run(env: &Env, run: &Run, marker: &std::path::Path, image: &str, stop: Stop) {
    assert!(
        !marker.exists(),
        "the forbidden tool ran (the marker exists)\n{}",
        env.describe(run)
    );
    env.assert_stopped(run, "exec");
    env.expect(run, &exec_violation(image, stop));
}

#[test]
fn copied_symlinked_and_loader_run_binaries() {
    let env = Env::start();
    let payload = env.ws.join("payload.bin");
    std::fs::copy("/usr/bin/touch", &payload).expect("copy payload");
    let copy = env.ws.join("cat");
    each(
        &[
            // Killed at sched_process_exec: the image's inode is in no allow list.
            ("copy", p(&copy), Stop::Ebpf),
            ("symlink", "/usr/bin/touch", Stop::Landlock),
            (
                "loader",
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                Stop::Ebpf,
            ),
        ],
        |(technique, image, stop)| {
            let marker = env.ws.join(format!("marker-{technique}"));
            let run = env.py(&[COPY], &[p(&env.ws), p(&payload), p(&marker), technique]);
            tool_did_not_run(&env, &run, &marker, image, stop);
        },
    );
}

#[test]
fn python_spawning_a_forbidden_tool() {
    let env = Env::start();
    each(&["subprocess", "system", "execv"], |technique| {
        let marker = env.ws.join(format!("marker-{technique}"));
        let run = env.py(&[SPAWN], &[p(&marker), technique]);
        tool_did_not_run(&env, &run, &marker, "/usr/bin/touch", Stop::Landlock);
    });
}

#[test]
fn a_shell_spawning_a_forbidden_tool() {
    let env = Env::start();
    let marker = env.ws.join("marker");
    let run = env.run(&["/bin/sh", "-c", SPAWN_SH, "sh", p(&marker)]);
    tool_did_not_run(&env, &run, &marker, "/usr/bin/touch", Stop::Landlock);
}

#[test]
fn a_script_whose_interpreter_is_forbidden() {
    let env = Env::start();
    each(&["shebang", "shebang-link"], |technique| {
        let marker = env.ws.join(format!("marker-{technique}"));
        let run = env.py(&[INTERPRETER], &[p(&env.ws), p(&marker), technique]);
        // Landlock refuses the exec of the script itself, before its interpreter starts.
        let script = env.ws.join("tool");
        tool_did_not_run(&env, &run, &marker, p(&script), Stop::Landlock);
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
        tool_did_not_run(&env, &run, &marker, "/memfd:helper (deleted)", Stop::Ebpf);
    });
}
