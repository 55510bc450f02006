//! Whole directories judged readable (`DirGrant`), checked against the per-file verdict.

use std::collections::BTreeSet;

use super::*;

/// Names tried in each directory a grant covers.
const PROBES: &[&str] = &[
    "a", "main.rs", ".env", ".envrc", "x.pem", "secrets", "config", ".git", "id_rsa",
];

fn policy(read: &[&str], write: &[&str], deny: &[&str], baseline: bool) -> CompiledPolicy {
    CompiledPolicy::compile(PolicySpec {
        files: FileRules {
            baseline,
            read: strings(read),
            write: strings(write),
            deny: strings(deny),
            list: Vec::new(),
        },
        ..PolicySpec::default()
    })
    .unwrap()
}

fn except(names: &[&str]) -> DirGrant {
    DirGrant::Except(names.iter().map(|n| (*n).to_owned()).collect())
}

/// A grant is never wider than the per-file verdict: every probe it covers in `dir` is
/// allowed for a read by any process.
fn sound(p: &CompiledPolicy, dir: &str) -> DirGrant {
    let grant = p.dir_grant(dir);
    let excepted = match &grant {
        DirGrant::None => return grant,
        DirGrant::All => BTreeSet::new(),
        DirGrant::Except(names) => names.clone(),
    };
    for name in PROBES.iter().filter(|n| !excepted.contains(**n)) {
        let path = if dir == "/" {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        };
        for access in [FileAccess::Read, FileAccess::List] {
            assert!(
                allowed(p, &file(&path, access)),
                "{dir} granted ({grant:?}) but {access} of {path} is not allowed"
            );
        }
    }
    grant
}

#[test]
fn the_example_scope_grants_its_trees_but_the_denied_name() {
    let p = example();
    assert_eq!(sound(&p, "/workspace"), except(&[".env"]));
    assert_eq!(sound(&p, "/workspace/src/deep/er"), except(&[".env"]));
    assert_eq!(sound(&p, "/tmp"), except(&[".env"]));
    // The baseline's trees, and the lists exec.allow names are not trees.
    assert_eq!(sound(&p, "/usr/lib/x86_64-linux-gnu"), except(&[".env"]));
    assert_eq!(sound(&p, "/usr/bin"), DirGrant::None);
    // Some files of these are readable, not all.
    for dir in [
        "/",
        "/etc",
        "/root",
        "/root/.ssh",
        "/srv",
        "/proc/4242",
        "/dev",
    ] {
        assert_eq!(sound(&p, dir), DirGrant::None, "{dir}");
    }
}

#[test]
fn a_deny_glob_names_a_file_or_rules_the_directory_out() {
    let p = policy(
        &["/w/**"],
        &[],
        &["/w/secrets/**", "**/.git/config", "/w/keys/*.pem"],
        false,
    );
    // `/w/secrets/**` also denies the directory itself: its name is excepted in `/w`.
    assert_eq!(sound(&p, "/w"), except(&["secrets"]));
    assert_eq!(sound(&p, "/w/secrets"), DirGrant::None);
    assert_eq!(sound(&p, "/w/secrets/deeper"), DirGrant::None);
    assert_eq!(sound(&p, "/w/secretsx"), DirGrant::All);
    assert_eq!(sound(&p, "/w/repo/.git"), except(&["config"]));
    assert_eq!(sound(&p, "/w/keys"), DirGrant::None);
    // A glob component is matched against the directory's; any name in `/w` may be one it
    // matches (the entry denies the directory itself too).
    let p = policy(&["/w/**"], &[], &["/w/a?c/**"], false);
    assert_eq!(sound(&p, "/w"), DirGrant::None);
    assert_eq!(sound(&p, "/w/abc"), DirGrant::None);
    assert_eq!(sound(&p, "/w/abcd"), DirGrant::All);
}

#[test]
fn only_globs_that_surely_match_every_name_cover() {
    let p = policy(
        &["/d/*", "/e/**/x/*", "/f/*.txt", "/g/{a,b}/**"],
        &[],
        &[],
        false,
    );
    assert_eq!(sound(&p, "/d"), DirGrant::All);
    assert_eq!(sound(&p, "/d/sub"), DirGrant::None);
    assert_eq!(sound(&p, "/e/x"), DirGrant::All);
    assert_eq!(sound(&p, "/e/1/2/x"), DirGrant::All);
    assert_eq!(sound(&p, "/e/1/2"), DirGrant::None);
    assert_eq!(sound(&p, "/f"), DirGrant::None);
    assert_eq!(sound(&p, "/g/a"), DirGrant::None);
    // Writable implies readable.
    let p = policy(&[], &["/out/**"], &[], false);
    assert_eq!(sound(&p, "/out/x"), DirGrant::All);
}

#[test]
fn a_deny_glob_that_cannot_be_taken_apart_or_names_long_files_rules_out() {
    let p = policy(&["/w/**"], &[], &["**/*.{pem,key}"], false);
    assert_eq!(sound(&p, "/w"), DirGrant::None);
    let p = policy(&["/w/**"], &[], &["**/*.pem"], false);
    assert_eq!(sound(&p, "/w"), DirGrant::None);
    // The key holds 27 bytes and a NUL.
    let long = format!("**/{}", "n".repeat(28));
    let p = policy(&["/w/**"], &[], &[&long], false);
    assert_eq!(sound(&p, "/w"), DirGrant::None);
    let fits = format!("**/{}", "n".repeat(27));
    let p = policy(&["/w/**"], &[], &[&fits], false);
    assert_eq!(sound(&p, "/w"), except(&[&fits[3..]]));
}

#[test]
fn names_a_deny_glob_leaves_out_are_not_denied_in_that_directory() {
    // The other direction: a name the grant does not except is one the deny list does not
    // match there (else a deny would be granted).
    let p = policy(
        &["/**"],
        &[],
        &["**/.env", "/w/secrets/**", "**/.git/config", "/x/*/y"],
        false,
    );
    for dir in ["/w", "/w/repo/.git", "/x", "/x/q", "/w/secrets/a"] {
        let grant = p.dir_grant(dir);
        let excepted = match &grant {
            DirGrant::None => continue,
            DirGrant::All => BTreeSet::new(),
            DirGrant::Except(n) => n.clone(),
        };
        for name in PROBES.iter().chain(&["y"]) {
            let path = format!("{dir}/{name}");
            let denied = !allowed(&p, &file(&path, FileAccess::Read));
            assert!(
                !denied || excepted.contains(*name),
                "{path} is denied but {dir} is granted {grant:?}"
            );
        }
    }
    assert_eq!(p.dir_grant("/x/q"), except(&[".env", "y"]));
    assert_eq!(p.dir_grant("/w/secrets/a"), DirGrant::None);
}
