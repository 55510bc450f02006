# Technique: make the kernel write into a file outside files.write: acct(2) turns on
# process accounting into the named file (which must exist), and the kernel appends a
# record to it for every process that exits, with no write syscall of the agent. A child
# exits to produce a record; accounting is turned off again.
# Stopped (intended) because acct is refused with EPERM by the seccomp allow-list (an
# `escape` record, syscall "acct"): nothing is written to the file.
# ARGS: file
SYS_ACCT = 163
target = ARGS[0]


def account():
    sys_call(SYS_ACCT, ctypes.c_char_p(target.encode()))
    try:
        subprocess.run(["/bin/sh", "-c", "exit 0"], check=False)
    finally:
        sys_call(SYS_ACCT, None)
    return os.stat(target).st_size


attempt("acct", account)
