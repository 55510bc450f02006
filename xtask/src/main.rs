//! Project tasks: `cargo xtask setup | run | test | bench | install | uninstall`.
//!
//! `setup` makes a fresh machine ready (idempotent); `run`, `test` and `bench` call it first.

mod bench;
mod field;
mod install;
mod setup;

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the build needs (nightly rust-src, bpf-linker) and mount tracefs/bpffs.
    Setup,
    /// Build and run the daemon as root on examples/scopes, printing records to stdout.
    Run {
        /// Extra arguments for `agent-monitor run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Unit tests, then the end-to-end tests (as root).
    Test {
        /// Only run tests whose name contains this (passed to both test runs).
        filter: Option<String>,
    },
    /// Install the daemon (release build), its systemd unit, default config and example scopes.
    Install(install::InstallArgs),
    /// Remove what `install` put there (edited config and scopes stay) and the pinned state.
    Uninstall(install::UninstallArgs),
    /// Overhead, throughput, enforcement latency and daemon cost, side by side with auditd
    /// and bpftrace (as root); writes docs/BENCHMARKS.md.
    Bench {
        /// A reduced run (under a minute).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    env::set_current_dir(&root).context("entering the workspace")?;
    setup::prepend_cargo_bin_to_path();
    match cli.command {
        Task::Setup => setup::run(&root),
        Task::Run { args } => {
            setup::run(&root)?;
            run(&root, &args)
        }
        Task::Test { filter } => {
            setup::run(&root)?;
            test(&root, filter.as_deref())
        }
        Task::Install(args) => install::install(&root, &args),
        Task::Uninstall(args) => install::uninstall(&root, &args),
        Task::Bench { quick } => {
            setup::run(&root)?;
            bench::run(&root, quick)
        }
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = env::var_os("CARGO_MANIFEST_DIR").context("run me through `cargo xtask`")?;
    Path::new(&manifest)
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// Runs a command, failing with its command line when it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Where cargo puts its builds (`CARGO_TARGET_DIR` or the workspace's `target/`).
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The development build: with pod awareness (`kubernetes`), so `run` and the tests use the
/// same build the container image makes.
fn build_daemon(root: &Path) -> anyhow::Result<PathBuf> {
    run_cmd(cargo().args([
        "build",
        "--package",
        "agent-monitor",
        "--bin",
        "agent-monitor",
        "--features",
        "agent-monitor/kubernetes",
    ]))?;
    Ok(target_dir(root).join("debug/agent-monitor"))
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "{what} needs root: it loads eBPF programs and creates cgroups (try: sudo -E cargo xtask ...)"
        );
    }
    Ok(())
}

fn run(root: &Path, extra: &[String]) -> anyhow::Result<()> {
    require_root("cargo xtask run")?;
    let bin = build_daemon(root)?;
    let state = root.join("target/xtask-run");
    std::fs::create_dir_all(&state).context("creating target/xtask-run")?;
    let socket = state.join("agent-monitor.sock");
    eprintln!(
        "agent-monitor: socket {}, audit log {}",
        socket.display(),
        state.join("audit.jsonl").display()
    );
    eprintln!("launch an agent next to it:");
    eprintln!(
        "  sudo {} exec --socket {} --scope code-reviewer -- sh -c 'cat /etc/hostname; cat /etc/shadow'",
        bin.display(),
        socket.display()
    );
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "--scopes"])
        .arg(root.join("examples/scopes"))
        .arg("--socket")
        .arg(&socket)
        .arg("--audit-log")
        .arg(state.join("audit.jsonl"))
        .args([
            "--cgroup-parent",
            "agent-monitor-dev",
            "--log-format",
            "json",
        ])
        .args([
            "--pin-path",
            "/sys/fs/bpf/agent-monitor-dev",
            "--release-on-exit",
        ])
        .args(extra);
    run_cmd(&mut cmd)
}

fn test(root: &Path, filter: Option<&str>) -> anyhow::Result<()> {
    let filter: Vec<&str> = filter.into_iter().collect();
    let mut tally = Tally::default();
    // Unit tests of every host crate: not the end-to-end one, and not the kernel crate,
    // which only builds for bpfel-unknown-none (agent-monitor's build.rs builds it).
    tally.run(
        cargo()
            .args([
                "test",
                "--workspace",
                "--exclude",
                "agent-monitor-e2e",
                "--exclude",
                "agent-monitor-ebpf",
                "--features",
                "agent-monitor/kubernetes",
                "--",
            ])
            .args(&filter),
    )?;
    // The daemon's unit tests again without pod awareness: the build `cargo xtask install`
    // makes for systemd hosts. The eBPF object is the same either way: not rebuilt.
    tally.run(
        cargo()
            .args(["test", "--package", "agent-monitor", "--"])
            .args(&filter)
            .env("AYA_BUILD_SKIP", "1"),
    )?;
    require_root("the end-to-end tests")?;
    let bin = build_daemon(root)?;
    // One at a time: every test runs its own daemon with programs at the cgroup2 root.
    tally.run(
        cargo()
            .args([
                "test",
                "--package",
                "agent-monitor-e2e",
                "--",
                "--test-threads=1",
            ])
            .args(&filter)
            .env("AGENT_MONITOR_BIN", bin),
    )?;
    println!("summary: {} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

/// Sums cargo's `test result:` lines while passing the output through.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn run(&mut self, cmd: &mut Command) -> anyhow::Result<()> {
        use std::io::{BufRead as _, BufReader};
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading test output")?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .strip_suffix(word)?
                                .trim()
                                .rsplit(' ')
                                .next()?
                                .parse::<u64>()
                                .ok()
                        })
                        .unwrap_or(0)
                };
                self.passed += count("passed");
                self.failed += count("failed");
            }
        }
        let status = child.wait().context("waiting for cargo test")?;
        if !status.success() {
            println!(
                "summary: {} passed, {} failed",
                self.passed,
                self.failed.max(1)
            );
            bail!("{cmd:?} failed: {status}");
        }
        Ok(())
    }
}
