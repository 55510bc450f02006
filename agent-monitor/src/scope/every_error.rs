//! Every error of a manifest file in one run, for `check` (the daemon stops at the first).
//!
//! Nothing here validates: each document, and within a failing document each independent
//! part of its `spec`, is run through [`super::parse_str`] on its own, in a copy of the text
//! where the other parts are blanked out (so lines and columns stay those of the file).
//! Parts are the `spec` sections, the keys of `exec`, `files` and `network`, and the
//! entries of their lists written in block style (one per line); another entry of the same
//! list is replaced by a valid one rather than blanked, so that errors keep their index. A
//! flow collection (`[a, b]`) is one part: only its first error is reported.

#[cfg(test)]
mod tests;

use std::path::Path;

use super::{Scope, ScopeError, ScopeSource, check_text, parse_str, read_file};

/// One document of a file: the scope it holds, or every error found in it.
#[derive(Debug)]
pub(crate) struct Document {
    /// The file's text with every other document blanked (same lines and columns).
    pub(crate) text: String,
    pub(crate) outcome: Result<Scope, Vec<ScopeError>>,
}

/// Most parts of one document tried one by one; a larger failing document reports its
/// first error only (each try parses the whole document again).
const MAX_PARTS: usize = 256;

/// Most bytes parsed again over all the tries of one document, and most bytes of a document
/// tried at all: the retries are for files a person wrote, and a file near the size limit
/// must still be refused in the time of one parse.
const MAX_RETRIED_BYTES: usize = 2 << 20;
const MAX_RETRIED_DOCUMENT: usize = 256 << 10;

/// Checks every document of the file at `path`.
///
/// # Errors
/// What stops the whole file: it cannot be read, or is past a limit of `limits`.
pub(crate) fn check_file(path: &Path) -> Result<Vec<Document>, ScopeError> {
    check_str(&read_file(path)?, &ScopeSource::from(path))
}

/// Checks every document of `text`.
///
/// # Errors
/// As [`check_file`], and [`ScopeError::NoScope`] when no document holds anything.
pub(crate) fn check_str(text: &str, source: &ScopeSource) -> Result<Vec<Document>, ScopeError> {
    check_text(text, source)?;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut starts: Vec<usize> = (0..lines.len()).filter(|&i| is_marker(lines[i])).collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut documents: Vec<Document> = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let isolated: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| match i {
                _ if (start..end).contains(&i) => (*line).to_owned(),
                _ if is_marker(line) => "---".to_owned(),
                _ => String::new(),
            })
            .collect();
        let joined = isolated.join("\n");
        let outcome = match parse_str(&joined, source.clone()) {
            Err(ScopeError::NoScope { .. }) => continue,
            Ok(mut scopes) => {
                // One document holds one scope.
                if scopes.is_empty() {
                    continue;
                }
                let scope = scopes.swap_remove(0);
                let repeated = documents
                    .iter()
                    .any(|d| d.outcome.as_ref().is_ok_and(|s| s.name == scope.name));
                if repeated {
                    Err(vec![ScopeError::DuplicateName {
                        origin: source.clone(),
                        name: scope.name,
                        first: source.clone(),
                    }])
                } else {
                    Ok(scope)
                }
            }
            Err(first) => Err(more_errors(&isolated, (start, end), first, source)),
        };
        documents.push(Document {
            text: joined,
            outcome,
        });
    }
    if documents.is_empty() {
        return Err(ScopeError::NoScope {
            origin: source.clone(),
        });
    }
    Ok(documents)
}

/// A document start marker (`---`, `--- x`).
fn is_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// The indentation of a line with content (not blank, not only a comment).
fn indent(line: &str) -> Option<usize> {
    let content = line.trim_start_matches(' ');
    let blank = content.trim().is_empty() || content.starts_with('#');
    (!blank).then(|| line.len() - content.len())
}

/// `key` of a `key:` line and whether its value is a block below it (nothing after the
/// colon but a comment); `None` for a list entry or anything else.
fn key(line: &str) -> Option<(&str, bool)> {
    let content = line.trim_start();
    if content.starts_with('-') {
        return None;
    }
    let colon = content.find(':')?;
    let rest = content[colon + 1..].trim();
    Some((&content[..colon], rest.is_empty() || rest.starts_with('#')))
}

/// The nodes of the block collection in lines `from..to`: `(first line, end)` each.
fn items(lines: &[String], from: usize, to: usize) -> Vec<(usize, usize)> {
    let Some(column) = (from..to).find_map(|i| indent(&lines[i])) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, usize)> = Vec::new();
    for i in from..to {
        let Some(at) = indent(&lines[i]) else {
            continue;
        };
        if at != column {
            continue;
        }
        // A list under a key may sit at the key's own indentation.
        let entry = lines[i].trim_start().starts_with('-');
        let under_key = out
            .last()
            .is_some_and(|&(first, _)| key(&lines[first]).is_some_and(|(_, block)| block));
        if entry && under_key {
            continue;
        }
        if let Some(last) = out.last_mut() {
            last.1 = i;
        }
        out.push((i, to));
    }
    out
}

/// A valid entry for the list `key`, standing in for another entry while one is tried.
fn placeholder(key: &str) -> &'static str {
    match key {
        "connect" => "{cidr: 127.0.0.1/32}",
        "bind" => "1",
        _ => "/",
    }
}

/// One way to change the text: blank lines, or put a valid entry in place of one.
enum Edit {
    Blank(usize, usize),
    Entry(usize, usize, &'static str),
}

/// A part of the `spec` tried alone: its lines, and the edits that leave it alone.
struct Part {
    lines: (usize, usize),
    edits: Vec<Edit>,
}

/// The parts of the spec in `spec` (its content lines).
fn parts(lines: &[String], spec: (usize, usize)) -> Vec<Part> {
    let sections = items(lines, spec.0, spec.1);
    let others = |skip: usize, list: &[(usize, usize)]| -> Vec<Edit> {
        list.iter()
            .enumerate()
            .filter(|(n, _)| *n != skip)
            .map(|(_, &(a, b))| Edit::Blank(a, b))
            .collect()
    };
    let mut out = Vec::new();
    for (n, &(first, end)) in sections.iter().enumerate() {
        let nested = key(&lines[first])
            .is_some_and(|(k, block)| block && matches!(k, "exec" | "files" | "network"));
        let keys = if nested {
            items(lines, first + 1, end)
        } else {
            Vec::new()
        };
        if keys.is_empty() {
            out.push(Part {
                lines: (first, end),
                edits: others(n, &sections),
            });
            continue;
        }
        for (k, &(key_line, key_end)) in keys.iter().enumerate() {
            let mut edits = others(n, &sections);
            edits.extend(others(k, &keys));
            let list = key(&lines[key_line]).filter(|(_, block)| *block);
            let entries = list.map_or_else(Vec::new, |_| items(lines, key_line + 1, key_end));
            let all_entries = !entries.is_empty()
                && entries
                    .iter()
                    .all(|&(a, _)| lines[a].trim_start().starts_with('-'));
            if !all_entries {
                out.push(Part {
                    lines: (key_line, key_end),
                    edits,
                });
                continue;
            }
            let stand_in = placeholder(list.map_or("", |(name, _)| name));
            for (e, &entry) in entries.iter().enumerate() {
                let mut edits: Vec<Edit> = others(k, &keys)
                    .into_iter()
                    .chain(others(n, &sections))
                    .collect();
                edits.extend(
                    entries
                        .iter()
                        .enumerate()
                        .filter(|(other, _)| *other != e)
                        .map(|(_, &(a, b))| Edit::Entry(a, b, stand_in)),
                );
                out.push(Part {
                    lines: entry,
                    edits,
                });
            }
        }
    }
    out
}

/// The first error of a document and the others its parts show on their own, in line
/// order, each once.
fn more_errors(
    lines: &[String],
    document: (usize, usize),
    first: ScopeError,
    source: &ScopeSource,
) -> Vec<ScopeError> {
    let spec_line = (document.0..document.1).find(|&i| {
        lines[i]
            .strip_prefix("spec:")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim().starts_with('#'))
    });
    let size: usize = lines[document.0..document.1]
        .iter()
        .map(|l| l.len() + 1)
        .sum();
    if size > MAX_RETRIED_DOCUMENT || matches!(first, ScopeError::Limit { .. }) {
        return vec![first];
    }
    // A syntax error leaves no structure to take apart: pieces of it would only report
    // the same error again from other places.
    if spec_line.is_none() || !super::yaml::well_formed(&lines.join("\n")) {
        return vec![first];
    }
    let Some(spec_line) = spec_line else {
        return vec![first];
    };
    let spec_end = (spec_line + 1..document.1)
        .find(|&i| indent(&lines[i]) == Some(0))
        .unwrap_or(document.1);
    let parts = parts(lines, (spec_line + 1, spec_end));
    if parts.len() > MAX_PARTS || parts.len().saturating_mul(size) > MAX_RETRIED_BYTES {
        return vec![first];
    }
    // An error outside the spec (metadata) would stop every try before its part: stand a
    // valid header in for the document's other lines.
    let mut base: Vec<String> = lines.to_vec();
    let outside = first
        .at()
        .is_some_and(|(line, _)| !(spec_line + 1..=spec_end).contains(&line));
    if outside {
        let header = [
            "apiVersion: agent-monitor.dev/v1",
            "kind: AgentScope",
            "metadata: {name: part, owner: part}",
        ];
        let free: Vec<usize> = (document.0..document.1)
            .filter(|&i| !(spec_line..spec_end).contains(&i) && !is_marker(&lines[i]))
            .collect();
        if free.len() >= header.len() {
            for &i in &free {
                base[i] = String::new();
            }
            for (&i, line) in free.iter().zip(header) {
                line.clone_into(&mut base[i]);
            }
        }
    }
    let mut seen: Vec<String> = vec![first.to_string()];
    let mut errors = vec![first];
    for part in parts {
        let mut tried = base.clone();
        for edit in &part.edits {
            match *edit {
                Edit::Blank(a, b) => tried[a..b].iter_mut().for_each(String::clear),
                Edit::Entry(a, b, stand_in) => {
                    let column = indent(&tried[a]).unwrap_or(0);
                    tried[a] = format!("{}- {stand_in}", " ".repeat(column));
                    tried[a + 1..b].iter_mut().for_each(String::clear);
                }
            }
        }
        let Err(error) = parse_str(&tried.join("\n"), source.clone()) else {
            continue;
        };
        let inside = error
            .at()
            .is_none_or(|(line, _)| (part.lines.0 + 1..=part.lines.1).contains(&line));
        let text = error.to_string();
        if inside && !seen.contains(&text) {
            seen.push(text);
            errors.push(error);
        }
    }
    errors.sort_by_key(|e| e.at().map_or(0, |(line, _)| line));
    errors
}
