# Technique: destroy a file's content without opening it for writing: truncate(2) by path
# of a file outside files.write (one outside every rule, one the scope may only read).
# There is no open to hold.
# Stopped (intended) because Landlock grants the truncate right only under files.write:
# truncate fails with EACCES and the file keeps its content.
# ARGS: file
SYS_TRUNCATE = 76
target = ARGS[0]
attempt("truncate", lambda: sys_call(SYS_TRUNCATE, ctypes.c_char_p(target.encode()),
                                     ctypes.c_long(0)))
