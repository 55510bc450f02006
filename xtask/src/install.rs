//! `cargo xtask install | uninstall`: the daemon, its systemd unit, the default config and
//! the example scopes, laid out as `deploy/systemd/agent-monitor.service` expects; and the
//! tools the deployment tests need (`test_tools`, called by `setup`).
//!
//! | what | where |
//! |---|---|
//! | binary | `$DESTDIR$PREFIX/bin/agent-monitor` (PREFIX default `/usr/local`) |
//! | unit | `$DESTDIR/etc/systemd/system/agent-monitor.service` |
//! | config | `$DESTDIR/etc/agent-monitor/config.yaml` (kept if it exists) |
//! | scopes | `$DESTDIR/etc/agent-monitor/scopes.d/*.yaml` (examples; kept if they exist) |
//! | docs | `$DESTDIR$PREFIX/share/doc/agent-monitor/README.md` |

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run_cmd;

const UNIT: &str = "agent-monitor.service";
const DEFAULT_PREFIX: &str = "/usr/local";
const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/agent-monitor";

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Installation prefix for the binary and the docs.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: PathBuf,
    /// Stage everything below this directory (packaging, tests); systemd is not touched.
    #[arg(long)]
    pub destdir: Option<PathBuf>,
    /// Install this binary instead of building the release binary.
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: PathBuf,
    #[arg(long)]
    pub destdir: Option<PathBuf>,
    /// Pinned state to remove (default: /sys/fs/bpf/agent-monitor, only without --destdir).
    #[arg(long)]
    pub pin_path: Option<PathBuf>,
}

/// Where things go, for one prefix and destdir.
struct Layout {
    binary: PathBuf,
    unit: PathBuf,
    config_dir: PathBuf,
    doc: PathBuf,
    prefix: PathBuf,
}

impl Layout {
    fn new(prefix: &Path, destdir: Option<&Path>) -> anyhow::Result<Self> {
        if !prefix.is_absolute() {
            bail!("--prefix must be absolute: {}", prefix.display());
        }
        let staged = |p: &Path| match destdir {
            Some(d) => d.join(p.strip_prefix("/").unwrap_or(p)),
            None => p.to_path_buf(),
        };
        Ok(Self {
            binary: staged(&prefix.join("bin/agent-monitor")),
            unit: staged(&Path::new("/etc/systemd/system").join(UNIT)),
            config_dir: staged(Path::new("/etc/agent-monitor")),
            doc: staged(&prefix.join("share/doc/agent-monitor/README.md")),
            prefix: prefix.to_path_buf(),
        })
    }
}

/// The unit as shipped names /usr/local; another prefix is written into it.
fn unit_text(root: &Path, prefix: &Path) -> anyhow::Result<String> {
    let path = root.join("deploy/systemd").join(UNIT);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let prefix = prefix.display().to_string();
    Ok(text
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") || l.starts_with("Documentation=") {
                l.replace(DEFAULT_PREFIX, prefix.trim_end_matches('/'))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

fn example_scopes(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = root.join("examples/scopes");
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    Ok(out)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Replace, never write through: a running binary or a symlink stays untouched.
    let tmp = path.with_extension("xtask-new");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))?;
    println!("installed {}", path.display());
    Ok(())
}

/// Operator-owned files (config, scopes) are written only when absent.
fn write_once(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.exists() {
        println!("kept      {} (exists)", path.display());
        return Ok(());
    }
    write(path, bytes, 0o644)
}

fn systemd_running(destdir: Option<&Path>) -> bool {
    destdir.is_none() && Path::new("/run/systemd/system").is_dir()
}

pub fn install(root: &Path, args: &InstallArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args.prefix, args.destdir.as_deref())?;
    let binary = if let Some(b) = &args.binary {
        b.clone()
    } else {
        run_cmd(crate::cargo().args([
            "build",
            "--release",
            "--package",
            "agent-monitor",
            "--bin",
            "agent-monitor",
        ]))?;
        crate::target_dir(root).join("release/agent-monitor")
    };
    let bytes = fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    write(&layout.binary, &bytes, 0o755)?;
    write(
        &layout.unit,
        unit_text(root, &layout.prefix)?.as_bytes(),
        0o644,
    )?;
    let config = fs::read(root.join("deploy/config.yaml")).context("reading deploy/config.yaml")?;
    write_once(&layout.config_dir.join("config.yaml"), &config)?;
    for scope in example_scopes(root)? {
        let text = fs::read(&scope).with_context(|| format!("reading {}", scope.display()))?;
        let name = scope.file_name().context("scope file name")?;
        write_once(&layout.config_dir.join("scopes.d").join(name), &text)?;
    }
    let readme = fs::read(root.join("README.md")).context("reading README.md")?;
    write(&layout.doc, &readme, 0o644)?;
    if systemd_running(args.destdir.as_deref()) {
        run_cmd(Command::new("systemctl").arg("daemon-reload"))?;
        println!("next: systemctl enable --now agent-monitor");
    }
    Ok(())
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            println!("removed   {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Removes `path` if it still holds what was installed; an edited file stays.
fn remove_if_unchanged(path: &Path, shipped: &[u8]) -> anyhow::Result<()> {
    match fs::read(path) {
        Ok(now) if now == shipped => remove(path),
        Ok(_) => {
            println!("kept      {} (changed since install)", path.display());
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// Removes a directory when empty (and its parent, when that is empty too).
fn remove_empty_dirs(dir: &Path, levels: usize) {
    let mut dir = dir.to_path_buf();
    for _ in 0..levels {
        if fs::remove_dir(&dir).is_err() {
            return;
        }
        println!("removed   {}/", dir.display());
        if !dir.pop() {
            return;
        }
    }
}

pub fn uninstall(root: &Path, args: &UninstallArgs) -> anyhow::Result<()> {
    let layout = Layout::new(&args.prefix, args.destdir.as_deref())?;
    if systemd_running(args.destdir.as_deref()) {
        // Stopping ends the daemon's tasks; a unit that is not there is fine.
        let _ = Command::new("systemctl")
            .args(["disable", "--now", UNIT])
            .status();
    }
    remove(&layout.unit)?;
    remove(&layout.binary)?;
    remove(&layout.doc)?;
    remove_empty_dirs(layout.doc.parent().unwrap_or(&layout.doc), 1);
    let config = fs::read(root.join("deploy/config.yaml")).context("reading deploy/config.yaml")?;
    remove_if_unchanged(&layout.config_dir.join("config.yaml"), &config)?;
    for scope in example_scopes(root)? {
        let text = fs::read(&scope).with_context(|| format!("reading {}", scope.display()))?;
        let name = scope.file_name().context("scope file name")?;
        remove_if_unchanged(&layout.config_dir.join("scopes.d").join(name), &text)?;
    }
    remove_empty_dirs(&layout.config_dir.join("scopes.d"), 2);
    if systemd_running(args.destdir.as_deref()) {
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
    // Pinned programs and maps keep enforcing without a daemon: they go too.
    let pins = match (&args.pin_path, &args.destdir) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(PathBuf::from(DEFAULT_PIN_PATH)),
        (None, Some(_)) => None,
    };
    if let Some(pins) = pins
        && pins.exists()
    {
        fs::remove_dir_all(&pins)
            .with_context(|| format!("removing pinned state {}", pins.display()))?;
        println!("removed   {}/ (pinned programs and maps)", pins.display());
    }
    Ok(())
}

/// kubernetes-validate and what it needs, pinned (`pip freeze` of a fresh install).
const KUBERNETES_VALIDATE: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "attrs==26.1.0",
    "importlib_resources==7.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "packaging==26.4",
    "PyYAML==6.0.4",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "typing_extensions==4.16.0",
];

/// ocsf-json-schema (JSON schemas generated from the OCSF schemas it ships, 1.0 to 1.8:
/// no network) and the validator they are checked with, pinned (`pip freeze` of a fresh
/// install); `tests/ocsf/validate.py` uses them.
const OCSF_JSON_SCHEMA: &[&str] = &[
    "ocsf-json-schema==1.2.0",
    "attrs==26.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "typing_extensions==4.16.0",
];

/// The OTLP receiver of the export tests (`tests/otlp_receiver.py`): the official generated
/// OTLP messages and services, and gRPC, pinned (`pip freeze` of a fresh install).
const OTLP_RECEIVER: &[&str] = &[
    "opentelemetry-proto==1.45.2",
    "grpcio==1.85.3",
    "protobuf==7.36.2",
    "typing_extensions==4.16.0",
];

/// Every pinned `PyPI` package the tests use, one group per tool; the venv is reinstalled
/// when this list changes (a stamp file in the venv holds the list it was built from).
const PYTHON_TOOLS: &[&[&str]] = &[KUBERNETES_VALIDATE, OCSF_JSON_SCHEMA, OTLP_RECEIVER];

/// The virtualenv holding kubernetes-validate (the deployment tests look for it here).
pub fn tools_venv(root: &Path) -> PathBuf {
    root.join("target/tools/venv")
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask setup: apt-get install {}", packages.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// What the deployment tests need: `systemd-analyze` (Debian's `systemd`) to verify the
/// unit offline, `strace` to check its syscall filter, and `kubernetes-validate` (`PyPI`, in a virtualenv under `target/tools`) to
/// validate deploy/kubernetes against the Kubernetes schemas; and the field corpus
/// (`field_corpus`). Idempotent.
/// `XTASK_SKIP_TEST_TOOLS=1` skips them (the image build runs `setup` for bpf-linker only).
pub fn test_tools(root: &Path) -> anyhow::Result<()> {
    if std::env::var_os("XTASK_SKIP_TEST_TOOLS").is_some_and(|v| v == "1") {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !on_path("systemd-analyze") {
        missing.push("systemd");
    }
    // The unit's SystemCallFilter is checked against what the daemon calls, traced.
    if !on_path("strace") {
        missing.push("strace");
    }
    if !on_path("python3") {
        missing.extend(["python3", "python3-venv"]);
    }
    // The DNS-name egress tests serve a test zone with dnsmasq (only the binary: the
    // `dnsmasq-base` package installs no service that would start).
    if !on_path("dnsmasq") && !Path::new("/usr/sbin/dnsmasq").is_file() {
        missing.push("dnsmasq-base");
    }
    missing.extend(crate::field::missing_packages());
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    python_tools(root)?;
    crate::field::install(root)
}

fn python_tools(root: &Path) -> anyhow::Result<()> {
    let venv = tools_venv(root);
    let wanted: Vec<&str> = PYTHON_TOOLS
        .iter()
        .flat_map(|g| g.iter().copied())
        .collect();
    let stamp = venv.join("agent-monitor-requirements.txt");
    let list = wanted.join("\n") + "\n";
    if fs::read_to_string(&stamp).is_ok_and(|s| s == list) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing the tests' Python tools into {}",
        venv.display()
    );
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        // Debian's python3 comes without the venv module.
        apt_install(&["python3-venv"])?;
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(&wanted),
    )?;
    fs::write(&stamp, list).with_context(|| format!("writing {}", stamp.display()))
}
