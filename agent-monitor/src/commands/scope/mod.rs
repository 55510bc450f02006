//! `agent-monitor scope propose|replay|diff`.

mod diff;
pub(crate) mod propose;
mod replay;

use crate::cli::ScopeCommand;

/// Runs a `scope` subcommand; the exit code.
pub(crate) async fn scope(command: ScopeCommand) -> anyhow::Result<i32> {
    match command {
        ScopeCommand::Propose(args) => propose::run(args).await,
        ScopeCommand::Replay(args) => replay::run(&args),
        ScopeCommand::Diff(args) => diff::run(&args),
    }
}
