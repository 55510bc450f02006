# Technique: leave the agent's cgroup by writing its own pid to another cgroup's
# cgroup.procs (a cgroup the test made, or the cgroup2 root), then read the denied file
# from there; or use cgroupfs against other workloads: cgroup.kill or cgroup.freeze of a
# cgroup that is not the agent's.
# Stopped (intended) because opening a file under cgroupfs for writing kills the agent
# before the write (recorded as an escape); and the tag is sticky, so even a moved process
# stays an agent.
# ARGS: technique (move | kill | freeze), cgroup dir, [secret]
technique, cgroup = ARGS[0], ARGS[1]


def write(name, value):
    with open(f"{cgroup}/{name}", "w") as f:
        f.write(value)
    return "written"


if technique == "move":
    attempt("write", lambda: write("cgroup.procs", str(os.getpid())))
    attempt("where", lambda: read_file("/proc/self/cgroup"))
    attempt("read", lambda: read_file(ARGS[2]))
elif technique == "kill":
    attempt("write", lambda: write("cgroup.kill", "1"))
else:
    attempt("write", lambda: write("cgroup.freeze", "1"))
