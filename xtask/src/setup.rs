//! `cargo xtask setup`: idempotent preparation of a fresh machine.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run_cmd;

/// Everything a fresh machine needs to build, run and test: the nightly pieces, the
/// mounts, and the test tools (`install::test_tools`: the deployment tests' tools and the
/// field corpus under `target/field` that `tests/tests/field.rs` runs).
pub fn run(root: &Path) -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker(root)?;
    mounts();
    crate::install::test_tools(root)?;
    Ok(())
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// bpf-linker is installed into `$CARGO_HOME/bin`, which may not be on PATH (CI shells).
pub fn prepend_cargo_bin_to_path() {
    let bin = cargo_home().join("bin");
    let mut paths: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if !paths.contains(&bin) {
        paths.insert(0, bin);
        if let Ok(joined) = env::join_paths(paths) {
            // SAFETY: single-threaded at this point (called first thing in main).
            unsafe { env::set_var("PATH", joined) };
        }
    }
}

pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel crate builds core from source with the installed nightly.
fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("the nightly toolchain is required for the eBPF crate")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask setup: adding rust-src to the nightly toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn on_path(name: &str) -> bool {
    env::var_os("PATH").is_some_and(|p| env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// bpf-linker 0.13 built against the LLVM that ships inside the nightly toolchain (no LLVM
/// 22 is packaged for this distribution).
fn bpf_linker(root: &Path) -> anyhow::Result<()> {
    if on_path("bpf-linker") {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.*-rust-* in {} (is the nightly toolchain complete?)",
                lib.display()
            )
        })?;
    let prefix = root.join("target/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).context("creating the LLVM prefix")?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link).context("linking libLLVM.so")?;
    eprintln!(
        "xtask setup: building bpf-linker against {}",
        llvm.display()
    );
    let mut rustflags = OsString::from("-C link-arg=-Wl,-rpath,");
    rustflags.push(&lib);
    run_cmd(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", &prefix)
            .env("RUSTFLAGS", rustflags),
    )
}

/// tracefs (tracepoint ids) and bpffs (pinned state). Needs root; without it the daemon
/// would say the same, so only note it here.
fn mounts() {
    for (fs_type, dir, probe) in [
        (
            "tracefs",
            "/sys/kernel/tracing",
            "/sys/kernel/tracing/events",
        ),
        ("bpf", "/sys/fs/bpf", ""),
    ] {
        let mounted = if probe.is_empty() {
            fs::read_to_string("/proc/mounts").is_ok_and(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(dir) && l.contains(" bpf "))
            })
        } else {
            Path::new(probe).exists()
        };
        if mounted {
            continue;
        }
        let status = Command::new("mount")
            .args(["-t", fs_type, fs_type, dir])
            .status();
        match status {
            Ok(s) if s.success() => eprintln!("xtask setup: mounted {fs_type} at {dir}"),
            _ => eprintln!("xtask setup: could not mount {fs_type} at {dir} (not root?)"),
        }
    }
}
