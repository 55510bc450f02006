//! `agent-monitor scope diff OLD NEW`.

use crate::cli::DiffArgs;

pub(super) fn run(args: &DiffArgs) -> anyhow::Result<i32> {
    anyhow::bail!(
        "scope diff {} {}: not built yet",
        args.old.display(),
        args.new.display()
    )
}
