# Technique: change what a path in scope means: bind-mount a file outside files.read over
# an allowed file with mount(2), or with the new mount API (open_tree(OPEN_TREE_CLONE) +
# move_mount, no mount(2) call), then read the allowed path.
# Stopped (intended) because mount (and the new mount API) fails with EPERM for an agent
# (seccomp filter of `agent-monitor exec`), recorded as an escape.
# ARGS: source, target, technique (mount | move_mount)
src, dst, technique = ARGS
MS_BIND = 4096
OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH, AT_EMPTY_PATH = 1, 4, 0x1000
if technique == "mount":
    attempt("mount", lambda: sys_call(SYS_MOUNT, ctypes.c_char_p(src.encode()), ctypes.c_char_p(dst.encode()),
                                      None, ctypes.c_ulong(MS_BIND), None))
else:
    def go():
        fd = sys_call(SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), ctypes.c_char_p(src.encode()),
                      ctypes.c_uint(OPEN_TREE_CLONE))
        return sys_call(SYS_MOVE_MOUNT, ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
                        ctypes.c_char_p(dst.encode()), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    attempt("mount", go)
attempt("read", lambda: read_file(dst))
