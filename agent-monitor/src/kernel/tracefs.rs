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
mod tests;
