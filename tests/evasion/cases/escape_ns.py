# Technique: leave the host's view through new namespaces: unshare(2) of a mount, network,
# user, cgroup or PID namespace, and setns(2) into another process's network namespace
# through a pidfd (pidfd_open: no file of /proc is opened).
# Stopped because unshare and setns fail with EPERM for an agent (the seccomp filter
# installed by `agent-monitor exec`), recorded as an escape naming the syscall; a pidfd of a
# process outside the agent is itself an escape: the kernel kills the agent at pidfd_open.
# ARGS: technique (newns | newnet | newuser | newcgroup | newpid | setns), pid for setns
technique = ARGS[0]
flags = {"newns": 0x00020000, "newnet": 0x40000000, "newuser": 0x10000000,
         "newcgroup": 0x02000000, "newpid": 0x20000000}
if technique == "setns":
    def go():
        pidfd = sys_call(SYS_PIDFD_OPEN, ctypes.c_int(int(ARGS[1])), ctypes.c_uint(0))
        return sys_call(SYS_SETNS, ctypes.c_int(pidfd), ctypes.c_int(0x40000000))
    attempt("escape", go)
else:
    attempt("escape", lambda: sys_call(SYS_UNSHARE, ctypes.c_int(flags[technique])))
