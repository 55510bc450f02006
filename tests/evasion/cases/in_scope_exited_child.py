# In scope: signalling and pidfd_open of the agent's own child after it exited and before
# it is reaped (a zombie), as shells and process supervisors do. Must not be an escape.
pid = os.fork()
if pid == 0:
    os._exit(0)
# Waits for the exit without reaping: the child stays a zombie.
attempt("zombie", lambda: os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT).si_pid)
attempt("pidfd_open", lambda: os.close(os.pidfd_open(pid)) or "ok")
attempt("kill", lambda: os.kill(pid, 0) or "ok")
attempt("reap", lambda: os.waitpid(pid, 0)[1])
