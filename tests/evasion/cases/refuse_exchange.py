# Technique: swap a file outside files.read into the workspace: a forked child calls
# renameat2(ws/ok.txt, outside/notes.txt, RENAME_EXCHANGE), which atomically exchanges the
# two names (a monitor that only sees the rename after it happened can at most kill the
# child); then the parent reads ws/ok.txt, a name the scope allows, which now holds the
# outside file.
# Stopped (intended) because Landlock refuses an exchange that would move a file where it
# gets rights it does not have (EXDEV, or EACCES): neither name changes.
# ARGS: workspace file, outside file
SYS_RENAMEAT2, RENAME_EXCHANGE = 316, 2
mine, theirs = ARGS


def exchange():
    return sys_call(SYS_RENAMEAT2, ctypes.c_int(AT_FDCWD), ctypes.c_char_p(mine.encode()),
                    ctypes.c_int(AT_FDCWD), ctypes.c_char_p(theirs.encode()),
                    ctypes.c_uint(RENAME_EXCHANGE))


pid = os.fork()
if pid == 0:
    attempt("exchange", exchange)
    os._exit(0)
status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9:
    say("exchange: KILLED")
attempt("read", lambda: read_file(mine))
