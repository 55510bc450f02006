# Technique: let fanotify open the file: fanotify_init + fanotify_mark(FAN_OPEN) on a
# directory outside files.read, then make the kernel open a file there (swapon(2) opens
# its argument inside the kernel, then fails: not a swap file). The event carries a
# descriptor that fanotify opened in the reader: no open syscall of the agent names it.
# Stopped (intended) because fanotify_init is refused with EPERM by the seccomp allow-list
# (an `escape` record, syscall "fanotify_init"); swapon is refused too.
# ARGS: directory, file in it
directory, target = ARGS
SYS_SWAPON, SYS_FANOTIFY_INIT, SYS_FANOTIFY_MARK = 167, 300, 301
FAN_CLOEXEC, FAN_NONBLOCK, FAN_MARK_ADD = 0x1, 0x2, 0x1
FAN_OPEN, FAN_EVENT_ON_CHILD = 0x20, 0x08000000


def steal():
    fan = sys_call(SYS_FANOTIFY_INIT, ctypes.c_uint(FAN_CLOEXEC | FAN_NONBLOCK),
                  ctypes.c_uint(os.O_RDONLY))
    sys_call(SYS_FANOTIFY_MARK, ctypes.c_int(fan), ctypes.c_uint(FAN_MARK_ADD),
             ctypes.c_uint64(FAN_OPEN | FAN_EVENT_ON_CHILD), ctypes.c_int(AT_FDCWD),
             ctypes.c_char_p(directory.encode()))
    # EINVAL without a monitor: the file was opened, then found not to be a swap file.
    attempt("swapon", lambda: sys_call(SYS_SWAPON, ctypes.c_char_p(target.encode()),
                                       ctypes.c_int(0)))
    # struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid
    # (EAGAIN when the kernel opened nothing)
    event = os.read(fan, 4096)
    _, _, _, _, _, fd, _ = struct.unpack_from("=IBBHQii", event)
    return os.pread(fd, 4096, 0)


attempt("steal", steal)
