# Technique: make a device node in the workspace and read the device through it:
# mknod(ws/kmsg, S_IFCHR, 1:11) is /dev/kmsg (the kernel log) under a name the scope
# allows (the same works for a disk: the raw blocks of every file).
# Stopped (intended) because mknod of a character or block device is refused with EPERM by
# the seccomp allow-list (an `escape` record, syscall "mknod"), or with EACCES by Landlock
# (no make_char right anywhere): the node is not created.
# ARGS: node path
SYS_MKNOD = 133
node = ARGS[0]


def read_device():
    sys_call(SYS_MKNOD, ctypes.c_char_p(node.encode()), ctypes.c_uint(0o20600),
             ctypes.c_ulong(os.makedev(1, 11)))
    fd = os.open(node, os.O_RDONLY | os.O_NONBLOCK)
    return read_fd(fd)


attempt("mknod", read_device)
