//! An in-memory FUSE filesystem (one flat directory) whose disk can be made slow or
//! faulty, for tests of the daemon's audit log: writes and syncs that sleep, writes that
//! store a few bytes more and then fail with EIO, a truncate that fails too. Speaks the
//! kernel's FUSE protocol on `/dev/fuse` directly (no libfuse on the test machines).
//! And a small tmpfs that can be filled up ([`Tmpfs`]), for a full disk.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

/// What the filesystem makes slow or fails.
struct Knobs {
    /// Every write and fsync sleeps this long first.
    delay_ms: AtomicU64,
    /// Bytes writes may still store (negative: no limit). A write beyond it stores what
    /// fits (a short write) and the next one fails with EIO: a batch fails half-way.
    budget: AtomicI64,
    /// A truncate (the daemon's cut back to the last whole line) fails with EIO too.
    fail_truncate: AtomicBool,
    /// Writes that failed with EIO.
    failed_writes: AtomicU64,
}

/// The files (one flat directory).
#[derive(Default)]
struct Files {
    files: Vec<(String, Vec<u8>)>,
}

/// A mounted filesystem; unmounted on drop, also when a test fails.
pub struct MemFs {
    dir: tempfile::TempDir,
    /// Kept open while mounted (the server threads hold clones).
    _fuse: Arc<OwnedFd>,
    knobs: Arc<Knobs>,
}

const ROOT: u64 = 1;

impl MemFs {
    /// Mounts a new, empty filesystem on a temporary directory. Needs root.
    pub fn mount() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // SAFETY: a plain open of a device node.
        let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(
            fd >= 0,
            "open /dev/fuse (this test needs root and FUSE): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened and is owned here.
        let fuse = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let target = CString::new(dir.path().to_string_lossy().as_bytes()).expect("path");
        let options = CString::new(format!(
            "fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other"
        ))
        .expect("options");
        // SAFETY: valid C strings; mounting is what this helper does.
        let rc = unsafe {
            libc::mount(
                c"memfs".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount fuse: {}", std::io::Error::last_os_error());
        let knobs = Arc::new(Knobs {
            delay_ms: AtomicU64::new(0),
            budget: AtomicI64::new(-1),
            fail_truncate: AtomicBool::new(false),
            failed_writes: AtomicU64::new(0),
        });
        let files = Arc::new(Mutex::new(Files::default()));
        for _ in 0..4 {
            let (fuse, knobs, files) = (Arc::clone(&fuse), Arc::clone(&knobs), Arc::clone(&files));
            thread::spawn(move || serve(&fuse, &knobs, &files));
        }
        Self {
            dir,
            _fuse: fuse,
            knobs,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every write and fsync from now on sleeps `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        self.knobs.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Writes store at most `bytes` more, then fail with EIO (None: no limit); with
    /// `fail_truncate` a truncate fails too.
    pub fn fail_after(&self, bytes: Option<u64>, fail_truncate: bool) {
        self.knobs
            .fail_truncate
            .store(fail_truncate, Ordering::Relaxed);
        self.knobs.budget.store(
            bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            Ordering::Relaxed,
        );
    }

    /// Writes that failed with EIO so far.
    pub fn failed_writes(&self) -> u64 {
        self.knobs.failed_writes.load(Ordering::Relaxed)
    }
}

impl Drop for MemFs {
    fn drop(&mut self) {
        self.set_delay(Duration::ZERO);
        self.fail_after(None, false);
        let target = CString::new(self.dir.path().to_string_lossy().as_bytes()).expect("path");
        // SAFETY: unmounting what this helper mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

fn name_at(b: &[u8], at: usize) -> String {
    let raw = b.get(at..).unwrap_or_default();
    let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// `struct fuse_attr` (88 bytes).
fn attr(ino: u64, size: u64) -> Vec<u8> {
    let mode: u32 = if ino == ROOT { 0o040_755 } else { 0o100_644 };
    let mut a = Vec::with_capacity(88);
    for v in [ino, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        0u32,
        0,
        0,
        mode,
        if ino == ROOT { 2 } else { 1 },
        0,
        0,
        0,
        4096,
        0,
    ] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a
}

/// `struct fuse_entry_out` (128 bytes), nothing cached.
fn entry(ino: u64, size: u64) -> Vec<u8> {
    let mut e = Vec::with_capacity(128);
    for v in [ino, 0, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&attr(ino, size));
    e
}

/// `struct fuse_open_out`: direct I/O (every write(2) reaches this server at once).
fn open_out() -> Vec<u8> {
    let mut o = vec![0; 8];
    o.extend_from_slice(&1u32.to_le_bytes());
    o.extend_from_slice(&[0; 4]);
    o
}

/// Serves requests until the filesystem is unmounted.
fn serve(fuse: &OwnedFd, knobs: &Knobs, files: &Mutex<Files>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fuse.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                _ => return,
            }
        };
        let req = &buf[..n];
        let unique = u64_at(req, 8);
        let Some(reply) = handle(req, knobs, files) else {
            continue;
        };
        let (error, payload) = match reply {
            Ok(p) => (0i32, p),
            Err(e) => (-e, Vec::new()),
        };
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(
            &u32::try_from(16 + payload.len())
                .expect("small")
                .to_le_bytes(),
        );
        out.extend_from_slice(&error.to_le_bytes());
        out.extend_from_slice(&unique.to_le_bytes());
        out.extend_from_slice(&payload);
        // SAFETY: writing a buffer we own. A reply to an interrupted request may fail.
        unsafe { libc::write(fuse.as_raw_fd(), out.as_ptr().cast(), out.len()) };
    }
}

/// The file a node id names (files are numbered from 2; 1 is the root).
fn file_index(node: u64) -> Option<usize> {
    node.checked_sub(2).and_then(|i| usize::try_from(i).ok())
}

fn ino_of(i: usize) -> u64 {
    u64::try_from(i).expect("small") + 2
}

/// The answer to one request (`fuse_in_header` then its body); None for those that get
/// none (`FORGET`, `BATCH_FORGET`, `INTERRUPT`).
fn handle(req: &[u8], knobs: &Knobs, files: &Mutex<Files>) -> Option<Result<Vec<u8>, i32>> {
    let (opcode, node) = (u32_at(req, 4), u64_at(req, 16));
    let body = &req[40.min(req.len())..];
    // WRITE and FSYNC sleep first, without the files locked.
    if matches!(opcode, 16 | 20) {
        thread::sleep(Duration::from_millis(
            knobs.delay_ms.load(Ordering::Relaxed),
        ));
    }
    let mut st = files.lock().expect("files");
    Some(match opcode {
        2 | 42 | 36 => return None,
        26 => Ok(init_out(u32_at(body, 8))),
        // LOOKUP
        1 => {
            let name = name_at(body, 0);
            match st.files.iter().position(|(n, _)| *n == name) {
                Some(i) if node == ROOT => Ok(entry(ino_of(i), st.files[i].1.len() as u64)),
                _ => Err(libc::ENOENT),
            }
        }
        // GETATTR, SETATTR (only the size is kept)
        3 | 4 => {
            let truncate = opcode == 4 && u32_at(body, 0) & (1 << 3) != 0;
            if truncate && knobs.fail_truncate.load(Ordering::Relaxed) {
                return Some(Err(libc::EIO));
            }
            let size = match file_index(node).and_then(|i| st.files.get_mut(i)) {
                Some((_, data)) => {
                    if truncate {
                        data.resize(usize::try_from(u64_at(body, 16)).unwrap_or(0), 0);
                    }
                    data.len() as u64
                }
                None => 0,
            };
            let mut o = vec![0u8; 16];
            o.extend_from_slice(&attr(node, size));
            Ok(o)
        }
        // OPEN, OPENDIR
        14 | 27 => Ok(open_out()),
        // CREATE
        35 => {
            let name = name_at(body, 16);
            let i = if let Some(i) = st.files.iter().position(|(n, _)| *n == name) {
                i
            } else {
                st.files.push((name, Vec::new()));
                st.files.len() - 1
            };
            let mut o = entry(ino_of(i), st.files[i].1.len() as u64);
            o.extend_from_slice(&open_out());
            Ok(o)
        }
        // READ
        15 => {
            let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
            let data = file_index(node)
                .and_then(|i| st.files.get(i))
                .map(|(_, d)| d.as_slice());
            let data = data.unwrap_or_default();
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            Ok(data[start..(start + size).min(data.len())].to_vec())
        }
        16 => write(&mut st, knobs, node, body),
        // FSYNC, RELEASE, FLUSH, RELEASEDIR, FSYNCDIR, DESTROY
        20 | 18 | 25 | 29 | 30 | 38 => Ok(Vec::new()),
        17 => Ok(statfs_out()),
        _ => Err(libc::ENOSYS),
    })
}

/// `struct fuse_init_out`: protocol 7.31, big writes of up to 128 KiB.
fn init_out(max_readahead: u32) -> Vec<u8> {
    let mut o = Vec::with_capacity(64);
    for v in [7u32, 31, max_readahead, 1 << 5] {
        o.extend_from_slice(&v.to_le_bytes());
    }
    o.extend_from_slice(&16u16.to_le_bytes());
    o.extend_from_slice(&12u16.to_le_bytes());
    o.extend_from_slice(&(128u32 * 1024).to_le_bytes());
    o.extend_from_slice(&1u32.to_le_bytes());
    o.extend_from_slice(&32u16.to_le_bytes());
    o.resize(64, 0);
    o
}

/// `struct fuse_kstatfs`.
fn statfs_out() -> Vec<u8> {
    let mut o = Vec::with_capacity(80);
    for v in [1u64 << 20, 1 << 19, 1 << 19, 1 << 10, 1 << 9] {
        o.extend_from_slice(&v.to_le_bytes());
    }
    for v in [4096u32, 255, 4096] {
        o.extend_from_slice(&v.to_le_bytes());
    }
    o.resize(80, 0);
    o
}

/// WRITE: `fuse_write_in` (40 bytes) then the data, at the offset the kernel chose; as much
/// of it as the budget allows, EIO when nothing is left.
fn write(st: &mut Files, knobs: &Knobs, node: u64, body: &[u8]) -> Result<Vec<u8>, i32> {
    let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
    let mut payload = body.get(40..40 + size).unwrap_or_default();
    let budget = knobs.budget.load(Ordering::Relaxed);
    if budget >= 0 {
        let room = usize::try_from(budget).unwrap_or(usize::MAX);
        if room == 0 {
            knobs.failed_writes.fetch_add(1, Ordering::Relaxed);
            return Err(libc::EIO);
        }
        payload = &payload[..payload.len().min(room)];
        knobs.budget.fetch_sub(
            i64::try_from(payload.len()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }
    let (_, data) = file_index(node)
        .and_then(|i| st.files.get_mut(i))
        .ok_or(libc::EIO)?;
    let at = usize::try_from(offset).unwrap_or(0);
    if data.len() < at + payload.len() {
        data.resize(at + payload.len(), 0);
    }
    data[at..at + payload.len()].copy_from_slice(payload);
    let mut o = u32::try_from(payload.len())
        .expect("small")
        .to_le_bytes()
        .to_vec();
    o.extend_from_slice(&[0; 4]);
    Ok(o)
}

/// A tmpfs of a given size (`mount -o size=`), unmounted on drop. Needs root.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "am-e2e"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        crate::assert_exit(&out, 0);
        Self { dir }
    }

    /// Where it is mounted (canonical: the daemon names files by their real path).
    pub fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonicalize")
    }

    /// Fills the filesystem with a file `filler` until not one more byte fits.
    pub fn fill(&self, filler: &str) -> PathBuf {
        let filler = self.dir.path().join(filler);
        let mut f = fs::File::create(&filler).expect("create filler");
        let chunk = vec![b'x'; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last pages, byte-sized.
        while f.write_all(b"x").is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .output();
    }
}
