# Technique: a shell (allowed) running a forbidden tool by name, then by a variable
# holding its path (nothing on the command line of the shell names it).
# Stopped because the tool's own exec is judged, whoever starts it: refused by Landlock
# (the shell reports 126, "Permission denied") or killed.
# $1: marker
echo "exec: TRY"
t=/usr/bin/to; t=${t}uch
"$t" "$1"
rc=$?
# 126: the exec was refused and the child exited first; 137: the child died of SIGKILL
# (by the monitor, after the refusal) before it could exit on its own.
if [ "$rc" -eq 0 ]; then echo "exec: DONE rc=0"
elif [ "$rc" -eq 126 ]; then echo "exec: BLOCKED errno=13"
elif [ "$rc" -eq 137 ]; then echo "exec: KILLED"
else echo "exec: FAILED rc=$rc"; fi
