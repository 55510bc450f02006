# Prepended to every Python case. The agent reports each attempt on its own line, flushed
# at once (python3 -u), so that a kill cannot hide what already happened:
#   "<label>: TRY"               the attempt is about to be made
#   "<label>: BLOCKED errno=N"   the kernel refused it (1 = EPERM)
#   "<label>: KILLED"            a child it spawned for the attempt died of SIGKILL
#   "<label>: DONE <value>"      it went through; <value> is whatever it obtained
import ctypes
import errno
import os
import socket
import struct
import subprocess
import sys

ARGS = sys.argv[1:]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def say(text):
    print(text, flush=True)


def attempt(label, fn):
    say(f"{label}: TRY")
    try:
        value = fn()
    except OSError as e:
        say(f"{label}: BLOCKED errno={e.errno}")
        return None
    say(f"{label}: DONE {value!r}"[:4000])
    return value


def spawn(label, argv):
    """Runs argv as a child; KILLED when SIGKILL ended it."""
    say(f"{label}: TRY")
    try:
        rc = subprocess.run(argv, check=False).returncode
    except OSError as e:
        say(f"{label}: BLOCKED errno={e.errno}")
        return
    say(f"{label}: KILLED" if rc == -9 else f"{label}: DONE rc={rc}")


def check(ret):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def sys_call(nr, *args):
    """A raw syscall; pointer and 64-bit arguments must be ctypes values."""
    return check(libc.syscall(ctypes.c_long(nr), *args))


def read_file(path, **kw):
    with open(path, "rb", **kw) as f:
        return f.read()


def read_fd(fd):
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


# x86_64 syscall numbers
SYS_PTRACE = 101
SYS_MOUNT = 165
SYS_UNSHARE = 272
SYS_SETNS = 308
SYS_PROCESS_VM_READV = 310
SYS_PROCESS_VM_WRITEV = 311
SYS_BPF = 321
SYS_EXECVEAT = 322
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_PIDFD_SEND_SIGNAL = 424
SYS_PIDFD_OPEN = 434
SYS_OPENAT2 = 437
AT_FDCWD = -100
