# Technique: names the daemon may not carry intact: a non-UTF-8 name, and a path longer than
# the 256 bytes the kernel copies (components of 200 bytes), each a hard link to the
# denied file made by the agent.
# Stopped because the kernel's decision is on the inode, never on the (cut) string (or
# already at the link, a new name for a denied file, when the daemon can read the name).
# ARGS: workspace, secret, technique (non-utf8 | long)
ws, secret, technique = ARGS
base = ws.encode()
if technique == "non-utf8":
    d = base + b"/\xff\xfe-\xc3\x28"
    os.mkdir(d)
    path = d + b"/\x80\x81.txt"
else:
    d = base
    for c in "abc":
        d += b"/" + c.encode() * 200
    os.makedirs(d)
    path = d + b"/" + b"n" * 200
def read():
    os.link(secret, path)
    return read_file(path)
attempt("read", read)
