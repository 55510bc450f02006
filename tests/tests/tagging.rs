//! Who is an agent: forked children, processes placed in nested cgroups, and cgroups a
//! scope selects by path, including ones created after the daemon started.

use std::{fs, path::Path};

use agent_monitor_e2e::{
    Daemon, assert_exit, cgroup2_root, command_in_cgroup, remove_cgroup_tree, s, unique, wait_for,
    workspace,
};
use serde_json::Value;

fn scope(name: &str, ws: &Path, select: Option<&str>) -> String {
    let select = select
        .map(|g| format!("  select:\n    cgroup: \"{g}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata:\n  name: {name}\n  owner: tagging@example.org\nspec:\n{select}  exec:\n    allow: [/bin/sh, /usr/bin/cat]\n  files:\n    read: [\"{ws}/**\"]\n",
        ws = ws.display()
    )
}

fn read_of(path: &Path) -> impl Fn(&Value) -> bool + '_ {
    move |r| s(r, "/kind") == "file" && s(r, "/file/path") == path.to_str().unwrap_or_default()
}

#[test]
fn a_forked_child_is_tagged_with_its_parent_recorded() {
    let (_g, ws) = workspace();
    fs::write(ws.join("a.txt"), "a").expect("write");
    let d = Daemon::start(&[("t.yaml", &scope("tag", &ws, None))]);
    let script = format!("/usr/bin/cat {}/a.txt; true", ws.display());
    assert_exit(
        &d.exec("tag", &["--task", "fork-1"], &["/bin/sh", "-c", &script]),
        0,
    );
    let sh = d.wait_record("exec of sh", |r| {
        s(r, "/kind") == "exec" && r["exec"]["argv"][0] == "/bin/sh"
    });
    let cat = d.wait_record("cat's read", read_of(&ws.join("a.txt")));
    assert_eq!(s(&cat, "/agent/task"), "fork-1");
    assert_eq!(s(&cat, "/process/comm"), "cat");
    assert_ne!(
        cat["process"]["pid"], sh["process"]["pid"],
        "cat is its own process"
    );
    assert_eq!(
        cat["process"]["ppid"], sh["process"]["pid"],
        "cat's parent is the shell"
    );
}

#[test]
fn a_process_placed_in_a_nested_cgroup_is_tagged() {
    let (_g, ws) = workspace();
    fs::write(ws.join("n.txt"), "n").expect("write");
    let d = Daemon::start(&[("t.yaml", &scope("nest", &ws, None))]);
    let (task, dir) = d.create_task("nest");
    let nested = dir.join("inner/deeper");
    fs::create_dir_all(&nested).expect("mkdir nested");
    // Started by this (untagged) test process straight into the nested cgroup: only the
    // ancestor walk can tag it.
    let out = command_in_cgroup(
        &nested,
        "/usr/bin/cat",
        &[ws.join("n.txt").to_str().unwrap_or_default()],
    )
    .output()
    .expect("run cat in nested cgroup");
    assert!(out.status.success(), "{out:?}");
    let r = d.wait_record("read from nested cgroup", read_of(&ws.join("n.txt")));
    assert_eq!(s(&r, "/agent/task"), task);
    assert_eq!(s(&r, "/verdict"), "allowed");
    assert!(
        s(&r, "/process/cgroup").ends_with(&format!("/{task}/inner/deeper")),
        "{r}"
    );
}

#[test]
fn select_cgroup_adopts_existing_and_new_cgroups() {
    let (_g, ws) = workspace();
    fs::write(ws.join("s.txt"), "s").expect("write");
    let top = unique("am-e2e-sel");
    let root = cgroup2_root();
    let guard = CgroupGuard(root.join(&top));
    fs::create_dir_all(root.join(&top).join("agent-old")).expect("mkdir");
    let d = Daemon::start(&[(
        "sel.yaml",
        &scope("sel", &ws, Some(&format!("/{top}/agent-*"))),
    )]);
    let agents = |cg: &str| {
        let want = format!("/{top}/{cg}");
        let d = &d;
        move || {
            let list = d.get_json("/v1/agents");
            list.as_array()?
                .iter()
                .find(|t| s(t, "/cgroup") == want)
                .map(|t| s(t, "/id").to_string())
        }
    };
    let old = wait_for("the existing cgroup to be adopted", agents("agent-old"));
    fs::create_dir(root.join(&top).join("agent-new")).expect("mkdir");
    fs::create_dir(root.join(&top).join("other")).expect("mkdir");
    let new = wait_for("the new cgroup to be adopted", agents("agent-new"));
    assert!(
        old.starts_with("sel-cg") && new.starts_with("sel-cg"),
        "{old} {new}"
    );
    let out = command_in_cgroup(
        &root.join(&top).join("agent-new"),
        "/usr/bin/cat",
        &[ws.join("s.txt").to_str().unwrap_or_default()],
    )
    .output()
    .expect("cat");
    assert!(out.status.success());
    let r = d.wait_record("read by the selected agent", read_of(&ws.join("s.txt")));
    assert_eq!(s(&r, "/agent/task"), new);
    assert_eq!(s(&r, "/agent/scope"), "sel");
    // A sibling that does not match is no agent.
    let list = d.get_json("/v1/agents");
    assert!(
        list.as_array()
            .is_some_and(|l| l.iter().all(|t| !s(t, "/cgroup").ends_with("/other"))),
        "{list}"
    );
    drop(d);
    drop(guard);
}

struct CgroupGuard(std::path::PathBuf);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.0);
    }
}
