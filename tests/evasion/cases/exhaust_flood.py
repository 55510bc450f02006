# Technique: flood the monitor (many threads changing directory in a loop: events the
# kernel neither holds nor de-duplicates; repeated opens are counted, not re-reported, and
# an open the daemon must judge holds the process) until its ring buffer overflows and
# events are dropped, then pivot while the flood still runs:
# read the denied file, read a file outside files.read, exec a forbidden tool, or connect
# to an out-of-scope port.
# Stopped because the kernel decides before any event is reserved (deny inode, exec
# inode, sock_addr verdict), so a full ring buffer changes nothing there; what only the
# daemon can decide (intended) must fail closed for an agent whose events were lost.
# ARGS: flood file, pivot (secret | outside | exec | connect), target
import threading
import time
flood, pivot, target = ARGS
stop = threading.Event()
count = [0]


def hammer():
    while not stop.is_set():
        for _ in range(50):
            os.chdir(os.path.dirname(flood))
        count[0] += 50


threads = [threading.Thread(target=hammer) for _ in range(8)]
for t in threads:
    t.start()
deadline = time.monotonic() + 20
while count[0] < 20000 and time.monotonic() < deadline:
    time.sleep(0.01)
say(f"flood: {count[0]} chdirs")
try:
    if pivot in ("secret", "outside"):
        attempt("pivot", lambda: read_file(target))
    elif pivot == "exec":
        spawn("pivot", ["/usr/bin/touch", target])
    else:
        def go():
            s = socket.create_connection(("127.0.0.1", int(target)))
            return s.send(b"LEAKED-BYTES")
        attempt("pivot", go)
finally:
    stop.set()
    for t in threads:
        t.join()
