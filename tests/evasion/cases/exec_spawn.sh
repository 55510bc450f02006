# Technique: a shell (allowed) running a forbidden tool by name, then by a variable
# holding its path (nothing on the command line of the shell names it).
# Stopped because the tool's own exec is judged, whoever starts it.
# $1: marker
echo "exec: TRY"
t=/usr/bin/to; t=${t}uch
"$t" "$1" && echo "exec: DONE rc=$?"
