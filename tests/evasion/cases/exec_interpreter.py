# Technique: a script whose interpreter is forbidden: `#!/usr/bin/perl` executed directly
# (the kernel's binfmt_script starts perl), and a `#!` line naming a symlink to perl.
# Stopped because the image that really runs (mm->exe_file) is perl, which is not listed.
# ARGS: workspace, marker, technique (shebang | shebang-link)
ws, marker, technique = ARGS
interp = "/usr/bin/perl"
if technique == "shebang-link":
    os.symlink(interp, f"{ws}/python3")
    interp = f"{ws}/python3"
script = f"{ws}/tool"
with open(script, "w") as f:
    f.write(f"#!{interp}\nopen(my $f, '>', '{marker}'); print $f 'perl ran';\n")
os.chmod(script, 0o755)
spawn("exec", [script])
