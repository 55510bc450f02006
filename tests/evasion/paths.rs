//! Paths: reaching a denied or out-of-scope file under another name. The denied file is
//! judged by (device, inode) in the kernel, so every name of it is stopped before the
//! read returns; what only a path can decide (globs, read/write scopes) must also be
//! stopped before the content leaks.

use std::{ffi::OsStr, fs, os::unix::ffi::OsStrExt as _, path::Path};

use crate::common::{Env, each, hex, p};
use agent_monitor_e2e::Expected;

const LINKS: &str = include_str!("cases/paths_links.py");
const RELATIVE: &str = include_str!("cases/paths_relative.py");
const DIRFD: &str = include_str!("cases/paths_dirfd.py");
const NAMES: &str = include_str!("cases/paths_names.py");
const READ: &str = include_str!("cases/paths_read.py");
const WRITE: &str = include_str!("cases/paths_write.py");
const RENAME: &str = include_str!("cases/paths_rename.py");

/// Runs a case that reads the secret and asserts: nothing leaked, the read was stopped, and
/// the record `want` was written.
fn secret_read_is_stopped(env: &Env, case: &str, args: &[&str], want: &Expected) {
    let run = env.py(&[case], args);
    env.assert_no_leak(&run, &[&env.secret_text]);
    env.assert_stopped(&run, "read");
    env.expect(&run, want);
}

/// A new name (`access` `link` or `rename`) for the denied secret: a `files.deny` violation
/// the daemon judges after the fact and kills for. It comes before the read through the new
/// name, which the kernel kills by the file's identity (if the process still lives).
fn secret_renamed(env: &Env, access: &str, new_path: &Path) -> Expected {
    Expected::violation("file", "files", env.secret_rule())
        .path(p(&env.secret))
        .new_path(&lossy(new_path))
        .access(access)
        .action("killed-process")
        .layer("daemon")
}

/// A path as a record writes it (the JSON string of its bytes, invalid UTF-8 replaced).
fn lossy(path: &Path) -> String {
    String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned()
}

#[test]
fn symlinks_and_hard_links_to_a_denied_file() {
    let env = Env::start();
    each(&["symlink", "chain", "hardlink"], |technique| {
        // Symlinks are resolved: the record names the secret itself.
        let want = if technique == "hardlink" {
            secret_renamed(&env, "link", &env.ws.join("copy.txt"))
        } else {
            env.secret_read(p(&env.secret))
        };
        secret_read_is_stopped(&env, LINKS, &[p(&env.ws), p(&env.secret), technique], &want);
    });
}

#[test]
fn relative_dotdot_and_proc_self_paths_to_a_denied_file() {
    let env = Env::start();
    each(
        &["dotdot", "proc-cwd", "proc-root", "proc-fd"],
        |technique| {
            secret_read_is_stopped(
                &env,
                RELATIVE,
                &[p(&env.ws), p(&env.secret), technique],
                &env.secret_read(p(&env.secret)),
            );
        },
    );
}

#[test]
fn a_dirfd_of_an_allowed_directory_and_openat2() {
    let env = Env::start();
    each(&["openat", "openat2", "openat2-in-root"], |technique| {
        secret_read_is_stopped(
            &env,
            DIRFD,
            &[p(&env.ws), technique],
            &env.secret_read(p(&env.secret)),
        );
    });
}

#[test]
fn non_utf8_and_very_long_names_of_a_denied_file() {
    let env = Env::start();
    // The hard links the case makes (see cases/paths_names.py).
    let odd = env
        .ws
        .join(OsStr::from_bytes(b"\xff\xfe-\xc3\x28"))
        .join(OsStr::from_bytes(b"\x80\x81.txt"));
    let long = ["a", "b", "c"]
        .iter()
        .fold(env.ws.clone(), |d, c| d.join(c.repeat(200)))
        .join("n".repeat(200));
    each(
        &[("non-utf8", &odd), ("long", &long)],
        |(technique, path)| {
            let mut want = secret_renamed(&env, "link", path);
            if technique == "long" {
                // The kernel keeps 255 bytes of a path name (and its NUL): the record has
                // that much of the link's name, and says it was cut.
                let kept = &path.as_os_str().as_bytes()[..255];
                want = want
                    .new_path(&String::from_utf8_lossy(kept))
                    .field("/truncated", true);
            }
            secret_read_is_stopped(&env, NAMES, &[p(&env.ws), p(&env.secret), technique], &want);
        },
    );
}

#[test]
fn a_denied_glob_under_non_utf8_and_very_long_paths() {
    // `**/.env` has no fixed directory: only the path can decide, so the path must survive
    // non-UTF-8 bytes and lengths beyond what the kernel copies (256 bytes).
    let env = Env::start();
    let text = format!("DOTENV-{}", env.secret_text);
    let long = env
        .ws
        .join("x".repeat(200))
        .join("y".repeat(200))
        .join(".env");
    let odd = env.ws.join(OsStr::from_bytes(b"\xff\xfe-dir")).join(".env");
    each(&[("long", &long), ("non-utf8", &odd)], |(_, path)| {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, &text).expect("write .env");
        let run = env.py(&[READ], &[&hex(path.as_os_str().as_encoded_bytes())]);
        env.assert_no_leak(&run, &[&text]);
        env.assert_stopped(&run, "read");
        // Only the path can decide: the open is held at the syscall (layer ebpf) and the
        // daemon kills the reader.
        env.expect(
            &run,
            &Expected::violation("file", "files", Env::DOTENV_RULE)
                .path(&lossy(path))
                .access("read")
                .action("killed-process")
                .layer("ebpf"),
        );
    });
}

#[test]
fn renaming_a_denied_file_into_an_allowed_directory() {
    let env = Env::start();
    let run = env.py(&[RENAME], &[p(&env.ws), p(&env.secret)]);
    env.assert_no_leak(&run, &[&env.secret_text]);
    env.assert_stopped(&run, "read");
    env.expect(
        &run,
        &secret_renamed(&env, "rename", &env.ws.join("public/readme.txt")),
    );
}

#[test]
fn reading_a_file_outside_files_read_prints_nothing() {
    let env = Env::start();
    let run = env.py(&[READ], &[&hex(p(&env.outside_file).as_bytes())]);
    env.assert_no_leak(&run, &[&env.outside_text]);
    env.assert_stopped(&run, "read");
    env.expect(&run, &Env::landlock_read(p(&env.outside_file)));
}

#[test]
fn writing_outside_files_write_leaves_no_content() {
    let env = Env::start();
    let marker = env.outside.join("marker");
    let content = format!("MARKER-{}", env.secret_text);
    let run = env.py(&[WRITE], &[p(&marker), &content]);
    let written = fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        !written.contains(&content),
        "the marker's content was written ({written:?})\n{}",
        env.describe(&run)
    );
    env.assert_stopped(&run, "write");
    env.expect(
        &run,
        &Expected::violation("file", "files", "files.write")
            .path(p(&marker))
            .access("create")
            .action("refused")
            .layer("landlock")
            .after("killed-process"),
    );
}
