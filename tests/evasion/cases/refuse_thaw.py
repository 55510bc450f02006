# Technique: thaw a held open: a forked child opens and reads a file whose open the daemon
# must judge by its path (a `**/.env` deny glob: the file was made after the daemon
# loaded, so the kernel has no inode to judge it by). The kernel stops the child with
# SIGSTOP until the daemon's verdict; the parent sends it SIGCONT in a loop, so the child
# goes on, reads and prints the file before the verdict comes. The child runs at SCHED_FIFO
# (root may raise its own priority) so that, once resumed, it prints before the daemon gets
# the CPU back.
# Stopped (intended) because kill(SIGCONT) is refused with EPERM by the seccomp allow-list
# (an `escape` record, syscall "kill"): the child stays stopped until the daemon kills it.
# ARGS: file
target = ARGS[0]
SIGCONT = 18


def say(text):
    os.write(1, f"{text}\n".encode())  # one write: two processes print


pid = os.fork()
if pid == 0:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        pass  # a plain priority only makes the race closer
    attempt("read", lambda: os.read(os.open(target, os.O_RDONLY), 4096))
    os._exit(0)
status = None


def thaw():
    global status
    sent = 0
    while status is None:
        os.kill(pid, SIGCONT)
        sent += 1
        done, raw = os.waitpid(pid, os.WNOHANG)
        status = raw if done else None
    return f"{sent} SIGCONT"


attempt("thaw", thaw)
if status is None:
    status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9:
    say("read: KILLED")
