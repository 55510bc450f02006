//! `agent-monitor scope diff OLD NEW`.

use std::path::Path;

use crate::cli::DiffArgs;
use crate::lifecycle::diff::{ScopeDiff, diff_files};
use crate::scope;

/// Prints what `args.new` widens and narrows against `args.old`; the exit code: 0 when
/// nothing widens, 1 when anything does, 2 when a file cannot be read or parsed (its
/// error on stderr).
pub(super) fn run(args: &DiffArgs) -> anyhow::Result<i32> {
    let load = |path: &Path| scope::parse_file(path).map_err(|e| eprintln!("{e}"));
    let (Ok(old), Ok(new)) = (load(&args.old), load(&args.new)) else {
        return Ok(2);
    };
    let diffs = diff_files(&old, &new);
    if args.json {
        // One object per scope, one per line.
        for d in &diffs {
            println!("{}", serde_json::to_string(d)?);
        }
    } else {
        print!("{}", render(&diffs));
    }
    Ok(i32::from(diffs.iter().any(ScopeDiff::widens_any)))
}

/// The text form: per scope, `widens:`, `narrows:` and `changes:` lines with their
/// dimension, then the dimensions left unchanged.
fn render(diffs: &[ScopeDiff]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for d in diffs {
        let _ = writeln!(out, "scope {}:", d.scope);
        for (title, list) in [
            ("widens", &d.widens),
            ("narrows", &d.narrows),
            ("changes", &d.changes),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {title}:");
            for c in list {
                let _ = writeln!(out, "    {}: {}", c.dimension, c.what);
            }
        }
        if !d.unchanged.is_empty() {
            let _ = writeln!(out, "  unchanged: {}", d.unchanged.join(", "));
        }
    }
    out
}
