# Technique: move the denied file into an allowed directory under an innocent name, then
# read it there (rename keeps the inode; a path-only deny list would now allow it).
# Stopped because the read is judged by the inode, which is still the denied one (or at the
# rename already, which moves a denied path: the daemon may kill the agent for it before
# the read).
# ARGS: workspace, secret
ws, secret = ARGS
os.mkdir(f"{ws}/public")


def rename_then_read():
    os.rename(secret, f"{ws}/public/readme.txt")
    return read_file(f"{ws}/public/readme.txt")


attempt("read", rename_then_read)
