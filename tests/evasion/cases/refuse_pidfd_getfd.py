# Technique: take a descriptor out of another process of the agent: a forked child opens
# the target (a file outside files.read, whose open the daemon holds: the child is stopped
# with the descriptor already installed) while the parent, holding a pidfd of the child,
# loops pidfd_getfd(pidfd, fd) (at nice -20: root may raise its own priority) and reads
# its own copy.
# Stopped (intended) because pidfd_getfd is refused with EPERM by the seccomp allow-list
# (an `escape` record, syscall "pidfd_getfd"), and the child's open is refused by Landlock
# (EACCES: the file is outside files.read).
# ARGS: target path
import time

target = ARGS[0]
SYS_PIDFD_GETFD = 438


def say(text):
    os.write(1, f"{text}\n".encode())  # one write: two processes print


go_read, go_write = os.pipe()
# The descriptor the child's open will get: the lowest free one, as in the parent now (the
# child closes nothing before its open).
FD = os.dup(0)
os.close(FD)
pid = os.fork()
if pid == 0:
    os.read(go_read, 1)
    attempt("open", lambda: os.open(target, os.O_RDONLY))
    time.sleep(1)
    os._exit(0)
os.close(go_read)


def steal():
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)  # not preempted by the daemon while it races
    except OSError:
        pass  # a plain priority only makes the race closer
    pidfd = sys_call(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0))
    os.write(go_write, b"x")  # the child may open now
    while True:
        try:
            fd = sys_call(SYS_PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(FD),
                          ctypes.c_uint(0))
        except OSError as e:
            if e.errno != errno.EBADF:  # ESRCH: the child is gone
                raise
            continue
        return os.pread(fd, 4096, 0)


attempt("steal", steal)
_, status = os.waitpid(pid, 0)
# The daemon kills the child right after Landlock's refusal, which may be before it printed
# the error it got.
if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9:
    say("open: KILLED")
