# Technique: give a file a second name inside the workspace with link(2), then use it
# through that name, which the scope allows: read a file outside files.read, or write into
# a file the scope may only read.
# Stopped (intended) because Landlock refuses a link that would widen access to the file
# (EXDEV: the new name would grant rights the old one does not have; or EACCES): no
# second name exists, nothing to read or write through.
# ARGS: source file, new name in the workspace, read | write, marker text (write)
SYS_LINK = 86
source, name, use = ARGS[0], ARGS[1], ARGS[2]


def write(path):
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, ARGS[3].encode())
    finally:
        os.close(fd)


attempt("link", lambda: sys_call(SYS_LINK, ctypes.c_char_p(source.encode()),
                                 ctypes.c_char_p(name.encode())))
if use == "read":
    attempt("read", lambda: read_file(name))
else:
    attempt("write", lambda: write(name))
