//! What a manifest may hold, checked before the YAML reader sees it (size, nesting) or while
//! it reads (entries per list), and before anything is compiled (entries per scope): a
//! hostile or mistaken file is refused in milliseconds with the limit named, instead of
//! costing the reader time quadratic in its nesting or the glob compiler seconds and
//! hundreds of megabytes. docs/SCOPES.md ("Limits") lists them.

use std::fmt;

/// Largest scope file (1 MiB): the biggest real manifests are a few KiB.
pub(crate) const MAX_FILE_BYTES: usize = 1 << 20;
/// Largest `scope_yaml` of `POST /v1/tasks` (256 KiB, the API's body limit).
pub(crate) const MAX_INLINE_BYTES: usize = 256 << 10;
/// Deepest nesting of collections, block and flow (`[`, `{`) together. Real manifests
/// nest 5 or 6 levels.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most entries in one list of a scope (`exec.allow`, each `files` list, `network.connect`,
/// `network.bind`).
pub(crate) const MAX_LIST_ENTRIES: usize = 4_096;
/// Most entries in all the lists of one scope together.
pub(crate) const MAX_SCOPE_ENTRIES: usize = 8_192;
/// Most YAML documents (scopes) in one file or `scope_yaml`.
pub(crate) const MAX_DOCUMENTS: usize = 256;

/// A limit a manifest went past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The text is larger than `max` bytes.
    Size { bytes: usize, max: usize },
    /// Collections nest deeper than [`MAX_DEPTH`].
    Depth,
    /// One list holds more than [`MAX_LIST_ENTRIES`].
    ListEntries,
    /// All lists of scope `name` hold `entries`, more than [`MAX_SCOPE_ENTRIES`].
    ScopeEntries { name: String, entries: usize },
    /// More than [`MAX_DOCUMENTS`] documents.
    Documents,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            &Self::Size { bytes, max } if max % (1 << 20) == 0 => write!(
                f,
                "{bytes} bytes, larger than the limit of {max} bytes ({} MiB) for a scope",
                max >> 20
            ),
            &Self::Size { bytes, max } => write!(
                f,
                "{bytes} bytes, larger than the limit of {max} bytes ({} KiB) for a scope",
                max >> 10
            ),
            Self::Depth => write!(
                f,
                "collections nest deeper than the limit of {MAX_DEPTH} levels"
            ),
            Self::ListEntries => write!(
                f,
                "more than the limit of {MAX_LIST_ENTRIES} entries in one list"
            ),
            Self::ScopeEntries { name, entries } => write!(
                f,
                "scope {name:?}: {entries} entries in its lists, more than the limit of {MAX_SCOPE_ENTRIES} per scope"
            ),
            Self::Documents => write!(
                f,
                "more than the limit of {MAX_DOCUMENTS} documents in one file"
            ),
        }
    }
}

/// Where the nesting first goes past [`MAX_DEPTH`]: 1-based line and column.
///
/// One pass over the bytes, no allocation beyond a stack of block indentations. It reads
/// enough YAML to follow flow collections (`[`, `{`), block collections (indentation,
/// `- ` and `? ` entries), quoted scalars, comments and block scalars (`|`, `>`), and errs
/// on the side of counting: where it cannot tell structure from text, a bracket counts. A
/// quoted scalar is taken to end at its line's end (a multi-line one is then counted as
/// text): what it skips is never more than the reader itself takes as text.
#[must_use]
pub(crate) fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut scan = DepthScan::default();
    for (index, line) in text.split('\n').enumerate() {
        if let Some(column) = scan.line(line.as_bytes()) {
            return Some((index + 1, column + 1));
        }
    }
    None
}

/// What the scan carries from one line to the next.
#[derive(Default)]
struct DepthScan {
    /// Columns of the open block collections.
    blocks: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// The next character may begin a node (a quoted scalar, a flow collection, a block
    /// scalar): the last line ended after `key:`, `- `, `[`, `,`, ...
    node_start: bool,
    /// Inside a block scalar started on a line indented `parent`; its content lines are
    /// indented `content` (known from its first non-blank line).
    block_scalar: Option<(usize, Option<usize>)>,
}

impl DepthScan {
    /// Scans one line (without its `\n`); the 0-based column where the nesting goes past the
    /// limit, if it does.
    fn line(&mut self, line: &[u8]) -> Option<usize> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..]
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r'));
        if let Some((parent, content)) = self.block_scalar {
            match content {
                _ if blank => return None,
                None if indent > parent => {
                    self.block_scalar = Some((parent, Some(indent)));
                    return None;
                }
                Some(content) if indent >= content => return None,
                _ => self.block_scalar = None,
            }
        }
        if blank {
            return None;
        }
        let mut at = indent;
        if self.flow == 0 {
            if line[indent] == b'#' {
                return None;
            }
            if indent == 0 && (line.starts_with(b"---") || line.starts_with(b"...")) {
                let marker_end = line
                    .get(3)
                    .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r'));
                if marker_end {
                    self.blocks.clear();
                    self.node_start = line.starts_with(b"---");
                    at = 3;
                }
            }
            if at == indent {
                while self.blocks.last().is_some_and(|&c| c > indent) {
                    self.blocks.pop();
                }
                if self.blocks.last() != Some(&indent) {
                    self.blocks.push(indent);
                }
            }
        }
        if self.depth() > MAX_DEPTH {
            return Some(indent);
        }
        self.rest(line, at)
    }

    fn depth(&self) -> usize {
        self.blocks.len() + self.flow
    }

    /// The line from `at` on.
    fn rest(&mut self, line: &[u8], mut at: usize) -> Option<usize> {
        // Brackets the reader takes as text (inside a plain or quoted scalar, or a comment:
        // `/usr/bin/{cat,cp}`), counted for this line only.
        let mut in_text = 0usize;
        let mut after_space = true;
        // The first token of a line of a block collection: an entry (`- `), or a flow
        // collection (as a key), even when the last line ended inside a scalar.
        let mut line_start = self.flow == 0;
        // The column of the innermost block node begun on this line (after `- ` entries): a
        // block scalar's content is indented more than it.
        let mut inner = at;
        let mut entry = false;
        while at < line.len() {
            let b = line[at];
            if entry && !matches!(b, b' ' | b'\t' | b'\r') {
                inner = at;
                entry = false;
            }
            let next_blank = line
                .get(at + 1)
                .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r'));
            match b {
                b' ' | b'\t' | b'\r' => {
                    after_space = true;
                    at += 1;
                    continue;
                }
                b'#' if after_space => {
                    let (_, deepest) = text_brackets(line, at + 1, line.len(), in_text);
                    return (self.depth() + deepest > MAX_DEPTH).then_some(at);
                }
                b'\'' | b'"' if self.node_start => {
                    let end = skip_quoted(line, at);
                    let (open, deepest) = text_brackets(line, at + 1, end, in_text);
                    if self.depth() + deepest > MAX_DEPTH {
                        return Some(at);
                    }
                    in_text = open;
                    at = end;
                    self.node_start = false;
                    after_space = false;
                    line_start = false;
                    continue;
                }
                b'|' | b'>' if self.node_start && self.flow == 0 => {
                    if block_scalar_header(line, at) {
                        self.block_scalar = Some((inner, None));
                        self.node_start = false;
                        return None;
                    }
                    self.node_start = false;
                }
                b'&' | b'!' if self.node_start || line_start => {
                    // An anchor or a tag: the node it belongs to starts after it.
                    while at < line.len()
                        && !matches!(
                            line[at],
                            b' ' | b'\t' | b'\r' | b',' | b'[' | b']' | b'{' | b'}'
                        )
                    {
                        at += 1;
                    }
                    self.node_start = true;
                    after_space = false;
                    line_start = false;
                    continue;
                }
                b'[' | b'{' if self.flow > 0 || self.node_start || line_start => {
                    self.flow += 1;
                    self.node_start = true;
                }
                b'[' | b'{' => {
                    in_text += 1;
                    self.node_start = false;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.node_start = false;
                }
                b']' | b'}' => in_text = in_text.saturating_sub(1),
                b',' if self.flow > 0 => self.node_start = true,
                b'-' | b'?' if (self.node_start || line_start) && next_blank => {
                    // An entry; a compact one (`- - x`, `- ? x`) opens a block collection
                    // here.
                    if self.flow == 0 && !line_start {
                        self.blocks.push(at);
                    }
                    self.node_start = true;
                    entry = true;
                }
                b':' if next_blank => self.node_start = true,
                _ => self.node_start = false,
            }
            if self.depth() + in_text > MAX_DEPTH {
                return Some(at);
            }
            after_space = false;
            line_start = false;
            at += 1;
        }
        None
    }
}

/// Brackets in `line[from..to]` taken as text, starting with `open` open: how many are open
/// at its end, and the most at any point.
fn text_brackets(line: &[u8], from: usize, to: usize, mut open: usize) -> (usize, usize) {
    let mut deepest = open;
    for &b in &line[from.min(to)..to] {
        match b {
            b'[' | b'{' => {
                open += 1;
                deepest = deepest.max(open);
            }
            b']' | b'}' => open = open.saturating_sub(1),
            _ => {}
        }
    }
    (open, deepest)
}

/// Past the quoted scalar that starts at `at`, or the line's end.
fn skip_quoted(line: &[u8], at: usize) -> usize {
    let quote = line[at];
    let mut i = at + 1;
    while i < line.len() {
        match line[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && line.get(i + 1) == Some(&b'\'') => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    line.len()
}

/// Whether a block scalar header (`|`, `>`, `|-`, `>+`, ...) is at `at`. One that gives its
/// indentation explicitly (`|2`) is not taken for one: its lines are scanned as any other.
fn block_scalar_header(line: &[u8], at: usize) -> bool {
    let mut i = at + 1;
    while i < line.len() && matches!(line[i], b'-' | b'+') {
        i += 1;
    }
    i >= line.len() || matches!(line[i], b' ' | b'\t' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{ScopeError, ScopeSource, parse_str};

    const HEAD: &str =
        "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\nmetadata: {name: x, owner: y}\n";

    fn manifest(spec: &str) -> String {
        format!("{HEAD}spec:\n{spec}")
    }

    fn limit_of(text: &str) -> Option<Limit> {
        match parse_str(text, std::path::Path::new("t.yaml")) {
            Err(ScopeError::Limit { limit, .. }) => Some(limit),
            _ => None,
        }
    }

    #[test]
    fn real_manifests_are_far_from_the_depth_limit() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/scopes"))
            .expect("examples")
        {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            assert_eq!(too_deep(&text), None);
        }
        let globs = manifest(
            "  exec:\n    allow:\n    - /usr/bin/{cat,cp}\n    - \"/a/[ab]*\"\n    \
             # a comment with [[[[ brackets\n  files:\n    read:\n    - /usr/{lib,share}/**\n    \
             - '/x/{{y,z}}'\n    deny: [\"**/.env\", '**/{a,b}']\n",
        );
        assert_eq!(too_deep(&globs), None);
        if let Err(e) = parse_str(&globs, std::path::Path::new("t.yaml")) {
            panic!("{e}");
        }
    }

    #[test]
    fn flow_nesting_is_refused_before_parsing() {
        let deep = manifest(&format!("  exec:\n    allow: {}\n", "[".repeat(200_000)));
        // Refused as too deep, not by the parser's own recursion guard: the pre-scan ran first.
        let error = parse_str(&deep, std::path::Path::new("t.yaml")).expect_err("too deep");
        assert!(matches!(
            error,
            ScopeError::Limit {
                limit: Limit::Depth,
                ..
            }
        ));
        assert_eq!(error.line(), Some(6));
        assert!(error.to_string().contains("limit of 64 levels"), "{error}");
        // Exactly at the limit is fine for the scan (the schema refuses it after); the
        // document itself is a level.
        let at = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert_eq!(too_deep(&at), None);
        let past = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(too_deep(&past), Some((1, MAX_DEPTH)));
    }

    #[test]
    fn nesting_spread_over_lines_and_mappings_counts() {
        let lines = format!("a: b\n{}", "[\n".repeat(100));
        assert!(too_deep(&lines).is_some());
        let maps = format!("x: {}", "{a: ".repeat(100));
        assert!(too_deep(&maps).is_some());
        let tagged = format!("x: !!seq {}", "&a [".repeat(100));
        assert!(too_deep(&tagged).is_some());
        let compact = format!("x:\n{}y\n", "- ".repeat(100));
        assert!(too_deep(&compact).is_some());
        let mut block = String::new();
        for i in 0..100 {
            block.push_str(&" ".repeat(i));
            block.push_str("k:\n");
        }
        assert!(too_deep(&block).is_some());
        // Brackets a quote or a comment hides still count on their line.
        let quoted = format!("x: \"{}\"\n", "[".repeat(100));
        assert!(too_deep(&quoted).is_some());
        let commented = format!("x: 1 # {}\n", "{".repeat(100));
        assert!(too_deep(&commented).is_some());
    }

    #[test]
    fn text_that_only_looks_nested_is_not_counted() {
        // Inside block scalars, quoted scalars and comments, brackets are text; balanced text
        // brackets on many lines never add up.
        let block = format!("x: |\n{}y: 1\n", "  [[[[[[[[[[[[[[[[[[[[\n".repeat(50));
        assert_eq!(too_deep(&block), None);
        let entry = format!(
            "a:\n  - k: >-\n{}  - 1\n",
            "      {{{{{{{{{{{{{{{{\n".repeat(50)
        );
        assert_eq!(too_deep(&entry), None);
        let quoted = "x: ['[[[[[[[[[[[[', \"{{{{{{{{{{{{\"]\n".repeat(100);
        assert_eq!(too_deep(&quoted), None);
        let globs = "- /usr/{a,{b,c}}/[xy]*\n".repeat(1000);
        assert_eq!(too_deep(&globs), None);
    }

    #[test]
    fn a_quote_or_block_scalar_cannot_hide_nesting_on_later_lines() {
        // A quote opened on one line ends there for the scan: what follows counts.
        let open_quote = format!("x: 'a\n{}", "[\n".repeat(100));
        assert!(too_deep(&open_quote).is_some());
        // A block scalar ends at the first line indented less than its content.
        let after_block = format!("x: |\n    text\n  y: {}", "[".repeat(100));
        assert!(too_deep(&after_block).is_some());
        // `key: |x` is no block scalar header.
        let not_block = format!("x: |x\n  {}", "[".repeat(100));
        assert!(too_deep(&not_block).is_some());
        // Content is indented more than the entry's mapping (column 4), not its line.
        let in_entry = format!("a:\n  - k: |\n    {}", "[\n".repeat(100));
        assert!(too_deep(&in_entry).is_some());
    }

    #[test]
    fn size_is_checked_first() {
        let big = manifest(&format!(
            "  exec:\n    allow: [/a]\n#{}\n",
            "x".repeat(MAX_FILE_BYTES)
        ));
        assert_eq!(
            limit_of(&big),
            Some(Limit::Size {
                bytes: big.len(),
                max: MAX_FILE_BYTES
            })
        );
        let inline = manifest(&format!("#{}\n", "x".repeat(MAX_INLINE_BYTES)));
        let error = parse_str(&inline, ScopeSource::Inline).expect_err("too big");
        assert!(error.to_string().contains("262144 bytes"), "{error}");
    }

    #[test]
    fn dir_file_past_the_size_limit_is_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(MAX_FILE_BYTES as u64 * 64)
            .expect("sparse file");
        let error = crate::scope::parse_file(&path).expect_err("too big");
        assert!(matches!(
            error,
            ScopeError::Limit {
                limit: Limit::Size { .. },
                ..
            }
        ));
        assert!(
            error.to_string().contains("limit of 1048576 bytes"),
            "{error}"
        );
    }

    #[test]
    fn lists_and_scopes_have_an_entry_limit() {
        let entries = |n: usize, list: &str| {
            let items: Vec<String> = (0..n).map(|i| format!("/a/{list}{i}")).collect();
            format!("    {list}: [{}]\n", items.join(", "))
        };
        let at_limit = manifest(&format!("  files:\n{}", entries(MAX_LIST_ENTRIES, "read")));
        assert!(parse_str(&at_limit, std::path::Path::new("t.yaml")).is_ok());
        let short: Vec<String> = (0..100_000).map(|i| format!("/r{i}")).collect();
        let past = manifest(&format!("  files:\n    read: [{}]\n", short.join(",")));
        // How long refusing it takes is measured by the bench ("Hostile input: reload"),
        // not here: a timed unit test fails on a loaded machine.
        let error = parse_str(&past, std::path::Path::new("t.yaml")).expect_err("past");
        let text = error.to_string();
        assert!(text.contains("spec.files.read"), "{text}");
        assert!(text.contains("limit of 4096 entries in one list"), "{text}");
        let many = manifest(&format!(
            "  files:\n{}{}{}",
            entries(MAX_LIST_ENTRIES, "read"),
            entries(MAX_LIST_ENTRIES, "write"),
            entries(1, "deny")
        ));
        assert_eq!(
            limit_of(&many),
            Some(Limit::ScopeEntries {
                name: "x".into(),
                entries: MAX_SCOPE_ENTRIES + 1
            })
        );
    }

    #[test]
    fn documents_have_a_limit() {
        let doc = manifest("  exec:\n    allow: [/a]\n");
        let many = format!("---\n{doc}").repeat(MAX_DOCUMENTS + 1);
        assert_eq!(limit_of(&many), Some(Limit::Documents));
    }
}
