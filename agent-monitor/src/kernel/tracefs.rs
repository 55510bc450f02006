//! Tracepoint record layouts from tracefs, read before the programs load: each hooked
//! tracepoint's `events/<category>/<name>/format` file says where its fields are. The
//! offsets become the programs' read-only `TRACEPOINT_LAYOUT` ([`TracepointLayout`]); a
//! tracepoint whose format lacks a field its program reads, or has it with another size or
//! kind, or at an offset the program cannot load, is refused with a message naming the
//! tracepoint and the field.
//!
//! One program may be attached to many tracepoints (`sys_exit_file` to every file
//! syscall) and reads each field at one offset: the first tracepoint that has it sets it,
//! required hooks before optional ones, and every other one must agree.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use agent_monitor_common::layout::{MAX_FIELD_OFFSET, SYSCALL_ARG_SIZE, TracepointLayout};

/// The usual mount points of tracefs, in the order they are tried.
const ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root of this machine: the first of [`ROOTS`] with an `events` directory.
pub(crate) fn default_root() -> PathBuf {
    ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|r| r.join("events").is_dir())
        .unwrap_or_else(|| PathBuf::from(ROOTS[0]))
}

/// One field of a tracepoint record, as its `format` file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) offset: u32,
    pub(crate) size: u32,
    /// `__data_loc`: the field is a 32-bit word locating a variable-length string in the
    /// record (`offset | length << 16`).
    pub(crate) data_loc: bool,
}

/// The fields of a record, in the order of the format file (common fields included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format {
    pub(crate) fields: Vec<Field>,
}

impl Format {
    /// Parses a tracefs `format` file: its `field:<declaration>; offset:N; size:N;
    /// signed:N;` lines (the name, ID and print format lines are ignored).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(decl) = line.strip_prefix("field:") else {
                continue;
            };
            let mut parts = decl.split(';').map(str::trim);
            let decl = parts.next().unwrap_or_default();
            let mut offset = None;
            let mut size = None;
            for part in parts {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u32>().ok();
                }
            }
            let (Some(offset), Some(size)) = (offset, size) else {
                return Err(format!("no offset or size in `{line}`"));
            };
            // The name is the declaration's last word, without an array suffix or a
            // pointer star (`char comm[16]`, `const char *const * argv`).
            let name = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or_default();
            let name = name.split('[').next().unwrap_or_default();
            if name.is_empty() {
                return Err(format!("no field name in `{line}`"));
            }
            fields.push(Field {
                name: name.to_owned(),
                offset,
                size,
                data_loc: decl.starts_with("__data_loc "),
            });
        }
        if fields.is_empty() {
            return Err("no fields".to_owned());
        }
        Ok(Self { fields })
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Argument `n` of a `sys_enter_*` record: the `n`-th field after `__syscall_nr`.
    fn syscall_arg(&self, n: u32) -> Option<&Field> {
        let nr = self.fields.iter().position(|f| f.name == "__syscall_nr")?;
        self.fields.get(nr + 1 + usize::try_from(n).ok()?)
    }
}

/// One hook on a tracepoint: the program and where it is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hook {
    pub(crate) program: &'static str,
    pub(crate) category: &'static str,
    pub(crate) name: String,
    /// The daemon does not start without it; an optional one may be absent (a syscall
    /// this architecture lacks).
    pub(crate) required: bool,
}

impl Hook {
    /// `category:name`, as the messages name a tracepoint.
    pub(crate) fn tracepoint(&self) -> String {
        format!("{}:{}", self.category, self.name)
    }
}

/// Which record field a program reads.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// A field by its name.
    Named(&'static str),
    /// A syscall argument by its index (`sys_enter_*` records name them per syscall);
    /// the label is what the program uses it for.
    Arg(u32, &'static str),
}

/// What a program reads of a field: its size and kind, and which offset of the layout
/// holds where it is.
#[derive(Debug, Clone, Copy)]
struct Read {
    which: Which,
    size: u32,
    data_loc: bool,
    slot: fn(&mut TracepointLayout) -> &mut u32,
}

const fn named(name: &'static str, size: u32, slot: fn(&mut TracepointLayout) -> &mut u32) -> Read {
    Read {
        which: Which::Named(name),
        size,
        data_loc: false,
        slot,
    }
}

const fn data_loc(name: &'static str, slot: fn(&mut TracepointLayout) -> &mut u32) -> Read {
    Read {
        which: Which::Named(name),
        size: 4,
        data_loc: true,
        slot,
    }
}

const fn arg(n: u32, label: &'static str) -> Read {
    Read {
        which: Which::Arg(n, label),
        size: SYSCALL_ARG_SIZE,
        data_loc: false,
        slot: |l| &mut l.sys_enter_args,
    }
}

/// The fields each program reads (agent-monitor-ebpf: `tp_field` and `sys_arg` with the
/// `TRACEPOINT_LAYOUT` offset named here).
fn reads(program: &str) -> &'static [Read] {
    const FORK: &[Read] = &[named("child_pid", 4, |l| &mut l.fork_child_pid)];
    const EXEC: &[Read] = &[
        data_loc("filename", |l| &mut l.exec_filename),
        named("old_pid", 4, |l| &mut l.exec_old_pid),
    ];
    const EXIT: &[Read] = &[named("group_dead", 1, |l| &mut l.exit_group_dead)];
    const FREE: &[Read] = &[named("pid", 4, |l| &mut l.free_pid)];
    const EXECVE: &[Read] = &[arg(1, "argv")];
    const EXECVEAT: &[Read] = &[arg(2, "argv")];
    // The arguments are read through a helper; the first one fixes where they are.
    const SYS_ENTER_ESCAPE: &[Read] = &[
        named("__syscall_nr", 4, |l| &mut l.sys_enter_nr),
        arg(0, "the first argument"),
    ];
    const SYS_EXIT: &[Read] = &[
        named("__syscall_nr", 4, |l| &mut l.sys_exit_nr),
        named("ret", 8, |l| &mut l.sys_exit_ret),
    ];
    const CGROUP: &[Read] = &[
        named("root", 4, |l| &mut l.cgroup_root),
        named("level", 4, |l| &mut l.cgroup_level),
        named("id", 8, |l| &mut l.cgroup_id),
        data_loc("path", |l| &mut l.cgroup_path),
    ];
    const ATTACH: &[Read] = &[
        named("dst_id", 8, |l| &mut l.attach_dst_id),
        named("pid", 4, |l| &mut l.attach_pid),
        data_loc("dst_path", |l| &mut l.attach_dst_path),
    ];
    match program {
        "sched_process_fork" => FORK,
        "sched_process_exec" => EXEC,
        "sched_process_exit" => EXIT,
        "sched_process_free" => FREE,
        "sys_enter_execve" => EXECVE,
        "sys_enter_execveat" => EXECVEAT,
        "sys_enter_escape" => SYS_ENTER_ESCAPE,
        "sys_exit_file" | "sys_exit_escape" | "sys_exit_refused" => SYS_EXIT,
        "cgroup_mkdir" | "cgroup_rmdir" => CGROUP,
        "cgroup_attach_task" => ATTACH,
        _ => &[],
    }
}

/// What became of one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its fields are where the layout says: attach it.
    Fits,
    /// An optional hook whose tracepoint this kernel does not have.
    Absent,
    /// Not to be attached: which tracepoint and field, and why.
    Refused(String),
}

/// The layout for the programs and a verdict per hook (in the order given).
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) layout: TracepointLayout,
    pub(crate) verdicts: Vec<Verdict>,
}

impl Layout {
    /// Reads the format of every hook's tracepoint under the tracefs `root`.
    pub(crate) fn read(root: &Path, hooks: &[Hook]) -> Self {
        Self::build(hooks, |hook| {
            let dir = root.join("events").join(hook.category).join(&hook.name);
            let path = dir.join("format");
            match fs::read_to_string(&path) {
                Ok(text) => Format::parse(&text)
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", path.display())),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !hook.required => Ok(None),
                Err(e) => Err(format!("reading {}: {e}", path.display())),
            }
        })
    }

    /// The layout from the hooks' formats (`format` returns None for an absent optional
    /// tracepoint). Required hooks set the offsets first.
    fn build(
        hooks: &[Hook],
        mut format: impl FnMut(&Hook) -> Result<Option<Format>, String>,
    ) -> Self {
        let mut layout = TracepointLayout::DEFAULT;
        // Which offsets are set so far (1), by the same accessors.
        let mut set = NONE_SET;
        let mut verdicts = vec![Verdict::Fits; hooks.len()];
        let order = (0..hooks.len())
            .filter(|&i| hooks[i].required)
            .chain((0..hooks.len()).filter(|&i| !hooks[i].required));
        for i in order {
            let hook = &hooks[i];
            verdicts[i] = match format(hook) {
                Ok(None) => Verdict::Absent,
                Ok(Some(f)) => match fit(hook, &f, &layout, &set) {
                    Ok(found) => {
                        for (read, offset) in found {
                            *(read.slot)(&mut layout) = offset;
                            *(read.slot)(&mut set) = 1;
                        }
                        Verdict::Fits
                    }
                    Err(e) => Verdict::Refused(e),
                },
                Err(e) => Verdict::Refused(format!("tracepoint {}: {e}", hook.tracepoint())),
            };
        }
        Self { layout, verdicts }
    }
}

/// A layout with every offset 0: the "set so far" marks start from it.
const NONE_SET: TracepointLayout = TracepointLayout {
    sys_enter_nr: 0,
    sys_enter_args: 0,
    sys_exit_nr: 0,
    sys_exit_ret: 0,
    fork_child_pid: 0,
    exec_filename: 0,
    exec_old_pid: 0,
    exit_group_dead: 0,
    free_pid: 0,
    cgroup_root: 0,
    cgroup_level: 0,
    cgroup_id: 0,
    cgroup_path: 0,
    attach_dst_id: 0,
    attach_pid: 0,
    attach_dst_path: 0,
};

/// Checks `hook`'s fields in its format against what its program reads and the offsets
/// set so far; returns each read with the layout offset it needs.
fn fit(
    hook: &Hook,
    format: &Format,
    layout: &TracepointLayout,
    set: &TracepointLayout,
) -> Result<Vec<(Read, u32)>, String> {
    let tp = hook.tracepoint();
    let program = hook.program;
    let mut found = Vec::new();
    for read in reads(program) {
        let (field, bias) = match read.which {
            Which::Named(name) => (
                format.field(name).ok_or_else(|| {
                    format!("tracepoint {tp} has no field `{name}` (read by {program})")
                })?,
                0,
            ),
            Which::Arg(n, label) => (
                format.syscall_arg(n).ok_or_else(|| {
                    format!("tracepoint {tp} has no argument {n} ({label}, read by {program})")
                })?,
                SYSCALL_ARG_SIZE * n,
            ),
        };
        let name = &field.name;
        if field.data_loc != read.data_loc {
            let (is, wants) = if field.data_loc {
                ("a `__data_loc` string", "a plain value")
            } else {
                ("a plain value", "a `__data_loc` string")
            };
            return Err(format!(
                "tracepoint {tp}: field `{name}` is {is}, {program} reads {wants}"
            ));
        }
        if field.size != read.size {
            return Err(format!(
                "tracepoint {tp}: field `{name}` is {} bytes, {program} reads {}",
                field.size, read.size
            ));
        }
        if field.offset % read.size != 0 || field.offset > MAX_FIELD_OFFSET {
            return Err(format!(
                "tracepoint {tp}: field `{name}` at offset {} cannot be loaded by {program} (it loads {}-byte fields at aligned offsets up to {MAX_FIELD_OFFSET})",
                field.offset, read.size
            ));
        }
        let Some(offset) = field.offset.checked_sub(bias) else {
            return Err(format!(
                "tracepoint {tp}: field `{name}` at offset {} is not argument {} of the record",
                field.offset,
                bias / SYSCALL_ARG_SIZE
            ));
        };
        let mut l = *layout;
        let mut s = *set;
        if *(read.slot)(&mut s) != 0 && *(read.slot)(&mut l) != offset {
            return Err(format!(
                "tracepoint {tp}: field `{name}` is at offset {}, {program} reads it at {} (where the other tracepoints it is attached to have it)",
                field.offset,
                *(read.slot)(&mut l) + bias
            ));
        }
        found.push((*read, offset));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
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
                Verdict::Refused(e) => {
                    Some((format!("{}@{}", h.program, h.tracepoint()), e.clone()))
                }
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
}
