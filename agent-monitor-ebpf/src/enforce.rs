//! Kernel-side verdicts: per-agent settings, file identity by (device, inode) through
//! structure offsets read from BTF, and signals to the offending process.

use agent_monitor_common::{
    AgentConfig, DIR_NAME_LEN, InodeKey, NameKey, Offsets, dir_ok, mode, on_violation,
};
use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    generated::{bpf_get_current_task, bpf_send_signal},
};

use crate::maps::{AGENT_CONFIG, DIR_NAMES, DIR_OK, HELD, OFFSETS};

pub const SIGKILL: u32 = 9;
pub const SIGSTOP: u32 = 19;

/// The agent's settings when it is enforced; None in audit mode.
#[inline(always)]
pub fn enforced(slot: u32) -> Option<AgentConfig> {
    // SAFETY: the value is copied out.
    let cfg = unsafe { AGENT_CONFIG.get(slot) }.copied()?;
    (cfg.mode == mode::ENFORCE).then_some(cfg)
}

/// Whether exec and file violations stop the process (not for `alert`).
pub fn kills(cfg: &AgentConfig) -> bool {
    cfg.on_violation != on_violation::ALERT
}

/// Sends a signal to the current process (all threads). Delivered before the syscall
/// returns to user space.
pub fn signal(sig: u32) {
    // SAFETY: helper without pointer arguments.
    unsafe { bpf_send_signal(sig) };
}

/// Holds the current process for the daemon's verdict on this thread's operation: marks
/// the thread held (`HELD`, before the stop, so that a daemon resuming the process for
/// another thread sees it), then stops the process. A thread that cannot be marked is
/// killed instead: a hold the daemon cannot see could be ended by another thread's resume.
pub fn hold() {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low half is the thread id"
    )]
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    // Verifier workaround: by reference, sys_exit_file verifies in about 1k fewer steps.
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "verifier cost, above"
    )]
    let held = HELD.insert(&tid, &1, 0);
    if held.is_ok() {
        signal(SIGSTOP);
    } else {
        signal(SIGKILL);
    }
}

#[inline(always)]
fn offsets() -> Option<Offsets> {
    let o = OFFSETS.get(0).copied()?;
    (o.valid != 0).then_some(o)
}

/// Reads a kernel pointer-sized field at `base + off`.
#[inline(always)]
fn field<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.ok()
}

/// `inode -> (i_ino, i_sb)`: one read of the 32 bytes that hold both when they are that
/// close (they are 24 bytes apart on 6.x), two reads otherwise.
#[inline(always)]
fn inode_ino_sb(o: &Offsets, inode: u64) -> Option<(u64, u64)> {
    let lo = o.inode_ino.min(o.inode_sb);
    let (ino_at, sb_at) = (o.inode_ino - lo, o.inode_sb - lo);
    if ino_at.max(sb_at) <= 24 && ino_at % 8 == 0 && sb_at % 8 == 0 {
        let window: [u64; 4] = field(inode, lo)?;
        // Verifier workaround: the indexes are masked so they are visibly in bounds.
        return Some((
            window[(ino_at / 8) as usize & 3],
            window[(sb_at / 8) as usize & 3],
        ));
    }
    Some((field(inode, o.inode_ino)?, field(inode, o.inode_sb)?))
}

/// `file -> f_inode -> (i_sb -> s_dev, i_ino)`.
#[inline(always)]
fn file_key(slot: u32, o: &Offsets, file: u64) -> Option<InodeKey> {
    let inode: u64 = field(file, o.file_inode)?;
    let (ino, sb) = inode_ino_sb(o, inode)?;
    let dev: u32 = field(sb, o.sb_dev)?;
    Some(InodeKey { slot, dev, ino })
}

/// `FMODE_READ` and `FMODE_WRITE` in `file.f_mode`.
pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;

/// An open file as the kernel holds it: its identity, `f_mode`, and the `struct file`
/// itself (for [`dir_allows`]).
pub struct Opened {
    pub key: InodeKey,
    pub mode: u32,
    file: u64,
}

/// The identity and `f_mode` of the file behind the current task's descriptor `fd`: what
/// the kernel really opened, not what the caller's flags (in memory it controls) said.
#[inline(always)]
pub fn fd_file(slot: u32, fd: u64) -> Option<Opened> {
    let o = offsets()?;
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = field(task, o.task_files)?;
    let fdt: u64 = field(files, o.files_fdt)?;
    let array: u64 = if fdt == files + u64::from(o.files_fdtab) {
        files + u64::from(o.files_fd_array)
    } else {
        field(fdt, o.fdt_fd)?
    };
    // Verifier workaround: the index is bounded so the offset arithmetic stays scalar.
    let fd = fd & 0xf_ffff;
    let file: u64 = field(array, (fd * 8) as u32)?;
    let mode: u32 = field(file, o.file_mode)?;
    Some(Opened {
        key: file_key(slot, &o, file)?,
        mode,
        file,
    })
}

/// Whether the daemon judged every file of the directory `opened` was found in open to
/// `access` (`dir_ok::READ` or `dir_ok::WRITE`) under `read_tag` (`DIR_OK`), its name not
/// excepted (`DIR_NAMES`). The directory is the parent of the dentry the open resolved to,
/// so it is the directory of the name the path reached the file by, whatever links led
/// there.
#[inline(always)]
pub fn dir_allows(read_tag: u32, opened: &Opened, access: u8) -> bool {
    dir_allows_inner(read_tag, opened, access).unwrap_or(false)
}

#[inline(always)]
fn dir_allows_inner(read_tag: u32, opened: &Opened, access: u8) -> Option<bool> {
    let o = offsets()?;
    let dentry: u64 = field(opened.file, o.file_dentry)?;
    let parent: u64 = field(dentry, o.dentry_parent)?;
    // A filesystem's root is its own parent (`IS_ROOT`): opening a mount point or `/` is
    // opening that directory itself, which a grant of its files does not cover.
    if parent == dentry {
        return None;
    }
    let inode: u64 = field(parent, o.dentry_inode)?;
    let (ino, sb) = inode_ino_sb(&o, inode)?;
    let dev: u32 = field(sb, o.sb_dev)?;
    let key = InodeKey {
        slot: read_tag,
        dev,
        ino,
    };
    // SAFETY: the value is copied out.
    let value = unsafe { DIR_OK.get(&key) }.copied()?;
    if value & access == 0 {
        return Some(false);
    }
    if value & dir_ok::NAMED == 0 {
        return Some(true);
    }
    // `dentry.d_name.name`: the name the file was found under. A name longer than the key
    // holds is cut; it can then only equal an excepted name too long to be excepted, and
    // the daemon gives no `DIR_OK` entry where such a name is.
    let name: u64 = field(dentry, o.dentry_name)?;
    let mut key = NameKey {
        slot: read_tag,
        name: [0; DIR_NAME_LEN],
    };
    // SAFETY: the helper fails cleanly on a bad address and NUL-terminates.
    unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut key.name) }.ok()?;
    Some(DIR_NAMES.get_ptr(&key).is_none())
}

/// Identity of the current task's image: `task->mm->exe_file`.
#[inline(always)]
pub fn exe_identity(slot: u32) -> Option<InodeKey> {
    let o = offsets()?;
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = field(task, o.task_mm)?;
    let file: u64 = field(mm, o.mm_exe_file)?;
    file_key(slot, &o, file)
}
