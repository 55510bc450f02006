//! `agent-monitor scope propose`.

use crate::cli::ProposeArgs;

pub(super) async fn run(args: ProposeArgs) -> anyhow::Result<i32> {
    anyhow::bail!("scope propose {:?}: not built yet", args.task)
}
