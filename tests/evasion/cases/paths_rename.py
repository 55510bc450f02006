# Technique: move the denied file into an allowed directory under an innocent name, then
# read it there (rename keeps the inode; a path-only deny list would now allow it).
# Stopped because the read is judged by the inode, which is still the denied one.
# ARGS: workspace, secret
ws, secret = ARGS
os.mkdir(f"{ws}/public")
attempt("rename", lambda: os.rename(secret, f"{ws}/public/readme.txt"))
attempt("read", lambda: read_file(f"{ws}/public/readme.txt"))
