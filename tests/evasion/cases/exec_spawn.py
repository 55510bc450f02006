# Technique: an allowed interpreter spawning a forbidden tool: through a PATH lookup
# (subprocess), through os.system (an allowed /bin/sh that execs it), and by replacing
# itself (os.execv: same pid, no fork).
# Stopped because every exec of a tagged process (children inherit the tag) is judged by
# the inode of the image at sched_process_exec.
# ARGS: marker, technique (subprocess | system | execv)
marker, technique = ARGS
if technique == "subprocess":
    spawn("exec", ["touch", marker])
elif technique == "system":
    say("exec: TRY")
    status = os.system(f"touch {marker}")
    # The shell reports a child killed by SIGKILL as exit status 137, and an exec the
    # kernel refused (Landlock: EACCES) as 126.
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if code == 137:
        say("exec: KILLED")
    elif code == 126:
        say("exec: BLOCKED errno=13")
    else:
        say(f"exec: DONE status={status}")
else:
    say("exec: TRY")
    os.execv("/usr/bin/touch", ["touch", marker])
