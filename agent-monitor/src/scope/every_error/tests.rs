use super::*;

const HEAD: &str = "apiVersion: agent-monitor.dev/v1\nkind: AgentScope\n";

fn lines_of(text: &str) -> Vec<Vec<usize>> {
    let documents = match check_str(text, &ScopeSource::Inline) {
        Ok(documents) => documents,
        Err(e) => panic!("{e}"),
    };
    documents
        .iter()
        .map(|d| match &d.outcome {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| e.at().map_or(0, |(line, _)| line))
                .collect(),
        })
        .collect()
}

#[test]
fn three_independent_errors_are_three_diagnostics() {
    let text = format!(
        "{HEAD}metadata: {{name: a, owner: o}}\nspec:\n  mode: enforced\n  exec:\n    allow:\n    - /usr/bin/git\n    - usr/bin/ls\n  files:\n    read: [/a]\n    write:\n    - /w/**\n    - /w/../x\n"
    );
    assert_eq!(lines_of(&text), [vec![5, 9, 14]]);
    let documents = check_str(&text, &ScopeSource::Inline).expect("documents");
    let Err(errors) = &documents[0].outcome else {
        panic!("accepted")
    };
    // Each keeps the path and index of its node.
    assert!(
        errors[1].to_string().contains("spec.exec.allow[1]"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].to_string().contains("spec.files.write[1]"),
        "{}",
        errors[2]
    );
}

#[test]
fn every_failing_document_is_reported() {
    let text = format!(
        "{HEAD}metadata: {{name: a, owner: o}}\nspec:\n  ttl: soon\n---\n{HEAD}metadata: {{name: b, owner: o}}\nspec:\n  mode: audit\n---\n{HEAD}metadata: {{name: c, owner: o}}\nspec:\n  network:\n    bind: [0]\n---\n{HEAD}metadata: {{name: b, owner: o}}\nspec:\n  mode: audit\n"
    );
    let documents = check_str(&text, &ScopeSource::Inline).expect("documents");
    assert_eq!(documents.len(), 4);
    assert!(documents[1].outcome.is_ok());
    assert_eq!(lines_of(&text), [vec![5], vec![], vec![18], vec![0]]);
    let Err(duplicate) = &documents[3].outcome else {
        panic!("a repeated name is accepted")
    };
    assert!(
        duplicate[0].to_string().contains("duplicate scope name"),
        "{}",
        duplicate[0]
    );
}

#[test]
fn an_error_in_metadata_does_not_hide_the_spec() {
    let text = format!(
        "{HEAD}metadata:\n  name: Bad_Name\n  owner: o\nspec:\n  mode: enforce\n  onViolation: explode\n"
    );
    assert_eq!(lines_of(&text), [vec![4, 8]]);
}

#[test]
fn a_valid_file_has_its_scopes_and_positions_stay() {
    let text = format!(
        "# comment\n---\n{HEAD}metadata: {{name: a, owner: o}}\nspec:\n  mode: enforce\n---\n{HEAD}metadata: {{name: b, owner: o}}\nspec:\n  mode: audit\n"
    );
    let documents = check_str(&text, &ScopeSource::Inline).expect("documents");
    let names: Vec<&str> = documents
        .iter()
        .filter_map(|d| d.outcome.as_ref().ok().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        documents[1].text.split('\n').count(),
        text.split('\n').count()
    );
}

#[test]
fn a_syntax_error_is_one_diagnostic() {
    // An unclosed flow list: taking the spec apart would report the same error again
    // from the lines after it.
    let text = format!(
        "{HEAD}metadata: {{name: a, owner: o}}\nspec:\n  exec:\n    allow: [/usr/bin/git\n  files: {{}}\n"
    );
    assert_eq!(lines_of(&text).len(), 1);
    assert_eq!(lines_of(&text)[0].len(), 1, "{:?}", lines_of(&text));
}

#[test]
fn a_document_past_the_retry_budget_reports_its_first_error_only() {
    let body =
        "spec:\n  exec:\n    allow:\n    - usr/bin/ls\n  files:\n    write:\n    - /w/../x\n";
    let small = format!("{HEAD}metadata: {{name: a, owner: o}}\n{body}");
    assert_eq!(lines_of(&small), [vec![7, 10]]);
    // Comments parse cheaply but count: the retries would parse every byte once per part.
    let padding = "# padding\n".repeat((MAX_RETRIED_DOCUMENT / 10) + 1);
    let large = format!("{HEAD}metadata: {{name: a, owner: o}}\n{padding}{body}");
    let source = ScopeSource::from(std::path::Path::new("large.yaml"));
    let documents = check_str(&large, &source).expect("documents");
    let Err(errors) = &documents[0].outcome else {
        panic!("accepted")
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
}
