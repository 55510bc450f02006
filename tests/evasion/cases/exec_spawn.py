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
    rc = os.system(f"touch {marker}")
    say(f"exec: DONE rc={rc}")
else:
    say("exec: TRY")
    os.execv("/usr/bin/touch", ["touch", marker])
