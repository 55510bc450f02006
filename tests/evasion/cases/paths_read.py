# Technique: read a file by its plain path, which the scope does not grant (a denied glob
# reached under a very long or non-UTF-8 name, or a file outside files.read): the cases
# where only the path can decide.
# ARGS: the path, hex-encoded (so that any bytes survive the command line)
path = bytes.fromhex(ARGS[0])
attempt("read", lambda: read_file(path))
