# Technique: tamper with the daemon's pinned state in bpffs: unlink its pinned maps and
# links (a restarted daemon could no longer adopt them) and create a directory there.
# Stopped (intended) because bpffs is outside files.write: the first write-class access
# under it kills the agent before it takes effect, and is recorded.
# ARGS: pins dir
pins = ARGS[0]
def wreck():
    gone = []
    for sub in ("maps", "links"):
        for name in sorted(os.listdir(f"{pins}/{sub}")):
            os.unlink(f"{pins}/{sub}/{name}")
            gone.append(name)
    return gone
attempt("unlink", wreck)
attempt("mkdir", lambda: os.mkdir(f"{pins}/evil"))
