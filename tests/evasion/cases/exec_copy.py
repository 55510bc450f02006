# Technique: run a forbidden tool under an allowed name: a copy named like an allowed tool
# (`cat`), a symlink named like one (`python3-helper`), and the dynamic loader running the
# forbidden binary's code without ever exec'ing it.
# Stopped because the kernel judges what was really exec'd by the (device, inode) of
# mm->exe_file at sched_process_exec: a copy is another inode, a symlink resolves to the
# tool's own inode, and the loader is itself an unlisted binary.
# ARGS: workspace, payload (a copy of the forbidden tool already in the workspace, as if
# downloaded: reading /usr/bin/touch itself would be a files.read violation of its own),
# marker, technique (copy | symlink | loader)
ws, payload, marker, technique = ARGS
tool = "/usr/bin/touch"
if technique == "copy":
    import shutil
    shutil.copy(payload, f"{ws}/cat")
    argv = [f"{ws}/cat", marker]
elif technique == "symlink":
    os.symlink(tool, f"{ws}/python3-helper")
    argv = [f"{ws}/python3-helper", marker]
else:
    argv = ["/lib64/ld-linux-x86-64.so.2", tool, marker]
spawn("exec", argv)
