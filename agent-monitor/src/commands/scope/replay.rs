//! `agent-monitor scope replay CANDIDATE --log FILE...`.

use crate::cli::ReplayArgs;

pub(super) fn run(args: &ReplayArgs) -> anyhow::Result<i32> {
    anyhow::bail!("scope replay {}: not built yet", args.candidate.display())
}
