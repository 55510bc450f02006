# Technique: tamper with the daemon's pinned state in bpffs: unlink its pinned maps and
# links (a restarted daemon could no longer adopt them), or create a directory there.
# Stopped (intended) because bpffs is outside files.write: Landlock refuses the first
# write-class access under it and the agent is killed; the refusal is recorded.
# Each technique is its own run: the kill after a refusal is asynchronous, so a second
# attempt in the same run may or may not be reached.
# ARGS: technique (unlink|mkdir), then the paths (pinned files, or the directory to create)
technique, paths = ARGS[0], ARGS[1:]
if technique == "unlink":
    # The names come from the harness: listing bpffs is itself refused (files.read).
    attempt("unlink", lambda: [os.unlink(path) for path in paths])
elif technique == "mkdir":
    attempt("mkdir", lambda: os.mkdir(paths[0]))
