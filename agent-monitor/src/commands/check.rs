//! `agent-monitor check FILE...`: offline validation of manifests.

use crate::{cli::CheckArgs, scope};

/// `agent-monitor check FILE...`: every error is printed as `file:line:column: reason`.
pub(crate) fn check(args: &CheckArgs) -> i32 {
    let mut failed = 0;
    for f in &args.files {
        match scope::parse_file(f) {
            Ok(scopes) => {
                for s in scopes {
                    println!(
                        "{}: ok: scope {} ({:?}, owner {})",
                        f.display(),
                        s.name,
                        s.mode,
                        s.owner
                    );
                }
            }
            Err(e) => {
                eprintln!("{e}");
                failed += 1;
            }
        }
    }
    i32::from(failed > 0)
}
