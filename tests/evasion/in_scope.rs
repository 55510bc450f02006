//! Zero false positives: a realistic in-scope session under the very scope the evasion
//! cases run against completes with exit 0 and no violation record.

use std::{fs, process::Command};

use crate::common::{Env, p};
use agent_monitor_e2e::{Expected, HttpServer, s};

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("/usr/bin/git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[test]
fn a_realistic_in_scope_session_raises_no_violation() {
    let env = Env::start();
    // A local repository to clone (readable by the scope, not writable).
    git(&env.origin, &["init", "-q", "-b", "main"]);
    fs::write(env.origin.join("README"), "hello from origin\n").expect("write README");
    git(&env.origin, &["add", "README"]);
    git(
        &env.origin,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    let listener = env.allowed.try_clone().expect("clone listener");
    let _server = HttpServer::on(listener, "page from the allowed server\n");
    fs::write(
        env.ws.join("work.py"),
        "import pathlib, sys\nws = pathlib.Path(sys.argv[1])\ntext = (ws / 'repo' / 'README').read_text()\n(ws / 'out.txt').write_text(text.upper())\nprint('python done')\n",
    )
    .expect("write work.py");
    let ws = p(&env.ws);
    let script = format!(
        "set -e\ncd {ws}\nexport HOME={ws} GIT_CONFIG_NOSYSTEM=1\n\
         /usr/bin/git clone -q {origin} repo\n\
         /usr/bin/git -C repo log --oneline\n\
         /usr/bin/python3 -I {ws}/work.py {ws}\n\
         /usr/bin/curl -sS -o {ws}/page.html http://127.0.0.1:{port}/\n\
         /usr/bin/cat {ws}/page.html {ws}/out.txt\n",
        origin = p(&env.origin),
        port = env.allowed_port()
    );
    let run = env.run(&["/bin/sh", "-c", &script]);
    assert_eq!(
        run.out.status.code(),
        Some(0),
        "the session failed\n{}",
        env.describe(&run)
    );
    let out = run.stdout();
    assert!(
        out.contains("python done")
            && out.contains("page from the allowed server")
            && out.contains("HELLO FROM ORIGIN"),
        "{}",
        env.describe(&run)
    );
    // The last action (cat of out.txt) is recorded: everything before it was processed.
    let out_txt = env.ws.join("out.txt");
    env.daemon.wait_record("the session's last read", |r| {
        s(r, "/agent/task") == run.task
            && s(r, "/kind") == "file"
            && s(r, "/file/path") == p(&out_txt)
            && s(r, "/process/comm") == "cat"
    });
    let records = env.records(&run.task);
    let violations: Vec<_> = records
        .iter()
        .filter(|r| s(r, "/verdict") != "allowed")
        .collect();
    assert!(
        violations.is_empty(),
        "false positives:\n{}",
        env.describe(&run)
    );
    // It was watched: the clone, the interpreter and the connect were all seen.
    let python = fs::canonicalize("/usr/bin/python3").expect("python3's image");
    for want in [
        Expected::allowed("exec")
            .exec_path("/usr/bin/git")
            .action("none"),
        Expected::allowed("exec")
            .exec_path(p(&python))
            .action("none"),
        Expected::allowed("connect")
            .address("127.0.0.1")
            .port(env.allowed_port())
            .protocol("tcp")
            .action("none"),
    ] {
        env.expect(&run, &want);
    }
}

const EXITED_CHILD: &str = include_str!("cases/in_scope_exited_child.py");

#[test]
fn signalling_an_exited_child_before_reaping_it_is_in_scope() {
    let env = Env::start();
    let run = env.py(&[EXITED_CHILD], &[]);
    let out = run.stdout();
    for label in ["zombie", "pidfd_open", "kill", "reap"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{label}: DONE"))),
            "`{label}` did not go through\n{}",
            env.describe(&run)
        );
    }
    env.assert_no_violation(&run);
}
