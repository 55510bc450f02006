//! The files dimension.

use super::*;

#[test]
fn read_allowed_by_read_write_or_baseline() {
    let p = example();
    assert!(allowed(
        &p,
        &file("/etc/ssl/certs/ca.pem", FileAccess::Read)
    ));
    assert!(
        allowed(&p, &file("/tmp/out", FileAccess::Read)),
        "writable implies readable"
    );
    assert!(allowed(
        &p,
        &file("/usr/lib/x86_64-linux-gnu/libc.so.6", FileAccess::Read)
    ));
    assert!(allowed(&p, &file("/etc/ld.so.cache", FileAccess::Read)));
    assert!(allowed(&p, &file("/dev/pts/3", FileAccess::Read)));
    let v = violation(&p, &file("/etc/hostname", FileAccess::Read));
    assert_eq!(v.dimension, Dimension::Files);
    assert_eq!(v.rule, "files.read");
    assert_eq!(
        v.reason,
        "read of /etc/hostname is not in files.read, files.write or the baseline"
    );
}

#[test]
fn write_needs_write_list_or_write_baseline() {
    let p = example();
    assert!(allowed(&p, &file("/tmp/x", FileAccess::Create)));
    assert!(allowed(&p, &file("/workspace/a", FileAccess::Unlink)));
    assert!(allowed(&p, &file("/dev/null", FileAccess::Write)));
    assert!(allowed(&p, &file("/dev/pts/0", FileAccess::Write)));
    // Readable is not writable, whether by `read` or by the baseline.
    for (path, access) in [
        ("/etc/ssl/certs/ca.pem", FileAccess::Write),
        ("/usr/lib/libc.so.6", FileAccess::Write),
        ("/dev/urandom", FileAccess::Write),
        ("/etc/passwd", FileAccess::Unlink),
        ("/etc/cron.d/x", FileAccess::Create),
        ("/etc/hosts", FileAccess::Rename),
    ] {
        let v = violation(&p, &file(path, access));
        assert_eq!(
            (v.dimension, v.rule.as_str()),
            (Dimension::Files, "files.write"),
            "{path}"
        );
    }
    let v = violation(&p, &file("/etc/cron.d/x", FileAccess::Create));
    assert_eq!(v.reason, "create of /etc/cron.d/x is not in files.write");
}

#[test]
fn deny_wins_over_read_write_and_baseline() {
    let p = CompiledPolicy::compile(PolicySpec {
        files: FileRules {
            deny: strings(&[
                "/etc/shadow",
                "/workspace/secret/**",
                "/etc/passwd",
                "/dev/null",
            ]),
            ..example_spec().files
        },
        ..example_spec()
    })
    .unwrap();
    let v = violation(&p, &file("/workspace/secret/key", FileAccess::Read));
    assert_eq!(v.dimension, Dimension::Files);
    assert_eq!(v.rule, "files.deny[1]: /workspace/secret/**");
    assert_eq!(
        v.reason,
        "read of /workspace/secret/key is denied by files.deny"
    );
    // The directory itself is inside a `/**` entry.
    assert_eq!(
        violation(&p, &file("/workspace/secret", FileAccess::Read)).rule,
        "files.deny[1]: /workspace/secret/**"
    );
    assert_eq!(
        violation(&p, &file("/workspace/secret/k", FileAccess::Write)).rule,
        "files.deny[1]: /workspace/secret/**"
    );
    // Over the read baseline and the write baseline.
    assert_eq!(
        violation(&p, &file("/etc/passwd", FileAccess::Read)).rule,
        "files.deny[2]: /etc/passwd"
    );
    assert_eq!(
        violation(&p, &file("/dev/null", FileAccess::Write)).rule,
        "files.deny[3]: /dev/null"
    );
    // Siblings are untouched.
    assert!(allowed(&p, &file("/workspace/secrets", FileAccess::Read)));
    assert!(allowed(&p, &file("/etc/group", FileAccess::Read)));
}

#[test]
fn first_matching_deny_entry_is_named() {
    let p = CompiledPolicy::compile(PolicySpec {
        files: FileRules {
            deny: strings(&["/root/**", "/root/.ssh/**"]),
            ..example_spec().files
        },
        ..example_spec()
    })
    .unwrap();
    assert_eq!(
        violation(&p, &file("/root/.ssh/id_rsa", FileAccess::Read)).rule,
        "files.deny[0]: /root/**"
    );
}

#[test]
fn proc_baseline_is_own_process_only() {
    let p = example();
    assert!(allowed(&p, &file("/proc/4242/status", FileAccess::Read)));
    assert!(allowed(&p, &file("/proc/4242", FileAccess::Read)));
    assert!(allowed(
        &p,
        &file("/proc/4242/task/4243/stat", FileAccess::Read)
    ));
    for path in [
        "/proc/1/environ",
        "/proc/42420/status",
        "/proc/424/status",
        "/proc/kcore",
    ] {
        assert_eq!(
            violation(&p, &file(path, FileAccess::Read)).rule,
            "files.read",
            "{path}"
        );
    }
    // Readable is not writable.
    assert_eq!(
        violation(&p, &file("/proc/4242/attr/current", FileAccess::Write)).rule,
        "files.write"
    );
}

#[test]
fn baseline_off_grants_nothing() {
    let p = CompiledPolicy::compile(PolicySpec {
        files: FileRules {
            baseline: false,
            ..example_spec().files
        },
        ..example_spec()
    })
    .unwrap();
    let v = violation(&p, &file("/usr/lib/libc.so.6", FileAccess::Read));
    assert_eq!(v.rule, "files.read");
    assert_eq!(
        v.reason,
        "read of /usr/lib/libc.so.6 is not in files.read or files.write (baseline off)"
    );
    assert_eq!(
        violation(&p, &file("/proc/4242/status", FileAccess::Read)).rule,
        "files.read"
    );
    assert_eq!(
        violation(&p, &file("/dev/null", FileAccess::Write)).rule,
        "files.write"
    );
    assert!(allowed(&p, &file("/workspace/a", FileAccess::Read)));
}

#[test]
fn rename_needs_write_on_both_ends_and_deny_applies_to_both() {
    let p = example();
    let rename = |from, to| Activity::Rename { from, to };
    assert!(allowed(&p, &rename("/workspace/a", "/tmp/a")));
    let v = violation(&p, &rename("/workspace/a", "/etc/cron.d/a"));
    assert_eq!(
        (v.dimension, v.rule.as_str()),
        (Dimension::Files, "files.write")
    );
    assert_eq!(v.reason, "rename to /etc/cron.d/a is not in files.write");
    // Readable (by `read` or baseline) is not enough to move a file away.
    let v = violation(&p, &rename("/etc/ssl/certs/ca.pem", "/tmp/ca.pem"));
    assert_eq!(
        v.reason,
        "rename from /etc/ssl/certs/ca.pem is not in files.write"
    );
    // Deny on either end, reported before the allow-lists.
    let v = violation(&p, &rename("/workspace/.env", "/tmp/env"));
    assert_eq!(v.rule, "files.deny[2]: **/.env");
    assert_eq!(
        v.reason,
        "rename from /workspace/.env is denied by files.deny"
    );
    let v = violation(&p, &rename("/etc/motd", "/workspace/.env"));
    assert_eq!(v.rule, "files.deny[2]: **/.env");
    assert_eq!(
        v.reason,
        "rename to /workspace/.env is denied by files.deny"
    );
}

#[test]
fn a_hard_link_needs_a_readable_file_and_a_creatable_name() {
    let p = example();
    let link = |from, to| Activity::Link { from, to };
    assert!(allowed(
        &p,
        &link("/etc/ssl/certs/ca.pem", "/workspace/ca.pem")
    ));
    let v = violation(&p, &link("/etc/hostname", "/workspace/h"));
    assert_eq!(v.rule, "files.read");
    assert_eq!(
        v.reason,
        "hard link of /etc/hostname is not in files.read, files.write or the baseline"
    );
    let v = violation(&p, &link("/workspace/a", "/etc/ssl/a"));
    assert_eq!(v.rule, "files.write");
    assert_eq!(v.reason, "hard link as /etc/ssl/a is not in files.write");
    let v = violation(&p, &link("/etc/shadow", "/workspace/s"));
    assert_eq!(v.rule, "files.deny[0]: /etc/shadow");
}

#[test]
fn a_listing_needs_read_or_files_list() {
    let p = example();
    assert!(allowed(&p, &file("/workspace/src", FileAccess::List)));
    assert!(allowed(&p, &file("/srv", FileAccess::List)), "files.list");
    assert!(
        !allowed(&p, &file("/srv/data.txt", FileAccess::Read)),
        "names, not contents"
    );
    let v = violation(&p, &file("/root", FileAccess::List));
    assert_eq!(v.rule, "files.read");
    assert_eq!(
        v.reason,
        "list of /root is not in files.read, files.write, files.list or the baseline"
    );
}
