//! The real-work section's input: the generated tree and package, the workspace tmpfs,
//! and the scopes each workload runs under.

use super::*;

/// `realwork-NAME-MODE`, NAME reduced to what scope names allow (`[a-z0-9-]`).
pub(super) fn scope_name(workload: &str, mode: &str) -> String {
    let name: String = workload
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("realwork-{name}-{mode}")
}

/// The scope of one workload: its programs, its inputs, the run directory writable.
pub(super) fn scope_yaml(name: &str, mode: &str, w: &Workload, ws: &Ws) -> String {
    let list = |v: &[String]| v.join(", ");
    let mut exec = vec!["/bin/sh".to_string()];
    exec.extend(w.exec.iter().cloned());
    [
        "apiVersion: agent-monitor.dev/v1".to_string(),
        "kind: AgentScope".to_string(),
        format!("metadata: {{name: {name}, owner: bench@example.org}}"),
        "spec:".to_string(),
        format!("  mode: {mode}"),
        "  onViolation: kill-agent".to_string(),
        format!("  exec: {{allow: [{}]}}", list(&exec)),
        format!(
            "  files: {{read: [{}], write: [{}/**], list: [{}]}}",
            list(&w.read),
            ws.run.display(),
            list(&w.list)
        ),
    ]
    .join("\n")
        + "\n"
}

/// The three workloads (0.1 to 1.5 s each here) and an empty task for reference.
pub(super) fn workloads(ws: &Ws) -> anyhow::Result<Vec<Workload>> {
    let home = format!("{}/**", ws.home.display());
    // Debian's python3 reads its sitecustomize.py from /etc/python3.X (a symlink in /usr/lib).
    let py = fs::canonicalize("/usr/bin/python3").context("resolving /usr/bin/python3")?;
    let py_etc = format!(
        "/etc/{}/**",
        py.file_name().unwrap_or_default().to_string_lossy()
    );
    let git = Workload {
        name: "git",
        script: [
            "cd repo",
            "git init -q",
            "git add d0*",
            "git commit -qm 'first third'",
            "git add d1*",
            "git commit -qm 'second third'",
            "git add -A",
            "git commit -qm rest",
            "git log --stat >/dev/null",
            "git gc -q",
            "cd ..",
            "git clone -q repo clone",
            "git -C clone log --oneline >/dev/null",
        ]
        .join(" && "),
        exec: vec!["/usr/bin/git".into(), "/usr/lib/git-core/**".into()],
        read: vec![
            home.clone(),
            "/etc/gitconfig".into(),
            "/usr/share/git-core/**".into(),
        ],
        list: vec![],
        copy: &[("tree", "repo")],
        reference: false,
    };
    let python = Workload {
        name: "python",
        script: "python3 -m compileall -q pkg && cd pkg && python3 -m p.main >/dev/null".into(),
        exec: vec!["/usr/bin/python3".into()],
        read: vec![home.clone(), py_etc],
        list: vec![],
        copy: &[("pkg", "pkg")],
        reference: false,
    };
    let tar = Workload {
        name: "tar+gzip",
        script: format!(
            "tar czf src.tgz -C {} src && mkdir x && tar xzf src.tgz -C x && rm -rf x",
            ws.root.display()
        ),
        exec: ["tar", "gzip", "mkdir", "rm"]
            .iter()
            .map(|b| format!("/usr/bin/{b}"))
            .collect(),
        read: vec![home, format!("{}/**", ws.src.display())],
        // `-C ws` opens the workspace directory (O_DIRECTORY, as the base of its *at calls;
        // never read): the daemon and Landlock judge that open as a listing.
        list: vec![ws.root.display().to_string()],
        copy: &[],
        reference: false,
    };
    // What a task costs by itself: `exec` asks the daemon for it (cgroup, Landlock, seccomp)
    // and the daemon records its start and end.
    let empty = Workload {
        name: "empty task",
        script: "true".into(),
        exec: vec![],
        read: vec![],
        list: vec![],
        copy: &[],
        reference: true,
    };
    Ok(vec![git, python, tar, empty])
}

/// `ws/src/tree` (30 directories of 10 text files), `ws/src/pkg/p` (400 modules and a
/// `main` that imports them all), `ws/home/.gitconfig`.
pub(super) fn workspace(dir: &Path) -> anyhow::Result<Ws> {
    let root = dir.join("realwork");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // A tmpfs of its own: this VM's disk is ext4 without a journal, whose inode allocator
    // skips inodes deleted in the last 5 to 35 s (reading each one's inode block): creating
    // files soon after a run deleted hundreds cost more than the monitor, and varied.
    let tmpfs = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1g,mode=0755",
            "am-bench-realwork",
        ])
        .arg(&root)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ws = Ws {
        src: root.join("src"),
        home: root.join("home"),
        run: root.join("run"),
        root,
        tmpfs,
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for d in 0..DIRS {
        let dir = ws.src.join(format!("tree/d{d:02}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for f in 0..FILES_PER_DIR {
            let mut text = String::new();
            for line in 0..(40 + next() % 40) {
                write!(text, "{line}:")?;
                for _ in 0..(4 + next() % 8) {
                    let w = WORDS[(next() % 16) as usize];
                    write!(text, " {w}")?;
                }
                text.push('\n');
            }
            fs::write(dir.join(format!("f{f}.txt")), text)?;
        }
    }
    let pkg = ws.src.join("pkg/p");
    fs::create_dir_all(&pkg).with_context(|| format!("creating {}", pkg.display()))?;
    fs::write(pkg.join("__init__.py"), "")?;
    for m in 0..MODULES {
        let mut py = String::from("import os\n\n");
        for k in 0..FUNCS_PER_MODULE {
            write!(
                py,
                "def f{k}(x, y={k}):\n    \"\"\"doc {m} {k}\"\"\"\n    z = [i * {k} + y for i in \
                 range(x) if i % 3]\n    return {{\"k\": z, \"n\": len(z), \"s\": \"{m}-{k}\"}}\n\n"
            )?;
        }
        write!(
            py,
            "class C{m}:\n    def m(self):\n        return f1(10)\n\n\nif __name__ == \
             \"__main__\":\n    print(len(f2(100)[\"k\"]))\n"
        )?;
        fs::write(pkg.join(format!("m{m:03}.py")), py)?;
    }
    fs::write(
        pkg.join("main.py"),
        format!(
            "import importlib\n\ntotal = 0\nfor i in range({MODULES}):\n    m = \
             importlib.import_module(f\"p.m{{i:03}}\")\n    total += m.f1(10)[\"n\"] + \
             getattr(m, f\"C{{i}}\")().m()[\"n\"]\nprint(total)\n"
        ),
    )?;
    fs::create_dir_all(&ws.home)?;
    fs::write(
        ws.home.join(".gitconfig"),
        "[user]\n\tname = Bench\n\temail = bench@example.org\n[init]\n\tdefaultBranch = main\n",
    )?;
    Ok(ws)
}
