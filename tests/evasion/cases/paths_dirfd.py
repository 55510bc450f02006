# Technique: openat(2) relative to a directory fd of an allowed directory (the path string
# is just "secret.txt"), and openat2(2) with RESOLVE_IN_ROOT, where "/secret.txt" is
# resolved inside the workspace (a userspace resolver would think of /secret.txt).
# Stopped because the kernel kills on the inode the call returned, whatever the string.
# ARGS: workspace, technique (openat | openat2 | openat2-in-root)
ws, technique = ARGS
d = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd, path, resolve):
    how = OpenHow(os.O_RDONLY, 0, resolve)
    return sys_call(SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(path.encode()),
                    ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))


RESOLVE_IN_ROOT = 0x10
if technique == "openat":
    attempt("read", lambda: read_fd(os.open("secret.txt", os.O_RDONLY, dir_fd=d)))
elif technique == "openat2":
    attempt("read", lambda: read_fd(openat2(d, "secret.txt", 0)))
else:
    attempt("read", lambda: read_fd(openat2(d, "/secret.txt", RESOLVE_IN_ROOT)))
