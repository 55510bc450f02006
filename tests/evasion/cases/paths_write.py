# Technique: write a marker to a file outside files.write (creating it).
# ARGS: path, content
path, content = ARGS
def write():
    with open(path, "w") as f:
        f.write(content)
        f.flush()
    return "written"
attempt("write", write)
