//! `agent-monitor bench-landlock` (hidden, for `cargo xtask bench`): runs a command under
//! the Landlock layer `exec` would give an agent of a scope, with no daemon, no eBPF and
//! no seccomp filter, so that what Landlock itself costs an enforced agent is measured
//! apart from what the monitor adds.

use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};

use anyhow::Context as _;

use crate::{cli::BenchLandlockArgs, scope::Mode};

/// Runs the command to its end; its exit code (128 + signal when killed).
pub(crate) fn run(args: &BenchLandlockArgs) -> anyhow::Result<i32> {
    let path = args.scope.display();
    let scopes =
        crate::scope::parse_file(&args.scope).with_context(|| format!("reading {path}"))?;
    let [scope] = scopes.as_slice() else {
        anyhow::bail!("{path}: one scope expected, found {}", scopes.len());
    };
    anyhow::ensure!(
        scope.mode == Mode::Enforce,
        "{path}: only an enforced scope has a Landlock layer"
    );
    let plan = crate::control::landlock::plan_for(scope);
    let ruleset =
        crate::control::landlock::prepare(&plan).context("preparing the Landlock layer")?;
    let fd = ruleset.as_raw_fd();
    let (program, rest) = args.command.split_first().context("no command")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    // SAFETY: `restrict` makes async-signal-safe calls only (prctl, the Landlock syscall).
    unsafe {
        cmd.pre_exec(move || crate::control::landlock::restrict(fd));
    }
    let status = cmd.status().with_context(|| format!("running {program}"))?;
    drop(ruleset);
    Ok(status
        .code()
        .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
        .unwrap_or(1))
}
