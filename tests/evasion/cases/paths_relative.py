# Technique: a relative path with `..` from another working directory, and the same through
# /proc/self/cwd and /proc/self/root, and through /proc/self/fd/N of an allowed directory.
# Stopped because the kernel does not look at the string at all: it follows the opened
# file to (device, inode) and kills on a denied inode before the syscall returns.
# ARGS: workspace, secret, technique (dotdot | proc-cwd | proc-root | proc-fd)
ws, secret, technique = ARGS
os.makedirs(f"{ws}/deep/er", exist_ok=True)
os.chdir(f"{ws}/deep/er")
if technique == "dotdot":
    path = "../../deep/../secret.txt"
elif technique == "proc-cwd":
    path = "/proc/self/cwd/../../secret.txt"
elif technique == "proc-root":
    path = f"/proc/self/root/{secret}"
else:
    d = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    path = f"/proc/self/fd/{d}/secret.txt"
attempt("read", lambda: read_file(path))
