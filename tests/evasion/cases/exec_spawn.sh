# Technique: a shell (allowed) running a forbidden tool by name, then by a variable
# holding its path (nothing on the command line of the shell names it).
# Stopped because the tool's own exec is judged, whoever starts it: refused by Landlock
# (the shell reports 126, "Permission denied") or killed.
# $1: marker
echo "exec: TRY"
t=/usr/bin/to; t=${t}uch
"$t" "$1"
rc=$?
if [ "$rc" -eq 0 ]; then echo "exec: DONE rc=0"; elif [ "$rc" -eq 126 ]; then echo "exec: BLOCKED errno=13"; fi
