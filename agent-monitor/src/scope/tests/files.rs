//! Files and directories.

use std::fs;

use super::*;

#[test]
fn multi_document_file() {
    let second = MINIMAL.replace("minimal", "second");
    let text = format!("---\n{FULL}---\n{second}---\n");
    let scopes = parse(&text);
    let names: Vec<_> = scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["code-reviewer", "second"]);
    assert_eq!(scopes[1].mode, Mode::Audit);
}

#[test]
fn parse_file_reads_and_names_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.yaml");
    fs::write(&path, FULL).unwrap();
    let scopes = parse_file(&path).unwrap();
    assert_eq!(scopes[0].source, ScopeSource::File(path.clone()));

    let missing = dir.path().join("missing.yaml");
    let err = parse_file(&missing).unwrap_err();
    assert!(matches!(err, ScopeError::Read { .. }), "{err:?}");
    assert_eq!(err.file(), Some(missing.as_path()));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read the file: ", missing.display()))
    );

    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, FULL.replace("ttl: 30m", "ttl: forever")).unwrap();
    let err = parse_file(&bad).unwrap_err();
    assert_eq!(err.file(), Some(bad.as_path()));
    assert_eq!((err.line(), err.column()), (Some(9), Some(8)));
    assert!(
        err.to_string()
            .starts_with(&format!("{}:9:8: spec.ttl: ", bad.display())),
        "{err}"
    );
}

#[test]
fn load_dir_skips_bad_files_and_keeps_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
    write("b-good.yaml", FULL);
    write(
        "a-bad.yaml",
        &MINIMAL.replace("spec: {}", "spec: {mode: loud}"),
    );
    write("c-good.yml", &MINIMAL.replace("minimal", "other"));
    write("notes.txt", "not a manifest");
    write(".hidden.yaml", "garbage: [");
    fs::create_dir(dir.path().join("sub.yaml")).unwrap();

    let report = load_dir(dir.path());
    let names: Vec<_> = report.scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["code-reviewer", "other"], "sorted by file name");
    assert_eq!(
        report.scopes[0].source,
        ScopeSource::File(dir.path().join("b-good.yaml"))
    );
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let err = &report.errors[0];
    assert_eq!(err.file(), Some(dir.path().join("a-bad.yaml").as_path()));
    assert_eq!((err.line(), err.column()), (Some(4), Some(14)));
}

#[test]
fn load_dir_reports_duplicate_names_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
    write("10-first.yaml", FULL);
    // The second file also has a unique scope; the file is skipped as a whole.
    write("20-second.yaml", &format!("{MINIMAL}---\n{FULL}"));
    let report = load_dir(dir.path());
    let names: Vec<_> = report.scopes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["code-reviewer"]);
    assert_eq!(report.errors.len(), 1);
    let shown = report.errors[0].to_string();
    let first = dir.path().join("10-first.yaml");
    let second = dir.path().join("20-second.yaml");
    assert_eq!(
        shown,
        format!(
            "{}: duplicate scope name \"code-reviewer\", already defined in {}",
            second.display(),
            first.display()
        )
    );
}

#[test]
fn load_dir_on_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let report = load_dir(&missing);
    assert!(report.scopes.is_empty());
    assert!(matches!(&report.errors[..], [ScopeError::ReadDir { path, .. }] if *path == missing));
}
