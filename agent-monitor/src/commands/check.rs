//! `agent-monitor check FILE...`: offline validation of manifests.

use std::path::Path;

use crate::cli::CheckArgs;
use crate::scope::{self, lint};

/// `agent-monitor check FILE...`: every error is printed as `file:line:column: reason`,
/// every warning as `file:line:column: warning[CODE]: scope NAME: ...`. Exit 1 on an
/// error (or, with `--strict`, a warning), else 0.
pub(crate) fn check(args: &CheckArgs) -> i32 {
    let (mut errors, mut warnings) = (0, 0);
    for file in &args.files {
        let (e, w) = check_file(file);
        errors += e;
        warnings += w;
    }
    i32::from(errors > 0 || (args.strict && warnings > 0))
}

/// Checks one file; how many errors and warnings it printed.
fn check_file(file: &Path) -> (usize, usize) {
    let documents = match scope::check_file(file) {
        Ok(documents) => documents,
        Err(e) => {
            eprintln!("{e}");
            return (1, 0);
        }
    };
    let (mut errors, mut warnings) = (0, 0);
    let mut good: Vec<scope::Scope> = Vec::new();
    for document in documents {
        match document.outcome {
            Ok(s) => {
                println!(
                    "{}: ok: scope {} ({}, owner {})",
                    file.display(),
                    s.name,
                    s.mode,
                    s.owner
                );
                for w in lint::lint(&s, &document.text, &good) {
                    eprintln!("{}:{w}", file.display());
                    warnings += 1;
                }
                good.push(s);
            }
            Err(list) => {
                for e in list {
                    eprintln!("{e}");
                    errors += 1;
                }
            }
        }
    }
    (errors, warnings)
}
