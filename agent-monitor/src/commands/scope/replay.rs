//! `agent-monitor scope replay CANDIDATE --log FILE...`.

use anyhow::Context as _;

use crate::{
    cli::ReplayArgs,
    lifecycle::{
        log::Log,
        replay::{Select, pick, replay},
    },
    scope,
};

/// Exit code of a replay with a would-be violation.
const VIOLATIONS: i32 = 1;
/// Exit code of a replay that could not be done (bad candidate, unreadable log, no record).
const ERROR: i32 = 2;

/// Judges the logs' records against the candidate: 0 clean, 1 would-be violations, 2 error
/// (printed here: the CLI's own error path would exit 1, which means violations).
#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature every scope subcommand shares"
)]
pub(super) fn run(args: &ReplayArgs) -> anyhow::Result<i32> {
    match judge(args) {
        Ok((text, failed)) => {
            print!("{text}");
            Ok(if failed { VIOLATIONS } else { 0 })
        }
        Err(e) => {
            eprintln!("agent-monitor: scope replay: {e:#}");
            Ok(ERROR)
        }
    }
}

/// The report's output, and whether it found would-be violations.
fn judge(args: &ReplayArgs) -> anyhow::Result<(String, bool)> {
    let scopes = scope::parse_file(&args.candidate)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the candidate")?;
    let candidate = pick(scopes, args.scope.as_deref())
        .with_context(|| args.candidate.display().to_string())?;
    // The error names its cause itself: as a chain it would be said twice.
    let log = Log::read(&args.log).map_err(|e| anyhow::anyhow!("{e}"))?;
    let select = Select {
        scope: args.scope.as_deref().unwrap_or(&candidate.name),
        task: args.task.as_deref(),
    };
    let report = replay(&candidate, &log, select)?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        json
    } else {
        report.to_string()
    };
    Ok((text, report.failed()))
}
