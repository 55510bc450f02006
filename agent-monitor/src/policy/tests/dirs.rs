//! Whole directories judged readable (`DirGrant`), checked against the per-file verdict.

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

/// Every file may be read, but those named.
fn reads(names: &[&str]) -> Option<DirGrant> {
    grant(false, names)
}

/// Every file may be read and written, but those named.
fn writes(names: &[&str]) -> Option<DirGrant> {
    grant(true, names)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "compared with `dir_grant`'s answer"
)]
fn grant(write: bool, names: &[&str]) -> Option<DirGrant> {
    Some(DirGrant {
        read: true,
        write,
        except: names.iter().map(|n| (*n).to_owned()).collect(),
    })
}

/// A grant is never wider than the per-file verdict: every probe it covers in `dir` is
/// allowed for what it grants, to any process.
fn sound(p: &CompiledPolicy, dir: &str) -> Option<DirGrant> {
    let grant = p.dir_grant(dir)?;
    let mut accesses = Vec::new();
    if grant.read {
        accesses.extend([FileAccess::Read, FileAccess::List]);
    }
    if grant.write {
        accesses.extend([
            FileAccess::Write,
            FileAccess::Create,
            FileAccess::Truncate,
            FileAccess::Read,
        ]);
    }
    for name in PROBES.iter().filter(|n| !grant.except.contains(**n)) {
        let path = if dir == "/" {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        };
        for access in &accesses {
            assert!(
                allowed(p, &file(&path, *access)),
                "{dir} granted ({grant:?}) but {access} of {path} is not allowed"
            );
        }
    }
    Some(grant)
}

#[test]
fn the_example_scope_grants_its_trees_but_the_denied_name() {
    let p = example();
    assert_eq!(sound(&p, "/workspace/src/deep/er"), writes(&[".env"]));
    assert_eq!(sound(&p, "/tmp"), writes(&[".env"]));
    assert_eq!(sound(&p, "/workspace"), writes(&[".env"]));
    // The baseline's trees, and the lists exec.allow names are not trees.
    assert_eq!(sound(&p, "/usr/lib/x86_64-linux-gnu"), reads(&[".env"]));
    assert_eq!(sound(&p, "/usr/bin"), None);
    // The baseline's terminals may be written too.
    assert_eq!(sound(&p, "/dev/pts"), writes(&[".env"]));
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
        assert_eq!(sound(&p, dir), None, "{dir}");
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
    assert_eq!(sound(&p, "/w"), reads(&["secrets"]));
    assert_eq!(sound(&p, "/w/secrets"), None);
    assert_eq!(sound(&p, "/w/secrets/deeper"), None);
    assert_eq!(sound(&p, "/w/secretsx"), reads(&[]));
    assert_eq!(sound(&p, "/w/repo/.git"), reads(&["config"]));
    assert_eq!(sound(&p, "/w/keys"), None);
    // A glob component is matched against the directory's; any name in `/w` may be one it
    // matches (the entry denies the directory itself too).
    let p = policy(&["/w/**"], &[], &["/w/a?c/**"], false);
    assert_eq!(sound(&p, "/w"), None);
    assert_eq!(sound(&p, "/w/abc"), None);
    assert_eq!(sound(&p, "/w/abcd"), reads(&[]));
}

#[test]
fn only_globs_that_surely_match_every_name_cover() {
    let p = policy(
        &["/d/*", "/e/**/x/*", "/f/*.txt", "/g/{a,b}/**"],
        &[],
        &[],
        false,
    );
    assert_eq!(sound(&p, "/d"), reads(&[]));
    assert_eq!(sound(&p, "/d/sub"), None);
    assert_eq!(sound(&p, "/e/x"), reads(&[]));
    assert_eq!(sound(&p, "/e/1/2/x"), reads(&[]));
    assert_eq!(sound(&p, "/e/1/2"), None);
    assert_eq!(sound(&p, "/f"), None);
    assert_eq!(sound(&p, "/g/a"), None);
    // Writable implies readable.
    let p = policy(&["/in/**"], &["/out/**"], &["**/.env"], false);
    assert_eq!(sound(&p, "/out/x"), writes(&[".env"]));
    assert_eq!(sound(&p, "/in/x"), reads(&[".env"]));
}

#[test]
fn a_deny_glob_that_cannot_be_taken_apart_or_names_long_files_rules_out() {
    let p = policy(&["/w/**"], &[], &["**/*.{pem,key}"], false);
    assert_eq!(sound(&p, "/w"), None);
    let p = policy(&["/w/**"], &[], &["**/*.pem"], false);
    assert_eq!(sound(&p, "/w"), None);
    // The key holds 27 bytes and a NUL.
    let long = format!("**/{}", "n".repeat(28));
    let p = policy(&["/w/**"], &[], &[&long], false);
    assert_eq!(sound(&p, "/w"), None);
    let fits = format!("**/{}", "n".repeat(27));
    let p = policy(&["/w/**"], &[], &[&fits], false);
    assert_eq!(sound(&p, "/w"), reads(&[&fits[3..]]));
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
        let Some(grant) = p.dir_grant(dir) else {
            continue;
        };
        for name in PROBES.iter().chain(&["y"]) {
            let path = format!("{dir}/{name}");
            let denied = !allowed(&p, &file(&path, FileAccess::Read));
            assert!(
                !denied || grant.except.contains(*name),
                "{path} is denied but {dir} is granted {grant:?}"
            );
        }
    }
    assert_eq!(p.dir_grant("/x/q"), reads(&[".env", "y"]));
    assert_eq!(p.dir_grant("/w/secrets/a"), None);
}
