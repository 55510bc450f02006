//! The threads of a process and their scheduler states, from /proc.

use std::time::{Duration, Instant};

/// Thread ids of a process (empty when it is gone).
pub(crate) fn threads_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The process a thread belongs to (None when it is gone).
pub(crate) fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// The scheduler state of a process's main thread (`R`, `S`, `T`, `Z`, ...); None when it
/// is gone.
pub(crate) fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).ok()?;
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].trim_start().chars().next())
}

/// Whether thread `tid` of `pid` is stopped (job control or trace stop) or gone. The state
/// follows the command name, which may itself hold `)`: the last one ends it.
fn stopped_or_gone(pid: u32, tid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].trim_start().chars().next());
    matches!(state, None | Some('T' | 't' | 'Z' | 'X' | 'x'))
}

/// Before a held thread's process is resumed: the threads whose holds the resume must
/// account for, once none of them can begin a new hold (see `settle_stopped`). A process
/// whose only thread is the held main thread `tid` can begin none (it is stopping or
/// stopped, and a SIGCONT cancels a stop still pending): no wait, no read of each thread.
pub(crate) fn settle_for_resume(pid: u32, tid: u32, within: Duration) -> (Vec<u32>, bool) {
    if tid == pid && thread_count(pid) == Some(1) {
        return (vec![pid], true);
    }
    settle_stopped(pid, within)
}

/// The number of threads of `pid`: procfs gives its task directory two links plus one
/// per thread (`proc_task_getattr`), so one `stat` tells, where a listing or
/// /proc/PID/stat (which computes every field) costs several times as much.
fn thread_count(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let links = std::fs::metadata(format!("/proc/{pid}/task")).ok()?.nlink();
    links.checked_sub(2).filter(|&n| n > 0)
}

/// Waits, at most `within`, until every thread of `pid` is stopped or gone, and returns
/// the threads then (the last list read when the wait ran out). A stopped thread has passed
/// its syscall's exit (the stop comes on the way back to user space, after the exit
/// tracepoint), so it cannot start a new hold until the process is resumed.
pub(crate) fn settle_stopped(pid: u32, within: Duration) -> (Vec<u32>, bool) {
    let deadline = Instant::now() + within;
    loop {
        let threads = threads_of(pid);
        let settled = threads.iter().all(|&t| stopped_or_gone(pid, t));
        if settled || Instant::now() >= deadline {
            return (threads, settled);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_belongs_to_its_process() {
        let me = std::process::id();
        assert_eq!(tgid_of(me), Some(me));
        let other = std::thread::spawn(|| {
            // SAFETY: gettid has no arguments.
            u32::try_from(unsafe { libc::gettid() }).expect("tid")
        })
        .join()
        .expect("thread");
        assert_ne!(other, me);
        assert_eq!(tgid_of(other), None, "a thread that ended is gone");
    }

    #[test]
    fn threads_are_counted_and_a_lone_held_thread_needs_no_wait() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        assert_eq!(thread_count(pid), Some(1));
        // Running (asleep), but alone: nothing else can begin a hold.
        assert_eq!(
            settle_for_resume(pid, pid, Duration::from_secs(10)),
            (vec![pid], true)
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(thread_count(pid), None, "reaped");
        // This test process has more threads than this one (the harness's main thread).
        let me = std::process::id();
        let (park, parked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || parked.recv());
        assert!(thread_count(me).is_some_and(|n| n >= 2));
        // Several threads, none stopped: the wait runs out.
        let (threads, settled) = settle_for_resume(me, me, Duration::from_millis(20));
        assert!(!settled);
        assert!(threads.len() >= 2);
        drop(park);
        let _ = other.join();
    }

    #[test]
    fn a_running_process_never_settles_and_a_stopped_one_does() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        // Sleeping in nanosleep: neither stopped nor gone.
        let (threads, settled) = settle_stopped(pid, Duration::from_millis(20));
        assert_eq!(threads, vec![pid]);
        assert!(!settled);
        // SAFETY: signals a child this test owns.
        assert_eq!(
            unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGSTOP) },
            0
        );
        let (_, settled) = settle_stopped(pid, Duration::from_secs(10));
        assert!(settled);
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(threads_of(pid).is_empty());
    }
}
