use std::fs;

use agent_monitor_common::layout::TracepointLayout;

use super::{Field, Format, Hook, Layout, Verdict};

/// `sched/sched_process_fork/format` on Linux 6.18 (x86-64).
const FORK: &str = "\
    name: sched_process_fork\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
    \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
    \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
    \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n\
    \n\
    print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm), REC->parent_pid, __get_str(child_comm), REC->child_pid\n";
/// `sched/sched_process_exec/format` on Linux 6.18 (x86-64).
const EXEC: &str = "\
    name: sched_process_exec\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
    \tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
    \tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n\
    \n\
    print fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid\n";
/// `sched/sched_process_exit/format` on Linux 6.18 (x86-64).
const EXIT: &str = "\
    name: sched_process_exit\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
    \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
    \tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n\
    \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\
    \n\
    print fmt: \"comm=%s pid=%d prio=%d group_dead=%s\", REC->comm, REC->pid, REC->prio, REC->group_dead ? \"true\" : \"false\"\n";
/// `sched/sched_process_free/format` on Linux 6.18 (x86-64).
const FREE: &str = "\
    name: sched_process_free\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:__data_loc char[] comm;\toffset:8;\tsize:4;\tsigned:0;\n\
    \tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
    \tfield:int prio;\toffset:16;\tsize:4;\tsigned:1;\n\
    \n\
    print fmt: \"comm=%s pid=%d prio=%d\", __get_str(comm), REC->pid, REC->prio\n";
/// `cgroup/cgroup_mkdir/format` on Linux 6.18 (x86-64).
const CGROUP_MKDIR: &str = "\
    name: cgroup_mkdir\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int root;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:int level;\toffset:12;\tsize:4;\tsigned:1;\n\
    \tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;\n\
    \tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;\n\
    \n\
    print fmt: \"root=%d id=%llu level=%d path=%s\", REC->root, REC->id, REC->level, __get_str(path)\n";
/// `cgroup/cgroup_rmdir/format` on Linux 6.18 (x86-64).
const CGROUP_RMDIR: &str = "\
    name: cgroup_rmdir\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int root;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:int level;\toffset:12;\tsize:4;\tsigned:1;\n\
    \tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;\n\
    \tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;\n\
    \n\
    print fmt: \"root=%d id=%llu level=%d path=%s\", REC->root, REC->id, REC->level, __get_str(path)\n";
/// `cgroup/cgroup_attach_task/format` on Linux 6.18 (x86-64).
const CGROUP_ATTACH_TASK: &str = "\
    name: cgroup_attach_task\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int dst_root;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:int dst_level;\toffset:12;\tsize:4;\tsigned:1;\n\
    \tfield:u64 dst_id;\toffset:16;\tsize:8;\tsigned:0;\n\
    \tfield:int pid;\toffset:24;\tsize:4;\tsigned:1;\n\
    \tfield:__data_loc char[] dst_path;\toffset:28;\tsize:4;\tsigned:0;\n\
    \tfield:__data_loc char[] comm;\toffset:32;\tsize:4;\tsigned:0;\n\
    \n\
    print fmt: \"dst_root=%d dst_id=%llu dst_level=%d dst_path=%s pid=%d comm=%s\", REC->dst_root, REC->dst_id, REC->dst_level, __get_str(dst_path), REC->pid, __get_str(comm)\n";
/// `syscalls/sys_enter_execve/format` on Linux 6.18 (x86-64).
const SYS_ENTER_EXECVE: &str = "\
    name: sys_enter_execve\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;\n\
    \tfield:const char *const * argv;\toffset:24;\tsize:8;\tsigned:0;\n\
    \tfield:const char *const * envp;\toffset:32;\tsize:8;\tsigned:0;\n\
    \n\
    print fmt: \"filename: 0x%08lx, argv: 0x%08lx, envp: 0x%08lx\", ((unsigned long)(REC->filename)), ((unsigned long)(REC->argv)), ((unsigned long)(REC->envp))\n";
/// `syscalls/sys_enter_execveat/format` on Linux 6.18 (x86-64).
const SYS_ENTER_EXECVEAT: &str = "\
    name: sys_enter_execveat\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:int fd;\toffset:16;\tsize:8;\tsigned:0;\n\
    \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
    \tfield:const char *const * argv;\toffset:32;\tsize:8;\tsigned:0;\n\
    \tfield:const char *const * envp;\toffset:40;\tsize:8;\tsigned:0;\n\
    \tfield:int flags;\toffset:48;\tsize:8;\tsigned:0;\n\
    \n\
    print fmt: \"fd: 0x%08lx, filename: 0x%08lx, argv: 0x%08lx, envp: 0x%08lx, flags: 0x%08lx\", ((unsigned long)(REC->fd)), ((unsigned long)(REC->filename)), ((unsigned long)(REC->argv)), ((unsigned long)(REC->envp)), ((unsigned long)(REC->flags))\n";
/// `syscalls/sys_enter_kill/format` on Linux 6.18 (x86-64).
const SYS_ENTER_KILL: &str = "\
    name: sys_enter_kill\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:pid_t pid;\toffset:16;\tsize:8;\tsigned:0;\n\
    \tfield:int sig;\toffset:24;\tsize:8;\tsigned:0;\n\
    \n\
    print fmt: \"pid: 0x%08lx, sig: 0x%08lx\", ((unsigned long)(REC->pid)), ((unsigned long)(REC->sig))\n";
/// `syscalls/sys_exit_connect/format` on Linux 6.18 (x86-64).
const SYS_EXIT_CONNECT: &str = "\
    name: sys_exit_connect\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n\
    \n\
    print fmt: \"0x%lx\", REC->ret\n";
/// `syscalls/sys_exit_kill/format` on Linux 6.18 (x86-64).
const SYS_EXIT_KILL: &str = "\
    name: sys_exit_kill\n\
    format:\n\
    \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
    \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
    \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
    \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\
    \n\
    \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
    \tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n\
    \n\
    print fmt: \"0x%lx\", REC->ret\n";

/// (category, name, format text) of the tracepoints above.
const FORMATS: &[(&str, &str, &str)] = &[
    ("sched", "sched_process_fork", FORK),
    ("sched", "sched_process_exec", EXEC),
    ("sched", "sched_process_exit", EXIT),
    ("sched", "sched_process_free", FREE),
    ("cgroup", "cgroup_mkdir", CGROUP_MKDIR),
    ("cgroup", "cgroup_rmdir", CGROUP_RMDIR),
    ("cgroup", "cgroup_attach_task", CGROUP_ATTACH_TASK),
    ("syscalls", "sys_enter_execve", SYS_ENTER_EXECVE),
    ("syscalls", "sys_enter_execveat", SYS_ENTER_EXECVEAT),
    ("syscalls", "sys_enter_kill", SYS_ENTER_KILL),
    ("syscalls", "sys_exit_connect", SYS_EXIT_CONNECT),
    ("syscalls", "sys_exit_kill", SYS_EXIT_KILL),
];

fn hook(program: &'static str, category: &'static str, name: &str, required: bool) -> Hook {
    Hook {
        program,
        category,
        name: name.to_owned(),
        required,
    }
}

/// One hook of every program on the tracepoints above, in the loader's order
/// (`sys_exit_kill` optional, as the escape hooks are).
fn hooks() -> Vec<Hook> {
    vec![
        hook("sched_process_fork", "sched", "sched_process_fork", true),
        hook("sched_process_exec", "sched", "sched_process_exec", true),
        hook("sched_process_exit", "sched", "sched_process_exit", true),
        hook("sched_process_free", "sched", "sched_process_free", true),
        hook("sys_enter_execve", "syscalls", "sys_enter_execve", true),
        hook("sys_enter_execveat", "syscalls", "sys_enter_execveat", true),
        hook("cgroup_mkdir", "cgroup", "cgroup_mkdir", true),
        hook("cgroup_rmdir", "cgroup", "cgroup_rmdir", true),
        hook("cgroup_attach_task", "cgroup", "cgroup_attach_task", true),
        hook("sys_exit_file", "syscalls", "sys_exit_connect", true),
        hook("sys_enter_escape", "syscalls", "sys_enter_kill", false),
        hook("sys_exit_escape", "syscalls", "sys_exit_kill", false),
        hook("sys_exit_refused", "syscalls", "sys_exit_connect", false),
    ]
}

/// A tracefs tree holding the formats above, `edit` applied to the one of `name`.
fn tracefs(name: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    for (category, tp, text) in FORMATS {
        let dir = root.path().join("events").join(category).join(tp);
        fs::create_dir_all(&dir).expect("mkdir");
        let text = if *tp == name {
            edit(text)
        } else {
            (*text).to_owned()
        };
        fs::write(dir.join("format"), text).expect("write format");
    }
    root
}

fn read(root: &tempfile::TempDir) -> Layout {
    Layout::read(root.path(), &hooks())
}

fn refusals(layout: &Layout) -> Vec<(String, String)> {
    hooks()
        .iter()
        .zip(&layout.verdicts)
        .filter_map(|(h, v)| match v {
            Verdict::Refused(e) => Some((format!("{}@{}", h.program, h.tracepoint()), e.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_format_file_gives_every_field_with_its_offset_size_and_kind() {
    let f = Format::parse(FORK).expect("parse");
    let field = |name: &str, offset, size, data_loc| Field {
        name: name.to_owned(),
        offset,
        size,
        data_loc,
    };
    assert_eq!(
        f.fields,
        [
            field("common_type", 0, 2, false),
            field("common_flags", 2, 1, false),
            field("common_preempt_count", 3, 1, false),
            field("common_pid", 4, 4, false),
            field("parent_comm", 8, 4, true),
            field("parent_pid", 12, 4, false),
            field("child_comm", 16, 4, true),
            field("child_pid", 20, 4, false),
        ]
    );
    let exit = Format::parse(EXIT).expect("parse");
    assert_eq!(exit.field("comm"), Some(&field("comm", 8, 16, false)));
    let execve = Format::parse(SYS_ENTER_EXECVE).expect("parse");
    assert_eq!(execve.syscall_arg(1), Some(&field("argv", 24, 8, false)));
    assert_eq!(execve.syscall_arg(3), None);
}

#[test]
fn a_format_without_fields_or_with_a_broken_line_is_an_error() {
    assert!(Format::parse("name: x\nID: 1\nformat:\n").is_err());
    assert!(Format::parse("\tfield:int x;\toffset:;\tsize:4;\n").is_err());
}

/// The copies of this kernel's formats give the offsets the programs were written
/// with (and the object's default), and every hook fits.
#[test]
fn the_formats_of_linux_6_18_give_the_default_layout() {
    let root = tracefs("", str::to_owned);
    let layout = read(&root);
    assert_eq!(layout.layout, TracepointLayout::DEFAULT);
    assert_eq!(refusals(&layout), []);
    assert_eq!(TracepointLayout::DEFAULT.sys_arg(2), 32);
}

/// The tracefs of the machine running the tests, with every hook the loader attaches:
/// nothing moved on this kernel. Needs root (tracefs) and a kernel whose formats are
/// 6.18's, as the development and CI machines run.
#[test]
fn host_tracefs_gives_the_default_layout() {
    let root = super::default_root();
    assert!(
        fs::read_dir(root.join("events")).is_ok(),
        "this test needs root and tracefs at {}",
        root.display()
    );
    let hooks = crate::kernel::loader::tracepoint_hooks();
    let layout = Layout::read(&root, &hooks);
    assert_eq!(layout.layout, TracepointLayout::DEFAULT);
    let refused: Vec<_> = hooks
        .iter()
        .zip(&layout.verdicts)
        .filter(|(_, v)| matches!(v, Verdict::Refused(_)))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(
        hooks
            .iter()
            .zip(&layout.verdicts)
            .all(|(h, v)| *v == Verdict::Fits || !h.required),
        "a required tracepoint is absent"
    );
}

#[test]
fn a_missing_field_refuses_the_hook_naming_tracepoint_and_field() {
    let root = tracefs("sched_process_exit", |t| {
        t.replace(
            "\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n",
            "",
        )
    });
    assert_eq!(
        refusals(&read(&root)),
        [(
            "sched_process_exit@sched:sched_process_exit".to_owned(),
            "tracepoint sched:sched_process_exit has no field `group_dead` (read by sched_process_exit)".to_owned()
        )]
    );
}

#[test]
fn a_missing_syscall_argument_refuses_the_hook() {
    let root = tracefs("sys_enter_execveat", |t| {
        t.replace(
            "\tfield:const char *const * argv;\toffset:32;\tsize:8;\tsigned:0;\n",
            "",
        )
        .replace(
            "\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n",
            "",
        )
        .replace(
            "\tfield:const char *const * envp;\toffset:40;\tsize:8;\tsigned:0;\n",
            "",
        )
        .replace("\tfield:int flags;\toffset:48;\tsize:8;\tsigned:0;\n", "")
    });
    let refused = refusals(&read(&root));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0].1,
        "tracepoint syscalls:sys_enter_execveat has no argument 2 (argv, read by sys_enter_execveat)"
    );
}

/// A field that moved in one optional tracepoint only: the program has one offset for
/// all its tracepoints, so that one is refused and the layout stays.
#[test]
fn a_field_shifted_in_one_tracepoint_of_a_shared_program_refuses_that_one() {
    let root = tracefs("sys_exit_kill", |t| {
        t.replace("long ret;\toffset:16;", "long ret;\toffset:24;")
    });
    let layout = read(&root);
    assert_eq!(layout.layout, TracepointLayout::DEFAULT);
    assert_eq!(
        refusals(&layout),
        [(
            "sys_exit_escape@syscalls:sys_exit_kill".to_owned(),
            "tracepoint syscalls:sys_exit_kill: field `ret` is at offset 24, sys_exit_escape reads it at 16 (where the other tracepoints it is attached to have it)".to_owned()
        )]
    );
}

/// A layout shifted as a whole (another kernel) is taken as it is.
#[test]
fn a_consistently_shifted_field_moves_the_layout() {
    let root = tracefs("sched_process_fork", |t| {
        t.replace(
            "pid_t child_pid;\toffset:20;",
            "pid_t child_pid;\toffset:44;",
        )
    });
    let layout = read(&root);
    assert_eq!(refusals(&layout), []);
    assert_eq!(
        layout.layout,
        TracepointLayout {
            fork_child_pid: 44,
            ..TracepointLayout::DEFAULT
        }
    );
}

#[test]
fn a_field_of_another_size_kind_or_place_is_refused() {
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "sched_process_exec",
            "pid_t old_pid;\toffset:16;\tsize:4;",
            "pid_t old_pid;\toffset:16;\tsize:8;",
            "tracepoint sched:sched_process_exec: field `old_pid` is 8 bytes, sched_process_exec reads 4",
        ),
        (
            "sched_process_exec",
            "__data_loc char[] filename;",
            "char filename[4];",
            "tracepoint sched:sched_process_exec: field `filename` is a plain value, sched_process_exec reads a `__data_loc` string",
        ),
        (
            "sched_process_fork",
            "pid_t child_pid;\toffset:20;",
            "pid_t child_pid;\toffset:22;",
            "tracepoint sched:sched_process_fork: field `child_pid` at offset 22 cannot be loaded by sched_process_fork (it loads 4-byte fields at aligned offsets up to 64)",
        ),
        (
            "cgroup_mkdir",
            "u64 id;\toffset:16;",
            "u64 id;\toffset:72;",
            "tracepoint cgroup:cgroup_mkdir: field `id` at offset 72 cannot be loaded by cgroup_mkdir (it loads 8-byte fields at aligned offsets up to 64)",
        ),
    ];
    for (tp, from, to, error) in cases {
        let root = tracefs(tp, |t| t.replace(from, to));
        let refused = refusals(&read(&root));
        assert_eq!(refused.len(), 1, "{tp}: {refused:?}");
        assert_eq!(refused[0].1, error);
    }
}

#[test]
fn an_absent_optional_tracepoint_is_absent_and_an_absent_required_one_refused() {
    let root = tracefs("", str::to_owned);
    fs::remove_dir_all(root.path().join("events/syscalls/sys_exit_kill")).expect("rm");
    fs::remove_dir_all(root.path().join("events/sched/sched_process_fork")).expect("rm");
    let layout = read(&root);
    let verdict = |program: &str, name: &str| {
        hooks()
            .iter()
            .zip(&layout.verdicts)
            .find(|(h, _)| h.program == program && h.name == name)
            .map(|(_, v)| v.clone())
            .expect("hook")
    };
    assert_eq!(verdict("sys_exit_escape", "sys_exit_kill"), Verdict::Absent);
    let Verdict::Refused(e) = verdict("sched_process_fork", "sched_process_fork") else {
        panic!("an absent required tracepoint is refused");
    };
    assert!(
        e.starts_with("tracepoint sched:sched_process_fork: reading ")
            && e.contains("sched_process_fork/format"),
        "{e}"
    );
}
