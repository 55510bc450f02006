//! The field corpus: real programs the end-to-end tests run under enforce scopes
//! (`tests/tests/field.rs`), installed by `cargo xtask setup` under `target/field`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run_cmd;

/// Where the field corpus lives (`tests/tests/field.rs` looks for it here, or in
/// `$AGENT_MONITOR_FIELD`): `npm/` (the MCP servers), `wheels/` (pytest and a small
/// package), `bin/parallelism` (the Rust probe).
fn field_dir(root: &Path) -> PathBuf {
    root.join("target/field")
}

/// The system programs the field corpus runs by their Debian paths, and the packages that
/// provide them when they are absent.
pub fn missing_packages() -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (path, package) in [
        ("/usr/bin/git", "git"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/tar", "tar"),
        ("/usr/bin/gzip", "gzip"),
        ("/usr/bin/find", "findutils"),
        ("/usr/bin/sed", "sed"),
        ("/usr/bin/python3", "python3"),
        ("/usr/bin/node", "nodejs"),
        ("/usr/bin/npm", "npm"),
    ] {
        if !Path::new(path).is_file() {
            missing.push(package);
        }
    }
    // `python3 -m venv` needs ensurepip, which Debian ships apart.
    let venv_works = Command::new("/usr/bin/python3")
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !venv_works {
        missing.push("python3-venv");
    }
    missing
}

/// The field corpus: real programs the end-to-end tests run under enforce scopes
/// (`tests/tests/field.rs`), installed once under `target/field` from pinned manifests in
/// `tests/fixtures/field`: two MCP servers from npm (`npm ci` of a committed lockfile),
/// the wheels of pytest and tabulate (`pip download --no-deps` of a pinned
/// requirements file) and a one-file Rust program built with `rustc`. Each part is
/// skipped when what it would install is already there.
pub fn install(root: &Path) -> anyhow::Result<()> {
    let dir = field_dir(root);
    let fixtures = root.join("tests/fixtures/field");
    field_npm(&fixtures.join("npm"), &dir.join("npm"))?;
    field_wheels(
        root,
        &fixtures.join("python/requirements.txt"),
        &dir.join("wheels"),
    )?;
    field_probe(
        &fixtures.join("parallelism.rs"),
        &dir.join("bin/parallelism"),
    )
}

/// True when `a` and `b` both exist with the same bytes.
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((fs::read(a), fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// The MCP servers: `npm ci` of the committed package.json and lockfile.
fn field_npm(manifest: &Path, dir: &Path) -> anyhow::Result<()> {
    let lock = manifest.join("package-lock.json");
    let installed = same_file(&lock, &dir.join("package-lock.json"))
        && same_file(&manifest.join("package.json"), &dir.join("package.json"))
        && dir.join("node_modules/.package-lock.json").is_file();
    if installed {
        return Ok(());
    }
    let node = crate::setup::output(Command::new("/usr/bin/node").arg("--version"))
        .context("the field corpus needs Node.js at /usr/bin/node")?;
    let major: u32 = node
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected `node --version`: {node}"))?;
    if major < 20 {
        bail!(
            "the field corpus's MCP servers need Node.js >= 20; /usr/bin/node is {}",
            node.trim()
        );
    }
    eprintln!(
        "xtask setup: npm ci of the field corpus into {}",
        dir.display()
    );
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    copy(&manifest.join("package.json"), &dir.join("package.json"))?;
    // `npm ci` installs exactly the lockfile; the hidden lockfile it writes into
    // node_modules when done marks a complete install.
    copy(&lock, &dir.join("package-lock.json"))?;
    run_cmd(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(dir),
    )
    .context("npm ci of tests/fixtures/field/npm")?;
    if !dir.join("node_modules/.package-lock.json").is_file() {
        bail!(
            "npm ci left no node_modules/.package-lock.json in {}",
            dir.display()
        );
    }
    Ok(())
}

/// The wheels: exactly the pinned requirements (each dependency is pinned there too),
/// downloaded with the tools virtualenv's pip. A copy of the requirements file marks a
/// complete download.
fn field_wheels(root: &Path, requirements: &Path, dir: &Path) -> anyhow::Result<()> {
    let stamp = dir.join("requirements.txt");
    if same_file(requirements, &stamp) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: downloading the field corpus's wheels into {}",
        dir.display()
    );
    let _ = fs::remove_file(&stamp);
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    run_cmd(
        Command::new(crate::install::tools_venv(root).join("bin/pip"))
            .args([
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
            ])
            .arg(dir)
            .arg("--requirement")
            .arg(requirements)
            // The machine's own wheel directory or index settings are not the pins.
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env_remove("PIP_FIND_LINKS")
            .env_remove("PIP_NO_INDEX"),
    )
    .context("pip download of tests/fixtures/field/python/requirements.txt")?;
    copy(requirements, &stamp)
}

/// The Rust probe: one file, built with the stable `rustc` when the source is newer.
fn field_probe(source: &Path, binary: &Path) -> anyhow::Result<()> {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(src)) = (modified(binary), modified(source))
        && built >= src
    {
        return Ok(());
    }
    eprintln!(
        "xtask setup: building the field corpus's Rust probe {}",
        binary.display()
    );
    let dir = binary.parent().context("the probe has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    run_cmd(
        Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .args(["--edition", "2021", "-C", "opt-level=2", "-o"])
            .arg(binary)
            .arg(source),
    )
    .context("building tests/fixtures/field/parallelism.rs")
}
