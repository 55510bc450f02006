//! Kernel-side verdicts: per-agent settings, file identity by (device, inode) through
//! structure offsets read from BTF, and signals to the offending process.

use agent_monitor_common::{
    AgentConfig, DIR_NAME_LEN, InodeKey, NameKey, Offsets, dir_ok, mode, on_violation,
};
use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    generated::{bpf_get_current_task_btf, bpf_send_signal},
};

use crate::maps::{AGENT_CONFIG, CONFIG_VERSION, DIR_NAMES, DIR_OK, HELD, LAST_CONFIG, LastConfig};

pub const SIGKILL: u32 = 9;
pub const SIGSTOP: u32 = 19;

/// The agent's settings when it is enforced; None in audit mode. For tracepoint programs
/// (see [`agent_config`]).
#[inline(always)]
pub fn enforced(slot: u32) -> Option<AgentConfig> {
    let cfg = agent_config::<true>(slot)?;
    (cfg.mode == mode::ENFORCE).then_some(cfg)
}

/// [`enforced`] without this CPU's cache, for the cgroup socket programs, which may be
/// preempted mid-run (see `tag::current_agent_uncached`).
#[inline(always)]
pub fn enforced_uncached(slot: u32) -> Option<AgentConfig> {
    let cfg = agent_config::<false>(slot)?;
    (cfg.mode == mode::ENFORCE).then_some(cfg)
}

/// The agent's settings: with `CACHED`, this CPU's last lookup when it was of the same slot
/// and the settings have not changed since (`CONFIG_VERSION`), else `AGENT_CONFIG`. Cached
/// only in tracepoint programs: they run with preemption disabled and never nest on a CPU.
#[inline(always)]
pub fn agent_config<const CACHED: bool>(slot: u32) -> Option<AgentConfig> {
    // Read before the settings: a change after this read leaves the cache stale, not wrong.
    let version = CONFIG_VERSION.get(0).copied().unwrap_or(0);
    let last = if CACHED {
        LAST_CONFIG.get_ptr_mut(0)
    } else {
        None
    };
    if let Some(last) = last {
        // SAFETY: this CPU's slot, copied out.
        let seen = unsafe { *last };
        if seen.slot == slot && seen.version == version {
            return (seen.present != 0).then_some(seen.config);
        }
    }
    // SAFETY: the value is copied out.
    let config = unsafe { AGENT_CONFIG.get(slot) }.copied();
    if let Some(last) = last {
        // SAFETY: this CPU's slot; programs on one CPU do not interleave within a run.
        unsafe {
            *last = LastConfig {
                version,
                slot,
                present: u32::from(config.is_some()),
                config: config.unwrap_or_default(),
            };
        }
    }
    config
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

/// This kernel's structure offsets (from BTF), written by the daemon into frozen `.rodata`
/// before the programs load: the verifier knows each as a constant, so it checks a load
/// through a BTF-typed pointer ([`load`]) against the kernel's own types once, at load, and
/// drops the branches a zero `valid` (no BTF) would take.
#[unsafe(no_mangle)]
pub static STRUCT_OFFSETS: Offsets = Offsets::NONE;

/// One offset of [`STRUCT_OFFSETS`]. A volatile read: the compiler must not fold in the
/// object's default value.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: a field of a static, always initialised.
        unsafe { core::ptr::read_volatile(&raw const STRUCT_OFFSETS.$field) }
    };
}

/// Whether the daemon filled the offsets in.
#[inline(always)]
fn have_offsets() -> bool {
    off!(valid) != 0
}

/// A direct load of `T` at `base + off`, `base` a BTF-typed kernel pointer and `off` a
/// constant to the verifier: it checks the field against the kernel's types and makes the
/// load fault-safe (a bad pointer reads 0), with no helper call.
///
/// # Safety
/// `base` must be a BTF-typed pointer the verifier knows (from `bpf_get_current_task_btf`
/// or loaded through one) and `off` a field of its type whose size is that of `T`.
#[inline(always)]
unsafe fn load<T>(base: *const u8, off: u32) -> T {
    // SAFETY: per the contract, the verifier turns this into a checked, fault-safe load.
    unsafe { core::ptr::read(base.wrapping_add(off as usize).cast::<T>()) }
}

/// Reads a kernel field at `base + off` through the helper (for pointers the verifier
/// types as plain numbers, such as an element of `struct file **`).
#[inline(always)]
fn field<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.ok()
}

/// Two fields of one structure read at once when they lie within 40 bytes: one helper call
/// instead of two. Both offsets are constants to the verifier, so it keeps one arm.
/// `first` is a 4- or 8-byte field (its low 32 bits are returned), `second` an 8-byte one.
#[inline(always)]
fn pair(base: u64, first: u32, second: u32) -> Option<(u32, u64)> {
    let lo = first.min(second) & !7;
    let (a, b) = (first - lo, second - lo);
    if a.max(b) <= 32 && b % 8 == 0 && a % 4 == 0 {
        let window: [u64; 5] = field(base, lo)?;
        let word = *window.get((a / 8) as usize)?;
        #[expect(clippy::cast_possible_truncation, reason = "the 32 bits asked for")]
        let first = (word >> ((a % 8) * 8)) as u32;
        return Some((first, *window.get((b / 8) as usize)?));
    }
    Some((field(base, first)?, field(base, second)?))
}

/// `inode -> (i_ino, i_sb)`.
#[inline(always)]
fn inode_ino_sb(inode: u64) -> Option<(u64, u64)> {
    let lo = off!(inode_ino).min(off!(inode_sb));
    let (ino_at, sb_at) = (off!(inode_ino) - lo, off!(inode_sb) - lo);
    if ino_at.max(sb_at) <= 24 && ino_at % 8 == 0 && sb_at % 8 == 0 {
        let window: [u64; 4] = field(inode, lo)?;
        // Verifier workaround: the indexes are masked so they are visibly in bounds.
        return Some((
            window[(ino_at / 8) as usize & 3],
            window[(sb_at / 8) as usize & 3],
        ));
    }
    Some((
        field(inode, off!(inode_ino))?,
        field(inode, off!(inode_sb))?,
    ))
}

/// `inode -> (i_sb -> s_dev, i_ino)`.
#[inline(always)]
fn inode_key(slot: u32, inode: u64) -> Option<InodeKey> {
    let (ino, sb) = inode_ino_sb(inode)?;
    let dev: u32 = field(sb, off!(sb_dev))?;
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
///
/// `task->files->fdt->fd` are direct loads. While the process still has the descriptor
/// table it started with (`fd` points at `files->fd_array`), the file is loaded from that
/// array as a typed pointer ([`embedded_file`]), and everything behind it is a direct load
/// too. Otherwise the verifier types `fd` (`struct file **`) as a number, and the slot and
/// what lies behind it are read with the helper ([`probed_file`]).
#[inline(always)]
pub fn fd_file(slot: u32, fd: u64) -> Option<Opened> {
    if !have_offsets() {
        return None;
    }
    let (task_files, files_fdt, fdt_fd) = (off!(task_files), off!(files_fdt), off!(fdt_fd));
    let fd_array = off!(files_fd_array);
    // SAFETY: the current task as a BTF-typed pointer; each load is of a pointer field of
    // the type before it (`task_struct.files`, `files_struct.fdt`, `fdtable.fd`).
    let (files, array): (*const u8, u64) = unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let files: *const u8 = load(task, task_files);
        if files.is_null() {
            return None;
        }
        let fdt: *const u8 = load(files, files_fdt);
        if fdt.is_null() {
            return None;
        }
        (files, load(fdt, fdt_fd))
    };
    let embedded = files.wrapping_add(fd_array as usize);
    if array == embedded as u64
        && fd < u64::from(off!(files_fd_array_len).min(EMBEDDED_ARMS))
        && let Some(opened) = embedded_file(slot, embedded, fd)
    {
        return Some(opened);
    }
    probed_file(slot, array, fd)
}

/// How many slots of `files_struct.fd_array` [`embedded_slot`] has an arm for
/// (`NR_OPEN_DEFAULT` is `BITS_PER_LONG`).
const EMBEDDED_ARMS: u32 = 64;

/// Loads `files->fd_array[fd]` at an offset written in the instruction, so the verifier
/// types the result as a `struct file *` (it refuses a load at a variable offset from a
/// typed pointer). The list holds the byte offsets of the first [`EMBEDDED_ARMS`] entries.
macro_rules! embedded_slot {
    ($base:expr, $at:expr, [$($o:literal),*]) => {{
        let base = $base;
        let mut file: u64 = 0;
        match $at {
            $(
                // SAFETY: a load from `files_struct.fd_array` at a constant offset, checked
                // by the verifier against the kernel's types and made fault-safe.
                $o => unsafe {
                    core::arch::asm!(
                        concat!("{v} = *(u64 *)({p} + ", stringify!($o), ")"),
                        v = out(reg) file,
                        p = in(reg) base,
                        options(nostack, readonly, preserves_flags),
                    );
                },
            )*
            _ => {}
        }
        file
    }};
}

/// [`fd_file`] for a descriptor in the process's first table (`files->fd_array`): all
/// direct loads.
///
/// Verifier workaround: the slot is chosen by a new value (`fd * 8`, masked), not by `fd`
/// itself, so the verifier's knowledge of `fd` is the same after every arm and it checks
/// the code that follows once, not once per arm. Arms past the table's length (a
/// constant) are dropped at load.
#[inline(always)]
fn embedded_file(slot: u32, embedded: *const u8, fd: u64) -> Option<Opened> {
    let at = (fd & 63) * 8;
    let file = embedded_slot!(
        embedded,
        at,
        [
            0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 136, 144, 152,
            160, 168, 176, 184, 192, 200, 208, 216, 224, 232, 240, 248, 256, 264, 272, 280, 288,
            296, 304, 312, 320, 328, 336, 344, 352, 360, 368, 376, 384, 392, 400, 408, 416, 424,
            432, 440, 448, 456, 464, 472, 480, 488, 496, 504
        ]
    ) as *const u8;
    if file.is_null() {
        return None;
    }
    let (file_mode, file_inode) = (off!(file_mode), off!(file_inode));
    let (inode_ino, inode_sb, sb_dev) = (off!(inode_ino), off!(inode_sb), off!(sb_dev));
    // SAFETY: `file` is typed by the verifier (above); each load is of a field of the type
    // before it (`file.f_mode`, `file.f_inode`, `inode.i_ino`, `inode.i_sb`,
    // `super_block.s_dev`).
    unsafe {
        let mode: u32 = load(file, file_mode);
        let inode: *const u8 = load(file, file_inode);
        if inode.is_null() {
            return None;
        }
        let ino: u64 = load(inode, inode_ino);
        let sb: *const u8 = load(inode, inode_sb);
        if sb.is_null() {
            return None;
        }
        let dev: u32 = load(sb, sb_dev);
        Some(Opened {
            key: InodeKey { slot, dev, ino },
            mode,
            file: file as u64,
        })
    }
}

/// [`fd_file`] through the helper: the descriptor's slot in `array` (`fdtable.fd`), then
/// `f_mode` with `f_inode`, `i_ino` with `i_sb`, then `s_dev` (four calls).
#[inline(always)]
fn probed_file(slot: u32, array: u64, fd: u64) -> Option<Opened> {
    // Verifier workaround: the index is bounded so the offset arithmetic stays scalar.
    let fd = fd & 0xf_ffff;
    let file: u64 = field(array, (fd * 8) as u32)?;
    let (mode, inode) = pair(file, off!(file_mode), off!(file_inode))?;
    Some(Opened {
        key: inode_key(slot, inode)?,
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
    let dentry: u64 = field(opened.file, off!(file_dentry))?;
    let parent: u64 = field(dentry, off!(dentry_parent))?;
    // A filesystem's root is its own parent (`IS_ROOT`): opening a mount point or `/` is
    // opening that directory itself, which a grant of its files does not cover.
    if parent == dentry {
        return None;
    }
    let inode: u64 = field(parent, off!(dentry_inode))?;
    let key = inode_key(read_tag, inode)?;
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
    let name: u64 = field(dentry, off!(dentry_name))?;
    let mut key = NameKey {
        slot: read_tag,
        name: [0; DIR_NAME_LEN],
    };
    // SAFETY: the helper fails cleanly on a bad address and NUL-terminates.
    unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut key.name) }.ok()?;
    Some(DIR_NAMES.get_ptr(&key).is_none())
}

/// Identity of the current task's image: `task->mm->exe_file->f_inode`, all direct loads
/// (`exe_file` is a `struct file *`, which the verifier types), then the inode's fields.
#[inline(always)]
pub fn exe_identity(slot: u32) -> Option<InodeKey> {
    if !have_offsets() {
        return None;
    }
    let (task_mm, mm_exe_file, file_inode) = (off!(task_mm), off!(mm_exe_file), off!(file_inode));
    // SAFETY: the current task as a BTF-typed pointer; each load is of a pointer field of
    // the type before it (`task_struct.mm`, `mm_struct.exe_file`, `file.f_inode`).
    let inode: u64 = unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let mm: *const u8 = load(task, task_mm);
        if mm.is_null() {
            return None;
        }
        let file: *const u8 = load(mm, mm_exe_file);
        if file.is_null() {
            return None;
        }
        load(file, file_inode)
    };
    inode_key(slot, inode)
}
