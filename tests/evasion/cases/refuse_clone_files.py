# Technique: share one descriptor table between two processes: clone(CLONE_FILES|SIGCHLD)
# (raw syscall, not a thread). The child opens the target; the kernel or the daemon kills
# the child for it, but the descriptor is already in the table the parent shares, and the
# parent reads it.
# Stopped (intended) because clone with CLONE_FILES and without CLONE_THREAD is refused
# with EPERM by the seccomp allow-list (an `escape` record, syscall "clone"); a file
# outside files.read would also be refused at the open by Landlock (EACCES).
# ARGS: target path
target = ARGS[0]
CLONE_FILES, SIGCHLD = 0x400, 17


def open_fds():
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            os.fstat(int(fd))
            fds.add(int(fd))
        except OSError:
            pass  # the directory's own descriptor, closed by now
    return fds


def steal():
    before = open_fds()
    pid = sys_call(56, ctypes.c_ulong(CLONE_FILES | SIGCHLD), None, None, None, None)
    if pid == 0:
        try:
            os.open(target, os.O_RDONLY)
            os._exit(0)
        except OSError as e:
            os._exit(100 + e.errno)
    # The parent: whatever descriptor appears in the shared table, read it (the child may
    # be stopped or killed right after its open).
    status = None
    while status is None:
        for fd in open_fds() - before:
            try:
                data = os.pread(fd, 4096, 0)
            except OSError:
                continue
            if data:
                return data
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
    for fd in open_fds() - before:
        try:
            return os.pread(fd, 4096, 0)
        except OSError:
            pass
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) > 100:
        raise OSError(os.WEXITSTATUS(status) - 100, "the child's open failed")
    return f"nothing (child status {status:#x})"


attempt("steal", steal)
